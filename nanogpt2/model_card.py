"""The README.md model card of a checkpoint, with Hub metadata (huggingface_hub.ModelCard) taken from
the run's metrics.jsonl and run_config.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .plot import plot_run, read_metrics


def _run_facts(run_dir: Path | None) -> tuple[dict, list[dict]]:
    if run_dir is None:
        return {}, []
    config_file = run_dir / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    metrics = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    return config, metrics


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return "CPU"


def build_model_card(checkpoint_dir, run_dir=None, repo_id: str | None = None, step: int | None = None,
                     tokens: int | None = None) -> ModelCard:
    checkpoint_dir = Path(checkpoint_dir)
    run_dir = Path(run_dir) if run_dir else None
    config, metrics = _run_facts(run_dir)
    model_config = json.loads((checkpoint_dir / "config.json").read_text())
    if step is None and checkpoint_dir.name.startswith("checkpoint-"):
        step = int(checkpoint_dir.name.split("-")[-1])
    metrics = [m for m in metrics if step is None or m["step"] <= step]
    train = [m for m in metrics if "train_loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    last_eval = evals[-1] if evals else {}
    tokens = tokens if tokens is not None else (train[-1]["tokens"] if train else 0)
    seconds = sum((m["tokens"] - (train[i - 1]["tokens"] if i else 0)) / m["tokens_per_sec"]
                  for i, m in enumerate(train))
    dataset = config.get("dataset_name") or ("HuggingFaceFW/fineweb-edu" if config.get("data_dir") else None)
    name = repo_id.split("/")[-1] if repo_id else checkpoint_dir.parent.name or "nanogpt2"
    eval_results = []
    if "hellaswag_acc_norm" in last_eval:
        eval_results.append(EvalResult(task_type="text-generation", dataset_type="Rowan/hellaswag",
                                       dataset_name="HellaSwag (validation)", dataset_split="validation",
                                       metric_type="acc_norm", metric_value=round(last_eval["hellaswag_acc_norm"], 4),
                                       metric_name="HellaSwag acc_norm (completion style)"))
    if "val_loss" in last_eval:
        eval_results.append(EvalResult(task_type="text-generation", dataset_type=dataset or "local",
                                       dataset_name=dataset or "held-out validation tokens", metric_type="loss",
                                       metric_value=round(last_eval["val_loss"], 4), metric_name="validation loss"))
    data = ModelCardData(
        language="en", license="mit", library_name="transformers", pipeline_tag="text-generation",
        tags=["nanogpt2", "gpt2", "causal-lm", "pretraining", "text-generation"],
        datasets=[dataset] if dataset else None, model_name=name, eval_results=eval_results or None,
    )
    plot = ""
    if run_dir is not None and evals:
        image = plot_run(run_dir, checkpoint_dir / "training_curves.png")
        plot = f"\n![training curves]({image.name})\n"
    settings = "\n".join(f"| `{k}` | `{v}` |" for k, v in config.items() if v is not None and k not in (
        "push_to_hub", "hub_model_id", "hub_private", "hub_strategy", "resume_from_checkpoint"))
    results = "\n".join(f"| {r.metric_name} | {r.metric_value} |" for r in eval_results) or "| (no evaluation yet) | |"
    load_id = repo_id or str(checkpoint_dir)
    content = f"""---
{data.to_yaml()}
---

# {name}

A GPT-2 style language model pretrained from scratch with nanogpt2
(build-nanogpt's recipe on the Hugging Face stack): {model_config['n_layer']} layers, {model_config['n_head']}
heads, width {model_config['n_embd']}, context {model_config['n_positions']}, vocabulary
{model_config.get('tokenizer_vocab_size', model_config['vocab_size']):,} (embedding padded to {model_config['vocab_size']:,}).

## Results

| metric | value |
|---|---|
{results}

Reference: OpenAI GPT-2 124M reaches HellaSwag acc_norm 0.2955 and FineWeb-Edu validation loss 3.2924.
{plot}
## Training

- steps: {step if step is not None else 'n/a'}, tokens seen: {tokens:,}
- hardware: {_hardware()}; training time: {seconds / 3600:.2f} h of optimizer steps
- data: {dataset or config.get('train_file') or 'see the settings'}

| setting | value |
|---|---|
{settings}

## How to use it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{load_id}", trust_remote_code=True)  # or `import nanogpt2` first
tokenizer = AutoTokenizer.from_pretrained("{load_id}")
out = model.generate(**tokenizer("Hello, I'm a language model,", return_tensors="pt"), max_new_tokens=40, do_sample=True)
print(tokenizer.decode(out[0]))
```

Without remote code, export a native GPT-2 checkpoint (loads with `GPT2LMHeadModel`, vLLM, TGI, llama.cpp):

```bash
python -m nanogpt2.convert to-gpt2 {load_id} exported-gpt2
```
"""
    return ModelCard(content)


def write_model_card(checkpoint_dir, run_dir=None, repo_id: str | None = None, step: int | None = None,
                     tokens: int | None = None) -> Path:
    card = build_model_card(checkpoint_dir, run_dir, repo_id, step, tokens)
    path = Path(checkpoint_dir) / "README.md"
    card.save(path)
    return path


__all__ = ["build_model_card", "write_model_card"]
