"""Crash-safe writes: a file or directory appears complete under its final name, or not at all.

One temporary-name convention for the whole package: `.tmp-[<unique>-]<final name>`, hidden and beside
the target, so a sweep of `.tmp-*` finds whatever a kill left behind, `publish` never uploads it, and the
final name's extension stays last (matplotlib and others pick the format from it). Also the output-path
checks made before any work, and a file's sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import DataError, OutputPathError

TMP_PREFIX = ".tmp-"


def temporary_path(path: str | os.PathLike, unique: bool = True) -> Path:
    """The temporary sibling of `path`: `.tmp-<pid>-<name>`, or `.tmp-<name>` when not `unique`."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}" if unique else f"{TMP_PREFIX}{path.name}")


@contextmanager
def atomic_file(path: str | os.PathLike, fsync: bool = False):
    """Yield a temporary path to write; on success it replaces `path` in one rename, on failure it goes."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def temporary_directory(near: str | os.PathLike, name: str):
    """A fresh `.tmp-<unique>-<name>` directory inside `near`, removed when the block ends."""
    near = Path(near)
    near.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=f"-{name}", dir=near))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_directory(directory: str | os.PathLike):
    """Yield a temporary sibling directory; on success it replaces `directory` in one rename.

    A crash or kill inside the block leaves `directory` as it was (plus, at worst, a `.tmp-*` sibling)."""
    directory = Path(directory)
    with temporary_directory(directory.parent, directory.name) as tmp:
        yield tmp
        commit_directory(tmp, directory)


def commit_directory(tmp: Path, directory: Path) -> None:
    """fsync everything under `tmp`, then put it in place of `directory` (replacing an existing one)."""
    fsync_tree(tmp)
    if directory.exists():
        old = temporary_path(directory.with_name(f"old-{directory.name}"))
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    fsync_dir(directory.parent)


def fsync_tree(root: Path) -> None:
    for path in Path(root).rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_dir(path, flag: str, overwrite: bool = False, overwrite_flag: str = "--overwrite_output_dir") -> Path:
    """Refuse, before any work, an output directory that is a file, is not writable, or already holds
    files (unless `overwrite`): nothing a user has is replaced without being asked."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path} is a file, not a directory; pass a directory path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputPathError(f"{flag} {path} already exists and is not empty; pass {overwrite_flag} to replace "
                              "its content, or choose another directory")
    _check_writable(path, flag)
    return path


def check_output_file(path, flag: str) -> Path:
    """Refuse, before any work, an output file path that is a directory or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a directory; pass a file path such as {path / 'results.json'}")
    _check_writable(path.parent, flag)
    return path


def _check_writable(path: Path, flag: str) -> None:
    existing = path
    while not existing.exists():  # the first existing ancestor is where the directories will be created
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{flag} {path}: {existing} is a file, not a directory; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: {existing} is not writable; choose a directory you can write to")


def path_inside(directory, name: str, what: str) -> Path:
    """`directory / name` for a name that came from outside (a manifest entry, a Hub file name): refused in
    one line when it is absolute or climbs out with `..`, so nothing is read, written or deleted elsewhere."""
    parts = str(name).replace("\\", "/").split("/")
    if not name or str(name).startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{what} {name!r} is not a relative path inside {directory}: refused, nanogpt2 never "
                        "writes or deletes outside the directory you name")
    return Path(directory) / name


def file_sha256(path) -> str:
    """The hex sha256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path, expected: str, what: str) -> None:
    digest = file_sha256(path)
    if digest != expected:
        raise DataError(f"{path} has sha256 {digest}, expected {expected}: the file is corrupt or not the "
                        f"official {what}; delete it to download again")


def sweep_temporaries(directory, names=None) -> list[Path]:
    """Remove the `.tmp-<pid>-...` files and directories that killed runs left in `directory` (the process
    that made one is gone); with `names`, only the temporaries of those final names. Returns what went."""
    directory, removed = Path(directory), []
    if not directory.is_dir():
        return removed
    for path in directory.glob(f"{TMP_PREFIX}*"):
        rest = path.name[len(TMP_PREFIX):]
        pid, _, final = rest.partition("-")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if names is not None and not any(final == name or final.endswith(f"-{name}") for name in names):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["check_output_dir", "check_output_file", "path_inside", "file_sha256", "verify_sha256", "sweep_temporaries",
           "TMP_PREFIX", "temporary_path", "atomic_file", "atomic_write_bytes", "atomic_write_text",
           "temporary_directory", "atomic_directory", "commit_directory", "fsync_tree", "fsync_dir"]
