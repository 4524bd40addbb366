"""The package's errors, and the one way an entry point turns them into a user's message.

Every error nanogpt2 raises for a user derives from `NanoGPT2Error`: its message is one line naming the
flag or file and the fix, and it carries the exit code its command returns. `ValueError` / `RuntimeError`
stay second bases, so callers that catch those (and transformers' own code around the model) keep working.
`cli` runs a command's `main`: such an error or an `OSError` becomes one `error:` line (printed by the
first process only under `accelerate launch`) and the error's exit code. Exit codes: 0 done, 1 an error
reported this way, 2 a command line argparse refused, 128 + N a run stopped by signal N after saving.
"""

from __future__ import annotations

import errno
import functools
import os
import sys


class NanoGPT2Error(Exception):
    """An error meant for the user: one line that names the flag or file and the fix."""

    exit_code = 1
    label = "error"  # the word before the message on stderr


class SettingsError(NanoGPT2Error, ValueError):
    """A setting (flag or config-file value) that is invalid or contradicts another."""


class DataError(NanoGPT2Error, ValueError):
    """Bad or missing input data; the message names the file and what to do."""


class HellaSwagError(DataError):
    """A HellaSwag file, model or setting that cannot be evaluated."""


class OutputPathError(NanoGPT2Error, ValueError):
    """An output path that cannot or must not be written; the message names the flag and the fix."""


class PreflightError(NanoGPT2Error, ValueError):
    """A problem found before training; the message names the flag or file and the fix."""


class ConversionError(NanoGPT2Error, ValueError):
    """A checkpoint that cannot be converted or loaded."""


class PublishError(NanoGPT2Error, ValueError):
    """Pushing cannot work or did not work; the message is one line that says what to do."""


class TrainingError(NanoGPT2Error, RuntimeError):
    """An error of a running pretraining run (raised by the loop and by its checkpoints)."""


class DivergenceError(TrainingError):
    """A non-finite loss or weights: the weights of this step are not saved."""


class TrainingInterrupted(TrainingError):
    """SIGTERM or Ctrl-C: a checkpoint was saved at the step boundary; the exit code is 128 + the signal."""

    label = "stopped"

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def first_line(error: BaseException) -> str:
    """An exception as one line for a user message: its first non-empty line, else its type's name."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def describe_os_error(error: OSError, where: str | os.PathLike | None = None) -> str:
    """A filesystem error as one line for the user: which file (`where` when the error names none), what
    happened, what to do."""
    where = error.filename or where or "the output"
    if error.errno == errno.ENOSPC:
        return (f"no space left on the device while writing {where}; free some space and rerun "
                "(files that existed before were kept)")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied writing {where}; choose a path you can write to"
    return f"{where}: {error.strerror or error}"


def report(label: str, message: str) -> None:
    """`label: message` on stderr, once per launch: under `accelerate launch` / torchrun only rank 0 prints."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{label}: {message}", file=sys.stderr, flush=True)


def cli(main):
    """Decorate an entry point's `main(argv=None) -> int`: a `NanoGPT2Error` or `OSError` it raises becomes
    one `error:` line and the error's exit code, instead of a traceback."""

    @functools.wraps(main)
    def run(argv=None) -> int:
        try:
            return main(argv)
        except NanoGPT2Error as error:
            report(error.label, str(error))
            return error.exit_code
        except OSError as error:
            report("error", describe_os_error(error))
            return 1
        except KeyboardInterrupt:  # Ctrl-C outside a training loop (which reports its own)
            report("stopped", "interrupted (Ctrl-C)")
            return 128 + 2

    return run


__all__ = ["NanoGPT2Error", "SettingsError", "DataError", "HellaSwagError", "OutputPathError", "PreflightError",
           "ConversionError", "PublishError", "TrainingError", "DivergenceError", "TrainingInterrupted",
           "first_line", "describe_os_error", "report", "cli"]
