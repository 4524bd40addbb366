"""What every bad-input and fault case checks, run as a real process the way a user runs it:
the exit code, one `error:` line on stderr naming the flag or file (printed once per launch, no
traceback), and that nothing the user already had changed (sha256 of every file before and after)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import runpy
import socket
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_process_launch(config: str = "accelerate_configs/cpu_2proc.yaml") -> list[str]:
    """`accelerate launch` of a 2-process config on a free local port: the tests run in parallel, and two launches
    on the default port 29500 at once would meet."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--main_process_port",
            str(free_port())]


def snapshot(*roots) -> dict[str, str]:
    """sha256 of every file under each root (a root may also be a single file); missing roots are skipped."""
    digests = {}
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for file in files:
            digests[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def pretrain_main(args) -> int:
    """run_pretrain.py's main(args) in this process (no interpreter start-up: about 4 s of imports per run)."""
    spec = importlib.util.spec_from_file_location("run_pretrain", REPO / "run_pretrain.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli.main([str(a) for a in args])


def run_cli(args, cwd=REPO, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS...` (a script path or `-m module`) in a fresh process, offline, stdin closed."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def run_in_process(args, env: dict | None = None) -> subprocess.CompletedProcess:
    """What `run_cli(args)` does, in this process (no interpreter and transformers start-up per case): the
    script or `-m module` runs as __main__ with its argv, offline, stdin closed; its exit code, stdout and
    stderr (an uncaught exception's traceback included) come back as a CompletedProcess."""
    args = [str(a) for a in args]
    module = args[1] if args[0] == "-m" else None
    argv = args[2:] if module else args[1:]
    stdout, stderr = io.StringIO(), io.StringIO()
    full_env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    code = 0
    with mock.patch.dict(os.environ, full_env), mock.patch.object(sys, "argv", [module or args[0], *argv]), \
            mock.patch.object(sys, "stdin", io.StringIO()), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr), warnings.catch_warnings():
        # runpy's note that `-m nanogpt2.x` is in sys.modules already (imported by an earlier case)
        warnings.filterwarnings("ignore", "'nanogpt2.*found in sys.modules", RuntimeWarning)
        try:
            if module:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(args[0], run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if not isinstance(exit_.code, (int, type(None))):
                print(exit_.code, file=sys.stderr)
        except BaseException:  # what the interpreter would print before exiting 1
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


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
