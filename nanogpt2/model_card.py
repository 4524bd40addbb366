"""The README.md model card of a checkpoint: Hub metadata (huggingface_hub.ModelCardData with
`model-index` results) and text, both taken from the run's metrics.jsonl and config.json and the
checkpoint's own training_state/trainer_state.json (hardware). Built in named steps: `read_card_facts`
gathers what is known, `model_index_results`, `results_section`, `training_section` and `usage_section`
render it, `build_model_card` puts the card together. Nothing is read back from an earlier card.

Truthfulness rules: every metric says how many examples or tokens it covers; `model-index` holds a
HellaSwag result only when it covers the whole validation split (10,042 examples); no local absolute
path appears (files are named by their base names, the checkpoint by a placeholder path or its Hub id).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers.utils import CONFIG_NAME

from .configuration_nanogpt2 import gpt2_differences
from .fileio import atomic_file
from .plot import plot_run, reference_lines, training_dataset
from .run_dir import checkpoint_step, has_metrics, read_metrics, read_run_config, read_trainer_state

PLOT_FILE = "training_curves.png"
HELLASWAG_VALIDATION_EXAMPLES = 10_042
# run settings that say nothing about the model (or are Hub plumbing)
UNSHOWN_SETTINGS = ("output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_private_repo",
                    "hub_private", "hub_strategy")
# settings that hold local paths: the card shows their base names only
PATH_SETTINGS = ("data_dir", "train_file", "validation_file", "hellaswag_file", "tokenizer", "tokenizer_name",
                 "config_name", "model_name_or_path", "config_file")
CONVERSION_DOCS = "https://huggingface.co/docs/transformers/model_doc/gpt2"


@dataclasses.dataclass
class CardFacts:
    name: str
    load_id: str  # a Hub id, or a placeholder path ending in the checkpoint's directory name
    model_config: dict
    run_config: dict
    train: list[dict]  # training records of metrics.jsonl up to this checkpoint
    last_eval: dict  # the last evaluation record up to this checkpoint ({} if none)
    step: int | None
    tokens: int | None
    seconds: float  # time in optimizer steps
    hardware: str | None
    dataset: str | None
    data_label: str


def _base_names(value):
    if isinstance(value, (list, tuple)):
        return [Path(v).name for v in value]
    return Path(value).name if isinstance(value, str) else value


def read_card_facts(checkpoint_dir: Path, final_dir: Path, run_dir: Path | None, repo_id: str | None,
                    step: int | None, tokens: int | None) -> CardFacts:
    config = read_run_config(run_dir) if run_dir else {}
    metrics = read_metrics(run_dir) if run_dir and has_metrics(run_dir) else []
    if step is None:
        step = checkpoint_step(final_dir)
    metrics = [m for m in metrics if step is None or m["step"] <= step]
    train = [m for m in metrics if "train_loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    # each record's tokens since the previous one, at its measured throughput
    seconds = sum((m["tokens"] - (train[i - 1]["tokens"] if i else 0)) / m["tokens_per_sec"]
                  for i, m in enumerate(train) if m.get("tokens_per_sec"))
    hardware = (read_trainer_state(checkpoint_dir) or {}).get("hardware")
    dataset = training_dataset(config)
    files = _base_names(config.get("train_file")) or []
    data_label = dataset or ", ".join([files] if isinstance(files, str) else files) or (
        f"token shards ({Path(config['data_dir']).name}/)" if config.get("data_dir") else "training data")
    name = repo_id.split("/")[-1] if repo_id else (run_dir.name if run_dir else final_dir.name)
    return CardFacts(
        name=name, load_id=repo_id or f"path/to/{final_dir.name}",
        model_config=json.loads((checkpoint_dir / CONFIG_NAME).read_text()), run_config=config, train=train,
        last_eval=evals[-1] if evals else {}, step=step,
        tokens=tokens if tokens is not None else (train[-1]["tokens"] if train else None), seconds=seconds,
        hardware=hardware, dataset=dataset, data_label=data_label)


def _hellaswag_examples(facts: CardFacts) -> int | None:
    """How many HellaSwag examples the last evaluation scored (older runs: from --hellaswag_limit)."""
    if "hellaswag_num_examples" in facts.last_eval:
        return facts.last_eval["hellaswag_num_examples"]
    return facts.run_config.get("hellaswag_limit")


def _hellaswag_coverage(facts: CardFacts) -> str:
    count = _hellaswag_examples(facts)
    if count == HELLASWAG_VALIDATION_EXAMPLES:
        return f"full validation split, {count:,} examples"
    return f"{count:,} of the {HELLASWAG_VALIDATION_EXAMPLES:,} validation examples" if count else \
        "number of examples not recorded"


def model_index_results(facts: CardFacts) -> list[EvalResult]:
    """The Hub's `model-index`: HellaSwag only when it ran on the whole validation split; the validation
    loss on held-out tokens of the training data, with their number in its name."""
    last, style = facts.last_eval, facts.run_config.get("hellaswag_style", "completion")
    results = []
    if "hellaswag_acc_norm" in last and _hellaswag_examples(facts) == HELLASWAG_VALIDATION_EXAMPLES:
        for key, metric_type, label in (("hellaswag_acc_norm", "acc_norm", "acc_norm"),
                                        ("hellaswag_acc", "accuracy", "acc")):
            if key in last:
                results.append(EvalResult(
                    task_type="text-generation", dataset_type="Rowan/hellaswag", dataset_name="HellaSwag",
                    dataset_split="validation", metric_type=metric_type, metric_value=round(last[key], 4),
                    metric_name=f"HellaSwag {label} ({style} style, {HELLASWAG_VALIDATION_EXAMPLES:,} examples)"))
    if "val_loss" in last:
        tokens = f", {last['val_tokens']:,} tokens" if "val_tokens" in last else ""
        results.append(EvalResult(task_type="text-generation", dataset_type=facts.dataset or "text",
                                  dataset_name=f"{facts.data_label} (held-out tokens)", dataset_split="validation",
                                  metric_type="loss", metric_value=round(last["val_loss"], 4),
                                  metric_name=f"validation loss (nats{tokens})"))
    return results


def results_section(facts: CardFacts) -> str:
    last, style = facts.last_eval, facts.run_config.get("hellaswag_style", "completion")
    if not last:
        return "No evaluation was run yet."
    rows = []
    if "val_loss" in last:
        covered = f"{last['val_tokens']:,} held-out tokens" if "val_tokens" in last else "held-out tokens"
        rows.append(f"| validation loss (nats) | {last['val_loss']:.4f} | {covered} of {facts.data_label} |")
    for key, label in (("hellaswag_acc_norm", "acc_norm"), ("hellaswag_acc", "acc")):
        if key in last:
            rows.append(f"| HellaSwag {label} ({style} style) | {last[key]:.4f} | {_hellaswag_coverage(facts)} |")
    table = "| metric | value | covers |\n|---|---|---|\n" + "\n".join(rows)
    references = reference_lines(facts.run_config)
    shown = references["loss"] + (references["hellaswag"] if "hellaswag_acc_norm" in last else [])
    if shown:
        table += "\n\nPublished figures to compare with: " + "; ".join(label for label, _ in shown) + "."
    if "hellaswag_acc_norm" in last and _hellaswag_examples(facts) != HELLASWAG_VALIDATION_EXAMPLES:
        table += ("\nThe HellaSwag figures above cover part of the split only (a quick check during training); "
                  "they are not comparable with published full-split results.")
    return table


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def training_section(facts: CardFacts, info: dict) -> str:
    lines = [f"- steps: {facts.step if facts.step is not None else 'n/a'}; tokens seen: "
             f"{f'{facts.tokens:,}' if facts.tokens is not None else 'n/a'}"]
    if facts.train:
        lines.append(f"- hardware: {facts.hardware or 'not recorded'}; time in optimizer steps: "
                     f"{_duration(facts.seconds)}")
    lines += [f"- data: {facts.data_label}"] + [f"- {key}: {value}" for key, value in info.items()]
    settings = [f"| `{k}` | `{_base_names(v) if k in PATH_SETTINGS else v}` |"
                for k, v in facts.run_config.items() if v is not None and k not in UNSHOWN_SETTINGS]
    text = "\n".join(lines)
    if settings:
        text += "\n\n| setting | value |\n|---|---|\n" + "\n".join(settings)
    return text


def usage_section(facts: CardFacts) -> str:
    load_id = facts.load_id
    return f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

model = AutoModelForCausalLM.from_pretrained("{load_id}", trust_remote_code=True)  # or `import nanogpt2` first
tokenizer = AutoTokenizer.from_pretrained("{load_id}", trust_remote_code=True)  # AutoTokenizer reads config.json first
inputs = tokenizer("Hello, I'm a language model,", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=40, do_sample=True, top_p=0.9)[0]))
# or: pipeline("text-generation", model="{load_id}", trust_remote_code=True)
```

Without remote code, as a native [`gpt2` checkpoint]({CONVERSION_DOCS}) (a plain `GPT2LMHeadModel`, for
tools that only know GPT-2: vLLM, TGI, llama.cpp's converter), convert it with nanogpt2's
`nanogpt2.convert to-gpt2` (weights renamed and transposed, padded vocabulary rows dropped; logits equal):

```bash
python -m nanogpt2.convert to-gpt2 {load_id} exported-gpt2
```"""


