"""Plot a run: train/val loss and HellaSwag against tokens, with the GPT-2 / GPT-3 124M reference lines
that apply to it: the FineWeb-Edu validation loss only for a run on FineWeb-Edu, HellaSwag figures of the
run's scoring style.

    python -m nanogpt2.plot runs/tiny            # writes runs/tiny/training_curves.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import OutputPathError, cli
from .fileio import atomic_file, check_output_file
from .run_dir import read_metrics, read_run_config

# Published 124M figures (build-nanogpt's reference lines; lm-evaluation-harness for the harness style).
GPT2_124M_VAL_LOSS = 3.2924  # OpenAI GPT-2 124M on build-nanogpt's FineWeb-Edu validation shard
GPT2_124M_HELLASWAG = 0.2955  # acc_norm, completion style, full validation split
GPT2_124M_HELLASWAG_HARNESS = 0.3114  # acc_norm, lm-evaluation-harness, full validation split
GPT3_124M_HELLASWAG = 0.337  # GPT-3 paper, table 3.6 / appendix H
FINEWEB_EDU = "HuggingFaceFW/fineweb-edu"
# shard file prefixes of FineWeb-Edu token sets: build-nanogpt (.npy, and prepare_fineweb.py's default), modded-nanogpt
FINEWEB_EDU_SHARD_PREFIXES = ("edufineweb_", "finewebedu_")


def training_dataset(config: dict) -> str | None:
    """The Hub dataset a run trained on (its config.json as a dict): --dataset_name, the source recorded
    in --data_dir's manifest by prepare_fineweb.py, or FineWeb-Edu for shards named as build-nanogpt and
    modded-nanogpt name theirs; None otherwise (local text, other shards)."""
    if config.get("dataset_name"):
        return config["dataset_name"]
    if not config.get("data_dir"):
        return None
    from .prepare import read_manifest
    from .sources import is_hub_file, split_hub_url

    data_dir = Path(config["data_dir"])
    manifest = read_manifest(data_dir)
    if manifest is not None:
        source = manifest["settings"].get("source", {})
        files = source.get("data_files") or []
        repos = {split_hub_url(f)[0] for f in files if is_hub_file(f)}  # hf://datasets/<repo>@<sha>/... files
        return source.get("dataset_name") or (repos.pop() if len(repos) == 1 and all(map(is_hub_file, files))
                                               else None)
    if data_dir.is_dir() and any(f.name.startswith(FINEWEB_EDU_SHARD_PREFIXES) for f in data_dir.iterdir()):
        return FINEWEB_EDU
    return None


def reference_lines(config: dict) -> dict[str, list[tuple[str, float]]]:
    """{"loss": [(label, value)], "hellaswag": [...]}: the published figures this run can be compared with."""
    loss = []
    if training_dataset(config) == FINEWEB_EDU:
        loss.append((f"OpenAI GPT-2 124M, FineWeb-Edu val ({GPT2_124M_VAL_LOSS})", GPT2_124M_VAL_LOSS))
    if config.get("hellaswag_style", "completion") == "harness":
        hellaswag = [(f"OpenAI GPT-2 124M, lm-eval harness ({GPT2_124M_HELLASWAG_HARNESS})",
                      GPT2_124M_HELLASWAG_HARNESS)]
    else:
        hellaswag = [(f"OpenAI GPT-2 124M, completion style ({GPT2_124M_HELLASWAG})", GPT2_124M_HELLASWAG),
                     (f"OpenAI GPT-3 124M, paper ({GPT3_124M_HELLASWAG})", GPT3_124M_HELLASWAG)]
    return {"loss": loss, "hellaswag": hellaswag}


SMOOTHING = 0.9  # exponential moving average of the logged train loss, drawn over the raw curve
SMOOTHING_MIN_POINTS = 20


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, bias-corrected as TensorBoard's smoothing (the first points are not
    pulled towards zero)."""
    average, out = 0.0, []
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** count))
    return out


def short_count(value: float) -> str:
    """Axis ticks for token counts: 0, 500K, 1.2M, 10B."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def example_counts(records: list[dict]) -> str:
    """" (200 examples)", or " (200 examples, the last 10,042)" after a --hellaswag_final_full run."""
    counts = [r["hellaswag_num_examples"] for r in records if "hellaswag_num_examples" in r]
    if not counts:
        return ""
    if counts[-1] != counts[0]:
        return f" ({counts[0]:,} examples, the last {counts[-1]:,})"
    return f" ({counts[0]:,} examples)"


def plot_run(run_dir, output: str | Path | None = None, reference_lines_shown: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

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
    references = reference_lines(read_run_config(run_dir)) if reference_lines_shown else {"loss": [], "hellaswag": []}
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    tokens = [r["tokens"] for r in train]
    losses = [r["train_loss"] for r in train]
    left.plot(tokens, losses, label="train loss", alpha=0.35 if len(train) >= SMOOTHING_MIN_POINTS else 0.8)
    if len(train) >= SMOOTHING_MIN_POINTS:
        left.plot(tokens, smoothed(losses), color="C0", label=f"train loss, EMA {SMOOTHING}")
    left.plot([r["tokens"] for r in evals], [r["val_loss"] for r in evals], "o-", color="C1", label="val loss")
    for (label, value), color in zip(references["loss"], "rg"):
        left.axhline(value, color=color, linestyle="--", label=label)
    left.set_ylabel("loss (nats)")
    left.set_title("Loss")
    if hellaswag:
        right.plot([r["tokens"] for r in hellaswag], [r["hellaswag_acc_norm"] for r in hellaswag], "o-",
                   label=f"this run{example_counts(hellaswag)}")
    right.axhline(0.25, color="gray", linestyle=":", label="chance (0.25)")
    if hellaswag:
        for (label, value), color in zip(references["hellaswag"], "rg"):
            right.axhline(value, color=color, linestyle="--", label=label)
    right.set_ylabel("acc_norm")
    right.set_title("HellaSwag")
    for axes in (left, right):  # legends under the axes: never over a curve or a reference line
        axes.set_xlabel("tokens")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: short_count(value)))
        axes.grid(alpha=0.3)
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False, fontsize="small")
    figure.tight_layout()
    with atomic_file(output) as tmp:  # (the temporary name keeps the extension: savefig picks the format)
        figure.savefig(tmp, dpi=120)
    plt.close(figure)
    return output


@cli
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanogpt2.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory with metrics.jsonl")
    parser.add_argument("--output", help="PNG path (default: RUN_DIR/training_curves.png)")
    parser.add_argument("--no_reference_lines", action="store_true", help="omit the GPT-2/GPT-3 124M lines")
    args = parser.parse_args(argv)
    path = plot_run(args.run_dir, args.output, reference_lines_shown=not args.no_reference_lines)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
