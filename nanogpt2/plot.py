"""Plot a run: train/val loss and HellaSwag against tokens, with GPT-2 / GPT-3 124M reference lines.

    python -m nanogpt2.plot runs/tiny            # writes runs/tiny/training_curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .fileio import OutputPathError, atomic_file, check_output_file, describe_os_error
from .sources import DataError

# build-nanogpt's reference lines: OpenAI GPT-2 124M val loss on FineWeb-Edu and HellaSwag acc_norm
# (completion style), and GPT-3 124M's HellaSwag from the GPT-3 paper (table 3.6 / appendix H).
GPT2_124M_VAL_LOSS = 3.2924
GPT2_124M_HELLASWAG = 0.2955
GPT3_124M_HELLASWAG = 0.337


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl. A last line cut short (a run killed while writing it) is
    left out; any other line that is not a JSON object is an error naming the file and line."""
    path = Path(run_dir) / "metrics.jsonl"
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


def plot_run(run_dir, output: str | Path | None = None, reference_lines: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    output = Path(output) if output else Path(run_dir) / "training_curves.png"
    check_output_file(output, "--output")
    from matplotlib.backend_bases import FigureCanvasBase

    if output.suffix.lstrip(".").lower() not in FigureCanvasBase.get_supported_filetypes():
        raise OutputPathError(f"--output {output}: unknown image type {output.suffix or '(none)'!r}; end the name "
                              "with .png, .pdf or .svg")
    train = [r for r in records if "train_loss" in r]
    evals = [r for r in records if "val_loss" in r]
    hellaswag = [r for r in evals if "hellaswag_acc_norm" in r]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    left.plot([r["tokens"] for r in train], [r["train_loss"] for r in train], label="train loss", alpha=0.7)
    left.plot([r["tokens"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val loss")
    if reference_lines:
        left.axhline(GPT2_124M_VAL_LOSS, color="r", linestyle="--", label=f"OpenAI GPT-2 124M ({GPT2_124M_VAL_LOSS})")
    left.set_xlabel("tokens")
    left.set_ylabel("loss (nats)")
    left.set_title("Loss")
    left.legend()
    if hellaswag:
        right.plot([r["tokens"] for r in hellaswag], [r["hellaswag_acc_norm"] for r in hellaswag], "o-",
                   label="this run")
    right.axhline(0.25, color="gray", linestyle=":", label="chance (0.25)")
    if reference_lines:
        right.axhline(GPT2_124M_HELLASWAG, color="r", linestyle="--", label=f"OpenAI GPT-2 124M ({GPT2_124M_HELLASWAG})")
        right.axhline(GPT3_124M_HELLASWAG, color="g", linestyle="--", label=f"OpenAI GPT-3 124M ({GPT3_124M_HELLASWAG})")
    right.set_xlabel("tokens")
    right.set_ylabel("acc_norm")
    right.set_title("HellaSwag")
    right.legend()
    figure.tight_layout()
    with atomic_file(output) as tmp:  # (the temporary name keeps the extension: savefig picks the format)
        figure.savefig(tmp, dpi=120)
    plt.close(figure)
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanogpt2.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory with metrics.jsonl")
    parser.add_argument("--output", help="PNG path (default: RUN_DIR/training_curves.png)")
    parser.add_argument("--no_reference_lines", action="store_true", help="omit the GPT-2/GPT-3 124M lines")
    args = parser.parse_args(argv)
    try:
        path = plot_run(args.run_dir, args.output, reference_lines=not args.no_reference_lines)
    except (DataError, OutputPathError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
