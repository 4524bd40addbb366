"""The README.md model card of a checkpoint: Hub metadata (huggingface_hub.ModelCardData with
`model-index` results) and text, both taken from the run's metrics.jsonl and config.json."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .fileio import atomic_file
from .plot import GPT2_124M_HELLASWAG, GPT2_124M_VAL_LOSS, plot_run, read_metrics

PLOT_FILE = "training_curves.png"
# run settings that say nothing about the model (or are local paths / Hub plumbing)
UNSHOWN_SETTINGS = ("output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_private",
                    "hub_strategy")


def _run_facts(run_dir: Path | None) -> tuple[dict, list[dict]]:
    if run_dir is None:
        return {}, []
    config_file = run_dir / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    metrics = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    return config, metrics


def _training_dataset(config: dict) -> str | None:
    """The Hub dataset the run trained on: --dataset_name, or the source recorded in --data_dir's manifest
    by prepare_fineweb.py; None for local files."""
    if config.get("dataset_name"):
        return config["dataset_name"]
    manifest = Path(config["data_dir"]) / "manifest.json" if config.get("data_dir") else None
    if manifest is not None and manifest.is_file():
        return json.loads(manifest.read_text()).get("settings", {}).get("source", {}).get("dataset_name")
    return None


def _hardware(previous_card: Path) -> str:
    """This machine, or the hardware a card written during training recorded (when the card is rewritten
    later on another machine, e.g. by python -m nanogpt2.publish)."""
    if previous_card.is_file():
        recorded = re.search(r"^- hardware: (.+?); time in optimizer steps", previous_card.read_text(), re.M)
        if recorded:
            return recorded.group(1)
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    if torch.cuda.is_available():
        return f"{processes} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({processes} process{'es' if processes > 1 else ''})"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _eval_results(last_eval: dict, dataset: str | None, data_label: str,
                  hellaswag_style: str) -> list[EvalResult]:
    results = []
    if "hellaswag_acc_norm" in last_eval:
        results.append(EvalResult(task_type="text-generation", dataset_type="Rowan/hellaswag",
                                  dataset_name="HellaSwag", dataset_split="validation", metric_type="acc_norm",
                                  metric_value=round(last_eval["hellaswag_acc_norm"], 4),
                                  metric_name=f"HellaSwag acc_norm ({hellaswag_style} style)"))
    if "hellaswag_acc" in last_eval:
        results.append(EvalResult(task_type="text-generation", dataset_type="Rowan/hellaswag",
                                  dataset_name="HellaSwag", dataset_split="validation", metric_type="accuracy",
                                  metric_value=round(last_eval["hellaswag_acc"], 4),
                                  metric_name=f"HellaSwag acc ({hellaswag_style} style)"))
    if "val_loss" in last_eval:
        results.append(EvalResult(task_type="text-generation", dataset_type=dataset or "text",
                                  dataset_name=f"{data_label} (held-out tokens)", dataset_split="validation",
                                  metric_type="loss", metric_value=round(last_eval["val_loss"], 4),
                                  metric_name="validation loss"))
    return results


def build_model_card(checkpoint_dir, run_dir=None, repo_id: str | None = None, step: int | None = None,
                     tokens: int | None = None, hardware: str | None = None, final_dir=None, **info) -> ModelCard:
    """The card of `checkpoint_dir`. Without `run_dir` (or without its metrics.jsonl) it describes the model
    only. `step`/`tokens` default to the checkpoint's name and the run's last training record; any other
    keyword is listed under "Training"."""
    checkpoint_dir = Path(checkpoint_dir)
    # `final_dir`: where the checkpoint will live when the card is written into a temporary directory
    final_dir = Path(final_dir) if final_dir is not None else checkpoint_dir
    run_dir = Path(run_dir) if run_dir else None
    config, metrics = _run_facts(run_dir)
    model_config = json.loads((checkpoint_dir / "config.json").read_text())
    if step is None and final_dir.name.startswith("checkpoint-"):
        step = int(final_dir.name.removeprefix("checkpoint-"))
    metrics = [m for m in metrics if step is None or m["step"] <= step]
    train = [m for m in metrics if "train_loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    tokens = tokens if tokens is not None else (train[-1]["tokens"] if train else None)
    # each record's tokens since the previous one, at its measured throughput
    seconds = sum((m["tokens"] - (train[i - 1]["tokens"] if i else 0)) / m["tokens_per_sec"]
                  for i, m in enumerate(train) if m.get("tokens_per_sec"))
    dataset = _training_dataset(config)
    data_label = dataset or ", ".join(Path(f).name for f in _as_list(config.get("train_file"))) or "training data"
    name = repo_id.split("/")[-1] if repo_id else (run_dir.name if run_dir else final_dir.name)
    eval_results = _eval_results(evals[-1] if evals else {}, dataset, data_label,
                                 config.get("hellaswag_style", "completion"))
    data = ModelCardData(
        language="en", license="mit", library_name="transformers", pipeline_tag="text-generation",
        tags=["nanogpt2", "gpt2", "causal-lm", "pretraining", "text-generation"],
        datasets=[dataset] if dataset else None, model_name=name, eval_results=eval_results or None,
    )
    plot = ""
    if train or evals:
        with atomic_file(checkpoint_dir / PLOT_FILE) as tmp:
            plot_run(run_dir, tmp)
        plot = f"\n![loss and HellaSwag against tokens]({PLOT_FILE})\n"
    results = "\n".join(f"| {r.metric_name} | {r.metric_value} |" for r in eval_results)
    results = f"| metric | value |\n|---|---|\n{results}" if results else "No evaluation was run yet."
    settings = "\n".join(f"| `{k}` | `{v}` |" for k, v in config.items() if v is not None and k not in UNSHOWN_SETTINGS)
    settings = f"\n| setting | value |\n|---|---|\n{settings}\n" if settings else ""
    training = [f"- steps: {step if step is not None else 'n/a'}; tokens seen: "
                f"{f'{tokens:,}' if tokens is not None else 'n/a'}"]
    if train:
        hardware = hardware or _hardware(checkpoint_dir / "README.md")
        training.append(f"- hardware: {hardware}; time in optimizer steps: {_duration(seconds)}")
    training += [f"- data: {data_label}"] + [f"- {key}: {value}" for key, value in info.items()]
    training = "\n".join(training)
    load_id = repo_id or str(final_dir)
    vocab = model_config.get("tokenizer_vocab_size") or model_config["vocab_size"]
    shape = (f"{model_config['n_layer']} layers, {model_config['n_head']} heads, width {model_config['n_embd']}, "
             f"context {model_config['n_positions']} tokens, vocabulary {vocab:,} (embedding padded to "
             f"{model_config['vocab_size']:,})")
    content = f"""---
{data.to_yaml()}
---

