#!/usr/bin/env bash
# Everything a GPU can tell about nanogpt2, in one command; without CUDA the same phases run in CPU mode.
#
#   bash benchmarks/gpu_suite.sh OUT_DIR [PHASES]     PHASES: comma-separated of tests,step,loop,hellaswag,char
#                                                     and modern (the loop on the gpt2-124m-modern recipe)
#
# On a bare GPU machine with no internet: wheels the image lacks, and the test data, travel in the
# git-ignored .whl/ folder that benchmarks/fetch_gpu_wheels.sh fills (they are installed into
# .whl/site, which goes first on PYTHONPATH). Writes OUT_DIR/results.json after every measurement,
# OUT_DIR/results.md, and prints a short table last. See benchmarks/gpu_suite.py and docs/benchmarks.md.
set -uo pipefail
if [ $# -lt 1 ]; then
    echo "usage: bash benchmarks/gpu_suite.sh OUT_DIR [tests,step,loop,hellaswag,char,modern]" >&2
    exit 2
fi
OUT_DIR=$(mkdir -p "$1" && cd "$1" && pwd)
PHASES=${2:-tests,step,loop,hellaswag,char}
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

if [ -n "${PYTHON:-}" ]; then :
elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python
else PYTHON=python3
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    if [ ! -f .whl/site/.installed ] || [ -n "$(find .whl -maxdepth 1 -name '*.whl' -newer .whl/site/.installed)" ]; then
        rm -rf .whl/site
        if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .whl/site .whl/*.whl; then
            touch .whl/site/.installed
        else  # e.g. wheels for Python 3.12 on another Python: the suite itself needs none of them
            echo "warning: the wheels in .whl/ do not install here; going on with the installed packages" >&2
            rm -rf .whl/site
        fi
    fi
    [ -d .whl/site ] && export PYTHONPATH="$REPO/.whl/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # nanogpt2 from this checkout, installed or not
if [ -z "${NANOGPT2_SHARED_DATA:-}" ] && [ ! -d ../shared/data ] && [ -d .whl/data ]; then
    export NANOGPT2_SHARED_DATA="$REPO/.whl/data"
fi
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$REPO/output/inductor-cache}  # kept between commands
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

exec "$PYTHON" benchmarks/gpu_suite.py "$OUT_DIR" "$PHASES" ${GPU_SUITE_BUDGET:+--budget "$GPU_SUITE_BUDGET"}
