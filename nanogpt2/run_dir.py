"""A run directory (`--output_dir`): the names of what run_pretrain.py writes there, and their readers and writers.

    <output_dir>/
        config.json                 every setting of the run, resolved, and `resumes` (one record per resume)
        metrics.jsonl               one JSON object per logged step or evaluation
        checkpoint-<step>/          a loadable model (save_pretrained layout) with its model card, and
            training_state/         Accelerate's state, trainer_state.json and data_rank<r>.json: exact resume;
                                    metrics.jsonl as it was at the save; checksums.json: size and sha256 of
                                    every file of the checkpoint, checked before a resume
        .tmp-checkpoint-<step>/     a save in progress; a kill leaves it, the next start sweeps it
        .nanogpt2.lock              held (flock) by the run writing here; the OS releases it when the run dies

A kill at any moment leaves a directory that resumes exactly: checkpoints appear by one rename, config.json
is replaced whole, a metrics.jsonl cut short is restored from the checkpoint's copy, and a checkpoint damaged
after its save is found by its checksums (`latest` then resumes the newest intact one, saying so).
No other module spells these names (tests/test_architecture.py checks it).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import DataError, PreflightError, report
from .fileio import TMP_PREFIX, atomic_write_text, file_sha256, sweep_temporaries

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TRAINING_STATE = "training_state"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
RUN_FILES = (METRICS, CONFIG)
CHECKSUMS = "checksums.json"
LOCK = ".nanogpt2.lock"


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


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint-<step> folder of a run folder, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def resume_target(resume_from_checkpoint: str | None, output_dir: Path) -> Path | None:
    """The checkpoint --resume_from_checkpoint names; `latest` with no checkpoint is an error, never a fresh start.
    A checkpoint damaged after it was saved (a file cut short or changed: `checkpoint_damage`) is never
    resumed: `latest` goes back to the newest intact one and says so; a named one is refused in one line that
    names the damaged file and the previous intact checkpoint."""
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
        damaged = []
        for _, path in reversed(checkpoints):
            problem = checkpoint_damage(path)
            if problem is None:
                if damaged:
                    report("warning", f"--resume_from_checkpoint latest: {'; '.join(damaged)}; resuming from "
                                      f"{path}, the newest intact checkpoint")
                return path
            damaged.append(f"{path.name} is damaged ({problem})")
        raise PreflightError(f"--resume_from_checkpoint latest: every checkpoint of {output_dir} is damaged "
                             f"({'; '.join(damaged)}); restore one from a copy, or start over with "
                             "--overwrite_output_dir")
    path = Path(resume_from_checkpoint)
    if not trainer_state_file(path).is_file():
        raise PreflightError(f"--resume_from_checkpoint {path} is not a checkpoint with training state "
                             f"(expected {CHECKPOINT_PREFIX}<step>/{TRAINING_STATE}/{TRAINER_STATE})")
    problem = checkpoint_damage(path)
    if problem is not None:
        previous = previous_intact_checkpoint(path)
        raise PreflightError(f"--resume_from_checkpoint {path} is damaged ({problem}); "
                             + (f"resume from {previous}, the previous intact checkpoint" if previous else
                                "no earlier intact checkpoint is there: restore it from a copy"))
    return path


# -- checkpoint integrity ---------------------------------------------------------------------------
def write_checksums(checkpoint: Path) -> None:
    """training_state/checksums.json: the size and sha256 of every other file of the checkpoint (hashed in
    threads: hashlib releases the GIL), the last file written before the checkpoint's rename."""
    checkpoint = Path(checkpoint)
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    with ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
        digests = list(pool.map(file_sha256, files))
    record = {p.relative_to(checkpoint).as_posix(): {"size": p.stat().st_size, "sha256": digest}
              for p, digest in zip(files, digests)}
    (training_state_dir(checkpoint) / CHECKSUMS).write_text(json.dumps({"files": record}, indent=1))


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint, in a few words naming the file, or None when it is intact: every
    file of its checksums.json there with its size and sha256 (checkpoints saved before checksums: the
    trainer state readable and every .safetensors file whole)."""
    checkpoint = Path(checkpoint)
    checksums = training_state_dir(checkpoint) / CHECKSUMS
    if not checksums.is_file():
        return _structural_damage(checkpoint)
    try:
        files = json.loads(checksums.read_bytes())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{TRAINING_STATE}/{CHECKSUMS} is not valid JSON"
    for name, expected in files.items():  # sizes first: a cut file is found without reading anything
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size:,} bytes, {expected['size']:,} were saved: cut short"
    names = list(files)
    with ThreadPoolExecutor(max_workers=min(8, len(names) or 1)) as pool:
        digests = list(pool.map(lambda name: file_sha256(checkpoint / name), names))
    for name, digest in zip(names, digests):
        if digest != files[name]["sha256"]:
            return f"{name} changed since it was saved (sha256 differs)"
    return None


def _structural_damage(checkpoint: Path) -> str | None:
    try:
        json.loads(trainer_state_file(checkpoint).read_bytes())
    except OSError:
        return f"{TRAINING_STATE}/{TRAINER_STATE} is missing"
    except ValueError:
        return f"{TRAINING_STATE}/{TRAINER_STATE} is not valid JSON"
    for path in sorted(checkpoint.rglob("*.safetensors")):
        problem = safetensors_damage(path)
        if problem:
            return f"{path.relative_to(checkpoint).as_posix()} {problem}"
    return None


def safetensors_damage(path: Path) -> str | None:
    """A .safetensors file cut short or with a broken header, in a few words (None: whole). Reads the header only."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            if size < 8 or header_size > size - 8:
                return "is cut short (its header is incomplete)"
            header = json.loads(f.read(header_size))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        return "has a broken header"
    if 8 + header_size + end != size:
        return f"has {size:,} bytes, its header describes {8 + header_size + end:,}: cut short or extended"
    return None