def build_model_card(checkpoint_dir, run_dir=None, repo_id: str | None = None, step: int | None = None,
                     tokens: int | None = None, final_dir=None, **info) -> ModelCard:
    """The card of `checkpoint_dir`. Without `run_dir` (or without its metrics.jsonl) it describes the model
    only. `step`/`tokens` default to the checkpoint's name and the run's last training record;
    `final_dir`: where the checkpoint will live when the card is written into a temporary directory; any
    other keyword is listed under "Training"."""
    checkpoint_dir = Path(checkpoint_dir)
    final_dir = Path(final_dir) if final_dir is not None else checkpoint_dir
    run_dir = Path(run_dir) if run_dir else None
    facts = read_card_facts(checkpoint_dir, final_dir, run_dir, repo_id, step, tokens)
    eval_results = model_index_results(facts)
    data = ModelCardData(
        language="en", license="mit", library_name="transformers", pipeline_tag="text-generation",
        tags=["nanogpt2", "gpt2", "causal-lm", "pretraining", "text-generation"],
        datasets=[facts.dataset] if facts.dataset else None, model_name=facts.name, eval_results=eval_results or None,
    )
    plot = ""
    if facts.train or facts.last_eval:
        with atomic_file(checkpoint_dir / PLOT_FILE) as tmp:
            plot_run(run_dir, tmp)
        plot = f"\n![loss and HellaSwag against tokens]({PLOT_FILE})\n"
    model = facts.model_config
    vocab = model.get("tokenizer_vocab_size") or model["vocab_size"]
    shape = (f"{model['n_layer']} layers, {model['n_head']} heads, width {model['n_embd']}, "
             f"context {model['n_positions']} tokens, vocabulary {vocab:,} (embedding padded to "
             f"{model['vocab_size']:,})")
    usage = usage_section(facts)
    differences = gpt2_differences(model)
    if differences:  # the modern recipe's options: not GPT-2's architecture, no `gpt2` conversion
        shape += f"; not GPT-2's architecture: {', '.join(differences)}"
        usage = usage.split("\n\nWithout remote code")[0] + (
            "\n\nIt has no native `gpt2` form: GPT-2's architecture cannot express " + ", ".join(differences) + ".")
    content = f"""---
{data.to_yaml()}
---

# {facts.name}

A GPT-2 style language model pretrained from scratch with nanogpt2 (build-nanogpt's recipe on the
Hugging Face stack): {shape}.

## Results

{results_section(facts)}
{plot}
## Training

{training_section(facts, info)}

## How to use it

{usage}
"""
    return ModelCard(content)


def write_model_card(checkpoint_dir, run_dir=None, **info) -> Path:
    """Write `checkpoint_dir`/README.md (atomically) from the run in `run_dir`; see build_model_card for
    `info` (repo_id, step, tokens, final_dir, anything else to list)."""
    card = build_model_card(checkpoint_dir, run_dir, **info)
    path = Path(checkpoint_dir) / "README.md"
    with atomic_file(path) as tmp:
        card.save(tmp)
    return path


__all__ = ["build_model_card", "write_model_card"]
