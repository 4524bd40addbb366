"""benchmarks/gpu_suite.sh in CPU mode (what CI can run of the GPU suite), and the imports a bare GPU
image (no datasets, evaluate or lm_eval) needs to stay clean of."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_training_and_evaluation_import_without_datasets_or_evaluate():
    code = ("import sys; import nanogpt2, nanogpt2.training, nanogpt2.hellaswag, nanogpt2.data, nanogpt2.convert; "
            "sys.path.insert(0, 'benchmarks'); import train_throughput, gpu_suite, hellaswag_throughput; "
            "print(sorted(m for m in ('datasets', 'evaluate', 'lm_eval') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_cpu_mode_writes_every_phase_with_the_gpu_keys(tmp_path):
    out = tmp_path / "suite"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    assert data["mode"] == "cpu" and data["phases_run"] == ["tests", "step", "loop", "hellaswag", "char"]
    assert {"device", "torch", "transformers", "accelerate", "cuda"} <= set(data) and not data["errors"]
    # without CUDA every check of tests/test_cuda.py is collected and skipped
    assert data["tests"]["skipped"] >= 4 and data["tests"]["passed"] == data["tests"]["failed"] == 0
    rows = {(r["phase"], r["contender"]): r for r in data["train_step"]}
    assert set(rows) >= {("step", "nanogpt2 eager"), ("step", "hf-gpt2 eager"), ("loop", "loop eager"),
                         ("loop", "hf-gpt2 eager")}
    for row in rows.values():
        assert {"contender", "batch", "tokens_per_sec", "ms_per_step", "peak_mem_gib", "mfu", "ratio_vs_hf"} <= set(row)
        assert row["tokens_per_sec"] > 0 and row["batch"] == 2
    assert rows[("loop", "hf-gpt2 eager")]["ratio_vs_hf"] == 1.0
    assert len(data["hellaswag"]) == 3 and data["char"]["steps"] == 4
    assert (out / "results.md").read_text().startswith("# nanogpt2 GPU suite")
    table = result.stdout[result.stdout.index("gpu_suite results"):]
    assert "loop eager" in table and "5 skipped" in table
    # a second command with other phases keeps the first one's rows
    again = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out), "char"], cwd=tmp_path,
                           env={**env, "GPU_SUITE_MIRROR": str(tmp_path / "mirror")}, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    merged = json.loads((out / "results.json").read_text())
    assert merged["train_step"] == data["train_step"] and merged["tests"] == data["tests"]
    assert json.loads((tmp_path / "mirror" / "results.json").read_text()) == merged
    # a spent budget skips the measurement, says so in the files, and the command fails
    cut = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out), "hellaswag"], cwd=tmp_path,
                         env={**env, "GPU_SUITE_BUDGET": "0"}, capture_output=True, text=True, timeout=300)
    assert cut.returncode == 1
    errors = json.loads((out / "results.json").read_text())["errors"]
    assert [e["phase"] for e in errors] == ["hellaswag"] and "budget" in errors[0]["message"]


def test_unknown_phase_is_one_line_error(tmp_path):
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(tmp_path), "tests,warp"],
                            env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown phase(s) warp" in result.stderr
