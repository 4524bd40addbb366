"""lm-evaluation-harness task configs shipped with nanogpt2 (`hellaswag_local`). `python -m
nanogpt2.lm_eval_tasks` prints this directory, for `lm_eval --include_path`."""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