def model_files_damage(directory: Path) -> str | None:
    """For loading a model directory: each .safetensors file whole, and in a run's checkpoint also as it was
    saved (its checksums); a few words naming the damaged file, or None."""
    directory = Path(directory)
    try:
        saved = json.loads((training_state_dir(directory) / CHECKSUMS).read_bytes())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        saved = {}
    for path in sorted(directory.glob("*.safetensors")):
        problem = safetensors_damage(path)
        if problem:
            return f"{path.name} {problem}"
        expected = saved.get(path.name)
        if expected and (path.stat().st_size != expected["size"] or file_sha256(path) != expected["sha256"]):
            return f"{path.name} changed since it was saved (sha256 differs)"
    return None


def previous_intact_checkpoint(checkpoint: Path) -> Path | None:
    """The newest intact checkpoint of the same run directory saved before `checkpoint`, if any."""
    checkpoint = Path(checkpoint)
    step = checkpoint_step(checkpoint)
    if step is None:
        return None
    earlier = [p for s, p in reversed(list_checkpoints(checkpoint.parent)) if s < step]
    return next((p for p in earlier if checkpoint_damage(p) is None), None)


def copy_run_metrics(run_dir: Path, checkpoint: Path) -> None:
    """metrics.jsonl as it is at a save, into the checkpoint: what a resume from it restores if the run's own
    file is later found cut short or damaged."""
    source = Path(run_dir) / METRICS
    if source.is_file():
        shutil.copyfile(source, training_state_dir(checkpoint) / METRICS)


