#!/usr/bin/env bash
# Fill the git-ignored .whl/ folder, on a machine with package-registry access, with what a bare GPU
# machine without internet needs for benchmarks/gpu_suite.sh and the test suite beyond its image
# (torch, transformers, accelerate, tokenizers, tiktoken, safetensors, numpy, pyarrow): the wheels of
# datasets (and its dependencies dill and multiprocess), for Python 3.12 on
# manylinux x86_64, plus a copy of the test data the GPU tests read (.whl/data, from ../shared/data).
#
#   bash benchmarks/fetch_gpu_wheels.sh                                    # the default set
#   bash benchmarks/fetch_gpu_wheels.sh transformers==5.24.0 huggingface_hub==1.33.0   # and these too
#
# Then carry .whl to the GPU machine (e.g. the device tool's carry=[".whl"]); gpu_suite.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PACKAGES=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 "$@")

mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PACKAGES[@]}"

SHARED=${NANOGPT2_SHARED_DATA:-../shared/data}
if [ -d "$SHARED" ]; then
    for part in hellaswag tinyshakespeare gpt2_tokenizer hf_gpt2_fixture; do
        mkdir -p .whl/data && cp -r "$SHARED/$part" .whl/data/
    done
fi
ls .whl
du -sh .whl
