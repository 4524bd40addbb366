"""What run_pretrain.py checks before step 1, so that no problem is found only after hours of training:
the run directory (writable, not mixed with another run), the resume target and what changed since,
HellaSwag, and the shards' sha256 against their manifest. Data size, validation split, tracker and Hub
access are checked where they are built (run_setup.build_loaders, run_setup.build_accelerator,
publish.check_hub_access), also before step 1. Every failure is one message naming the flag or file."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from . import fileio
from .errors import DataError, PreflightError, report
from .run_dir import TRAINER_STATE, TRAINING_STATE, run_contents
from .setting_checks import require_finite

# Settings that, changed on resume, would silently train a different run: refused.
RESUME_MUST_MATCH = ("preset", "model_name_or_path", "config_name", "n_layer", "n_head", "n_embd", "n_positions",
                     "tokenizer_name", "per_device_train_batch_size", "block_size", "total_batch_size", "data_dir",
                     "train_file", "validation_file", "dataset_name", "dataset_config_name", "streaming", "text_column",
                     "validation_split_percentage", "seed")
# Settings that, changed on resume, only change the rest of the run: allowed, reported and recorded.
# Everything else (the optimizer, schedule, evaluation, logging, saving) is allowed too.
RESUME_IGNORED = ("resume_from_checkpoint", "overwrite_output_dir")


def check_output_dir(output_dir: Path, resuming: bool, overwrite: bool) -> None:
    """--output_dir is a directory we can write, and a fresh run does not land on top of another one."""
    # A file, under a file, not writable: fileio's checks. Not emptiness: other files may stay, another run not.
    fileio.check_output_dir(output_dir, "--output_dir", overwrite=True)
    contents = run_contents(output_dir)
    if contents and not resuming and not overwrite:
        shown = ", ".join(contents[:4]) + (", ..." if len(contents) > 4 else "")
        raise PreflightError(f"--output_dir {output_dir} already holds a run ({shown}); continue it with "
                             "--resume_from_checkpoint latest, start over with --overwrite_output_dir (deletes its "
                             "checkpoints and metrics), or pass another --output_dir")


def check_numbers(config) -> None:
    """Every float setting finite (run_config checks parsed values; this covers a RunConfig made in code), and a
    warning when the warmup outlasts the run (the learning rate would never reach its peak)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float):
            require_finite(value, f"--{field.name}")
    if config.max_steps is not None and config.warmup_steps > config.max_steps:
        report("warning", f"--warmup_steps {config.warmup_steps} is longer than the run (--max_steps "
                          f"{config.max_steps}): the learning rate never reaches --learning_rate "
                          f"{config.learning_rate:g}; pass --warmup_steps {config.max_steps} or less")


def compare_resumed_settings(saved: dict, current: dict, checkpoint: Path):
    """What changed between the settings a checkpoint was written with and this run's ({key: {was, now}});
    a change of a RESUME_MUST_MATCH setting, which would silently make another run, raises instead."""
    refused, changed = [], {}
    for key, value in current.items():
        if key in RESUME_IGNORED or key not in saved or saved[key] == value:
            continue
        if key in RESUME_MUST_MATCH:
            refused.append(f"--{key} was {saved[key]!r}, now {value!r}")
        else:
            changed[key] = {"was": saved[key], "now": value}
    if refused:
        raise PreflightError(f"--resume_from_checkpoint {checkpoint}: " + "; ".join(refused) + ". Resume with the "
                             f"checkpoint's settings (run_config in its {TRAINING_STATE}/{TRAINER_STATE}), or start "
                             "a new run in another --output_dir")
    return changed


def check_hellaswag(hellaswag_file: str | None, limit: int | None) -> list[dict]:
    """The HellaSwag examples the run will evaluate on, loaded (and every line parsed) now."""
    from .hellaswag import load_hellaswag

    if hellaswag_file is not None and not Path(hellaswag_file).is_file():
        raise PreflightError(f"--hellaswag_file {hellaswag_file} does not exist; pass an existing "
                             "hellaswag_val.jsonl, or --skip_hellaswag")
    try:
        return load_hellaswag(hellaswag_file, limit=limit)
    except DataError as error:
        message = str(error)
        if hellaswag_file is None:  # the download failed: the fix is run_pretrain.py's flag
            raise PreflightError(f"HellaSwag could not be downloaded ({message.split(';')[0]}); offline? pass a local "
                                 "copy with --hellaswag_file hellaswag_val.jsonl, or --skip_hellaswag") from None
        raise PreflightError(f"--hellaswag_file: {message}") from None


class BackgroundCheck:
    """A check run in a thread (e.g. hashing 20 GB of shards) while training starts; `error()` is the
    exception it raised, once it has finished, else None; `wait()` blocks until it has."""

    def __init__(self, check, *args):
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(check, *args), daemon=True,
                                        name="nanogpt2-preflight")
        self._thread.start()

    def _run(self, check, *args) -> None:
        try:
            check(*args)
        except BaseException as error:  # reported to the loop, which stops all ranks
            self._error = error

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None):
        self._thread.join(timeout)
        return self.error()

    def error(self):
        return self._error if self.done() else None


__all__ = ["check_output_dir", "check_numbers", "compare_resumed_settings", "check_hellaswag", "BackgroundCheck"]
