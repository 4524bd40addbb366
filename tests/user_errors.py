"""What every bad-input and fault case checks, run as a real process the way a user runs it:
the exit code, one `error:` line on stderr naming the flag or file (printed once per launch, no
traceback), and that nothing the user already had changed (sha256 of every file before and after)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snapshot(*roots) -> dict[str, str]:
    """sha256 of every file under each root (a root may also be a single file); missing roots are skipped."""
    digests = {}
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for file in files:
            digests[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def run_cli(args, cwd=REPO, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS...` (a script path or `-m module`) in a fresh process, offline, stdin closed."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error: ...` line of a failed run; fails the test on a traceback or on the line printed twice."""
    assert result.returncode != 0, f"expected a failure, got exit 0\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line, got {len(errors)}:\n{result.stderr[-4000:]}"
    return errors[0]


def assert_user_error(result: subprocess.CompletedProcess, *names: str, before: dict | None = None,
                      roots=()) -> str:
    """One clear error naming each of `names`; with `before` (a snapshot of `roots`), nothing changed."""
    line = error_line(result)
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    if before is not None:
        assert snapshot(*roots) == before, f"pre-existing files changed by a failed run: {line}"
    return line