# {name}

A GPT-2 style language model pretrained from scratch with nanogpt2 (build-nanogpt's recipe on the
Hugging Face stack): {shape}.

## Results

{results}

For reference, OpenAI's GPT-2 124M reaches HellaSwag acc_norm {GPT2_124M_HELLASWAG} and FineWeb-Edu validation
loss {GPT2_124M_VAL_LOSS} (build-nanogpt's measurements).
{plot}
## Training

{training}
{settings}
## How to use it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

model = AutoModelForCausalLM.from_pretrained("{load_id}", trust_remote_code=True)  # or `import nanogpt2` first
tokenizer = AutoTokenizer.from_pretrained("{load_id}")
inputs = tokenizer("Hello, I'm a language model,", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=40, do_sample=True, top_p=0.9)[0]))
# or: pipeline("text-generation", model="{load_id}", trust_remote_code=True)
```

Without remote code (a plain `GPT2LMHeadModel`, for tools that only know GPT-2), export it with nanogpt2:

```bash
python -m nanogpt2.convert to-gpt2 {load_id} exported-gpt2
```
"""
    return ModelCard(content)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def write_model_card(checkpoint_dir, run_dir=None, **info) -> Path:
    """Write `checkpoint_dir`/README.md (atomically) from the run in `run_dir`; see build_model_card for
    `info` (repo_id, step, tokens, hardware, anything else to list)."""
    card = build_model_card(checkpoint_dir, run_dir, **info)
    path = Path(checkpoint_dir) / "README.md"
    with atomic_file(path) as tmp:
        card.save(tmp)
    return path


__all__ = ["build_model_card", "write_model_card"]
