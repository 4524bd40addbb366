"""A run directory (`--output_dir`): the names of what run_pretrain.py writes there, and their readers and writers.

    <output_dir>/
        config.json                 every setting of the run, resolved, and `resumes` (one record per resume)
        metrics.jsonl               one JSON object per logged step or evaluation
        checkpoint-<step>/          a loadable model (save_pretrained layout) with its model card, and
            training_state/         Accelerate's state, trainer_state.json and data_rank<r>.json: exact resume
        .tmp-checkpoint-<step>/     a save in progress; a kill leaves it, the next start sweeps it

No other module spells these names (tests/test_architecture.py checks it).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from .errors import DataError, PreflightError
from .fileio import TMP_PREFIX, atomic_write_text

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TRAINING_STATE = "training_state"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
RUN_FILES = (METRICS, CONFIG)


# -- checkpoints ------------------------------------------------------------------------------------
def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(path: Path) -> int | None:
    """The step of a `checkpoint-<step>` directory name, else None."""
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def training_state_dir(checkpoint: Path) -> Path:
    return Path(checkpoint) / TRAINING_STATE


def trainer_state_file(checkpoint: Path) -> Path:
    return training_state_dir(checkpoint) / TRAINER_STATE


def data_state_file(checkpoint: Path, rank: int) -> Path:
    """One file per process: its loader's position."""
    return training_state_dir(checkpoint) / f"data_rank{rank}.json"


def read_trainer_state(checkpoint: Path) -> dict | None:
    """The checkpoint's trainer_state.json (step, tokens, world size, hardware, settings), or None."""
    path = trainer_state_file(checkpoint)
    return json.loads(path.read_text()) if path.is_file() else None


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (a checkpoint directory appears only by its final rename), oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted((step, p) for p in output_dir.iterdir() if (step := checkpoint_step(p)) is not None)


def resume_target(resume_from_checkpoint: str | None, output_dir: Path) -> Path | None:
    """The checkpoint --resume_from_checkpoint names; `latest` with no checkpoint is an error, never a fresh start."""
    if not resume_from_checkpoint:
        return None
    output_dir = Path(output_dir)
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            fix = (f"start over with --overwrite_output_dir (its {METRICS} is from steps before the first save)"
                   if run_contents(output_dir) else "drop --resume_from_checkpoint to start a fresh run")
            raise PreflightError(f"--resume_from_checkpoint latest: --output_dir {output_dir} holds no "
                                 f"{CHECKPOINT_PREFIX}<step> to resume; {fix}")
        return checkpoints[-1][1]
    path = Path(resume_from_checkpoint)
    if not trainer_state_file(path).is_file():
        raise PreflightError(f"--resume_from_checkpoint {path} is not a checkpoint with training state "
                             f"(expected {CHECKPOINT_PREFIX}<step>/{TRAINING_STATE}/{TRAINER_STATE})")
    return path


def sweep_unfinished_saves(output_dir: Path) -> None:
    """The temporary directories of checkpoint saves that a kill interrupted."""
    for unfinished in Path(output_dir).glob(f"{TMP_PREFIX}{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(unfinished, ignore_errors=True)


# -- the run as a whole -----------------------------------------------------------------------------
def run_contents(output_dir: Path) -> list[str]:
    """What of a previous run `output_dir` holds: checkpoint directories and metrics.jsonl. A config.json
    alone (a run stopped before its first step) is not a run: a fresh run replaces it."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(p.name for p in output_dir.iterdir()
                  if (p.name.startswith(CHECKPOINT_PREFIX) and p.is_dir())
                  or (p.name == METRICS and p.is_file() and p.stat().st_size > 0))


def clear_previous_run(output_dir: Path) -> list[str]:
    """--overwrite_output_dir on a fresh run: the previous run's checkpoints and metrics go, so that two
    runs are never mixed; other files (notes, a tracker's logs) stay. Returns the names removed."""
    output_dir = Path(output_dir)
    removed = sorted({*run_contents(output_dir), *(name for name in RUN_FILES if (output_dir / name).is_file())})
    for name in removed:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def read_run_config(run_dir: Path) -> dict:
    """The run's config.json ({} when there is none)."""
    path = Path(run_dir) / CONFIG
    return json.loads(path.read_text()) if path.is_file() else {}


def write_run_config(run_dir: Path, record: dict) -> None:
    atomic_write_text(Path(run_dir) / CONFIG, json.dumps(record, indent=2))


def has_metrics(run_dir: Path) -> bool:
    return (Path(run_dir) / METRICS).is_file()


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl. A last line cut short (a run killed while writing it) is
    left out; any other line that is not a JSON object is an error naming the file and line."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise DataError(f"{path} does not exist: pass a run directory written by run_pretrain.py")
    data = path.read_bytes()
    lines = data.split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if number == len(lines) and not data.endswith(b"\n"):
                break  # the unfinished last line of a killed run
            raise DataError(f"{path}:{number}: not a JSON line ({getattr(error, 'msg', 'not UTF-8')}); "
                            "fix or delete that line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: not a JSON object; fix or delete that line")
        records.append(record)
    return records


class MetricsLog:
    """<output_dir>/metrics.jsonl, one JSON object per line; on resume the lines after the checkpoint go."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = Path(run_dir) / METRICS, enabled
        if enabled and resume_step is not None and self.path.is_file():
            kept = [json.dumps(r) for r in read_metrics(run_dir) if r["step"] <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


__all__ = ["CONFIG", "METRICS", "TRAINING_STATE", "TRAINER_STATE", "CHECKPOINT_PREFIX", "CHECKPOINT_PATTERN",
           "checkpoint_dir", "checkpoint_step", "training_state_dir", "trainer_state_file", "data_state_file",
           "read_trainer_state", "list_checkpoints", "resume_target", "sweep_unfinished_saves", "run_contents",
           "clear_previous_run", "read_run_config", "write_run_config", "has_metrics", "read_metrics", "MetricsLog"]