def sweep_unfinished_saves(output_dir: Path) -> None:
    """What a kill left: the temporary directories of checkpoint saves, the temporary copies of config.json
    and metrics.jsonl, and a checkpoint that a save of the same step had moved aside (put back)."""
    output_dir = Path(output_dir)
    for unfinished in output_dir.glob(f"{TMP_PREFIX}{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(unfinished, ignore_errors=True)
    for moved in output_dir.glob(f"{TMP_PREFIX}*-old-{CHECKPOINT_PREFIX}*"):  # fileio.commit_directory's
        final = output_dir / moved.name.split("-old-", 1)[1]
        pid = moved.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) == os.getpid():
            continue
        if final.exists():
            shutil.rmtree(moved, ignore_errors=True)
        else:
            os.replace(moved, final)
    sweep_temporaries(output_dir, names=RUN_FILES)


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
    """The run's config.json ({} when there is none); a damaged one is a DataError naming it."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_bytes())
    except ValueError:
        raise DataError(f"{path} is not valid JSON (cut short or edited); restore it, or delete it to have the "
                        "next run write it again") from None
    if not isinstance(record, dict):
        raise DataError(f"{path} is not a JSON object; restore it, or delete it to have the next run write it again")
    return record


def resume_history(run_dir: Path, checkpoint: Path | None) -> list[dict]:
    """The `resumes` of config.json. A damaged config.json (a kill cannot cut it, it is replaced whole; a
    copy or a disk can) gives, with a warning, the history saved with `checkpoint` (none for a fresh run)."""
    try:
        return read_run_config(run_dir).get("resumes", [])
    except DataError as error:
        saved = (read_trainer_state(checkpoint) or {}).get("resumes", []) if checkpoint else []
        report("warning", f"{error}: it is written again" + (f", with the resume history saved in {checkpoint}"
                                                            if checkpoint else ""))
        return saved


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
    """<output_dir>/metrics.jsonl, one JSON object per line; on resume the lines after the checkpoint go.
    Lines up to the checkpoint that are missing or damaged (the file cut short, or a line broken) come back
    from the copy the checkpoint holds, with a warning."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None, checkpoint: Path | None = None):
        self.path, self.enabled = Path(run_dir) / METRICS, enabled
        if not (enabled and resume_step is not None):
            return
        try:
            kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step] if self.path.is_file() else []
            problem = None
        except DataError as error:
            kept, problem = [], str(error)
        copy = Path(checkpoint) / TRAINING_STATE if checkpoint else None
        saved = read_metrics(copy) if copy is not None and (copy / METRICS).is_file() else None
        if saved is not None and (problem or len(kept) < len(saved)):
            report("warning", f"{problem or f'{self.path} lacks records up to step {resume_step}'}: its records up "
                              f"to step {resume_step} are restored from {checkpoint}")
            kept = saved
        elif problem:
            raise DataError(problem)
        if kept or self.path.is_file():
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


# -- one run at a time ------------------------------------------------------------------------------
class OutputDirLock:
    """An exclusive `flock` on <output_dir>/.nanogpt2.lock, held while a run writes there: a second run into
    the same directory is refused at its start. The OS releases the lock when the holder dies (a kill, a
    crash), so a killed run never leaves it stuck; the file holds the holder's pid and host for the message."""

    def __init__(self, output_dir: Path):
        self.output_dir, self.path = Path(output_dir), Path(output_dir) / LOCK
        self.fd, self.created_dir = None, False

    def acquire(self) -> "OutputDirLock":
        import fcntl
        import socket

        if not self.output_dir.exists():
            self.output_dir.mkdir(parents=True)
            self.created_dir = True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                self._remove_created_dir()
                if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise PreflightError(f"--output_dir {self.output_dir} is in use by another run ({holder}); "
                                         "wait for it to end or stop it, or pass another --output_dir") from None
                raise
            try:  # the file may have been removed by the holder's release between our open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        """Unlock and remove the lock file (and the output directory, when the lock made it and it stayed empty)."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing releases the flock
        self.fd = None
        self._remove_created_dir()

    def _remove_created_dir(self) -> None:
        if self.created_dir:
            try:
                self.output_dir.rmdir()  # only when empty
            except OSError:
                pass


__all__ = ["CONFIG", "METRICS", "TRAINING_STATE", "TRAINER_STATE", "CHECKPOINT_PREFIX", "CHECKPOINT_PATTERN",
           "CHECKSUMS", "LOCK", "write_checksums", "checkpoint_damage", "safetensors_damage", "model_files_damage",
           "previous_intact_checkpoint", "copy_run_metrics",
           "resume_history", "OutputDirLock",
           "checkpoint_dir", "checkpoint_step", "training_state_dir", "trainer_state_file", "data_state_file",
           "read_trainer_state", "list_checkpoints", "latest_checkpoint", "resume_target", "sweep_unfinished_saves",
           "run_contents",
           "clear_previous_run", "read_run_config", "write_run_config", "has_metrics", "read_metrics", "MetricsLog"]
