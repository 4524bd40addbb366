"""HellaSwag (Zellers et al. 2019) for any causal LM, batched, with two scoring styles.

- completion (build-nanogpt's hellaswag.py): tokens of `ctx`, then of `" " + ending`; the loss over the
  ending tokens only; acc = lowest summed loss, acc_norm = lowest mean loss per token.
- harness (EleutherAI lm-evaluation-harness, lm_eval/tasks/hellaswag/utils.py and hellaswag.yaml):
  query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()), choices =
  preprocess(ending), continuation = " " + choice; context and continuation are tokenized together and
  split where the context's own tokens end (lm_eval/api/model.py `_encode_pair`); acc = highest
  log-likelihood, acc_norm = highest log-likelihood divided by the choice's length in characters.

All four endings of several examples go through one forward pass (right-padded; no attention mask is
needed because a causal model never looks at the padding after a real token), examples sorted by length.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

HELLASWAG_URLS = {
    "validation": "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    "train": "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_train.jsonl",
}
HELLASWAG_SHA256 = {"validation": "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"}
STYLES = ("completion", "harness")


class HellaSwagError(ValueError):
    """Bad HellaSwag input; the message names the file (and line) and what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("NANOGPT2_CACHE", Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
                               / "nanogpt2"))


def download_hellaswag(split: str = "validation") -> Path:
    """The official rowanz/hellaswag file, downloaded once into the cache and checked by sha256."""
    if split not in HELLASWAG_URLS:
        raise HellaSwagError(f"unknown HellaSwag split {split!r}; choose {', '.join(HELLASWAG_URLS)}")
    path = cache_dir() / Path(HELLASWAG_URLS[split]).name
    if not path.is_file():
        import urllib.request

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        try:
            with urllib.request.urlopen(HELLASWAG_URLS[split], timeout=30) as response, open(tmp, "wb") as f:
                f.write(response.read())
        except OSError as error:
            raise HellaSwagError(f"could not download HellaSwag ({error}); offline? pass a local copy with "
                                 "--data_file hellaswag_val.jsonl") from None
        os.replace(tmp, path)
    expected = HELLASWAG_SHA256.get(split)
    if expected:
        verify_sha256(path, expected)
    return path


def verify_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != expected:
        raise HellaSwagError(f"{path} has sha256 {digest}, expected {expected}: the file is corrupt or not the "
                             "official HellaSwag; delete it to download again")


def load_hellaswag(data_file=None, split: str = "validation", limit: int | None = None) -> list[dict]:
    """Examples of a HellaSwag jsonl file (downloaded when `data_file` is None), each line validated."""
    path = Path(data_file) if data_file is not None else download_hellaswag(split)
    if not path.is_file():
        raise HellaSwagError(f"HellaSwag file {path} does not exist")
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as error:
                raise HellaSwagError(f"{path}:{number}: malformed JSON ({error.msg})") from None
            for field in ("ctx", "ctx_a", "ctx_b", "activity_label", "endings", "label"):
                if field not in example:
                    raise HellaSwagError(f"{path}:{number}: missing field {field!r}")
            if not isinstance(example["endings"], list) or len(example["endings"]) != 4:
                raise HellaSwagError(f"{path}:{number}: expected 4 endings, got {len(example['endings'])}")
            if example["label"] not in (0, 1, 2, 3, "0", "1", "2", "3"):
                raise HellaSwagError(f"{path}:{number}: label {example['label']!r} is not one of 0..3")
            example["label"] = int(example["label"])
            example.setdefault("ind", number - 1)
            examples.append(example)
            if limit is not None and len(examples) >= limit:
                break
    if not examples:
        raise HellaSwagError(f"{path} has no examples")
    return examples


def harness_preprocess(text: str) -> str:
    """lm-evaluation-harness's hellaswag `preprocess`: WikiHow's ' [title]' becomes '. ', other bracketed
    tags go, double spaces become one."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _encoder(tokenizer):
    if hasattr(tokenizer, "encode_ordinary"):
        return tokenizer.encode_ordinary
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def render_example(example: dict, encode, style: str = "completion") -> tuple[list[list[int]], list[int], list[int]]:
    """Per ending: context+ending token ids, where the ending starts, and the ending's length in characters
    (used by harness acc_norm)."""
    rows, starts, char_lengths = [], [], []
    if style == "completion":
        context = encode(example["ctx"])
        for ending in example["endings"]:
            ending_ids = encode(" " + ending)
            rows.append(context + ending_ids)
            starts.append(len(context))
            char_lengths.append(len(ending))
    elif style == "harness":
        query = harness_preprocess(example["activity_label"] + ": " + example["ctx_a"] + " "
                                   + example["ctx_b"].capitalize())
        for choice in (harness_preprocess(e) for e in example["endings"]):
            context, continuation = query, " " + choice
            trailing = len(context) - len(context.rstrip())  # lm_eval moves trailing spaces to the continuation
            if trailing:
                context, continuation = context[:-trailing], context[-trailing:] + continuation
            whole = encode(context + continuation)
            context_len = len(encode(context))
            rows.append(whole)
            starts.append(context_len)
            char_lengths.append(len(choice))
    else:
        raise HellaSwagError(f"unknown style {style!r}; choose {', '.join(STYLES)}")
    return rows, starts, char_lengths


@torch.no_grad()
def score_examples(model, rendered: list, max_length: int, device, batch_size: int):
    """Summed and mean ending losses (nats) of every ending of every rendered example, plus how many
    examples had to be truncated (from the left) to fit the model's context."""
    results = [None] * len(rendered)
    truncated = 0
    order = sorted(range(len(rendered)), key=lambda i: max(len(r) for r in rendered[i][0]))
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        rows, starts, owners = [], [], []
        for index in chunk:
            example_rows, example_starts, _ = rendered[index]
            if max(len(r) for r in example_rows) > max_length:
                truncated += 1
            for row, start in zip(example_rows, example_starts):
                cut = max(0, len(row) - max_length)
                rows.append(row[cut:])
                starts.append(max(start - cut, 1))  # the first token is never predicted
                owners.append(index)
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        target_mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, (row, start) in enumerate(zip(rows, starts)):
            ids[i, : len(row)] = torch.tensor(row)
            target_mask[i, start : len(row)] = True
        ids, target_mask = ids.to(device), target_mask.to(device)
        targets, mask = ids[:, 1:], target_mask[:, 1:]
        losses = _ending_losses(model, ids, mask, targets[mask])
        per_row = torch.zeros(len(rows), device=device).index_add_(0, mask.nonzero()[:, 0], losses)
        counts = mask.sum(1)
        for i, index in enumerate(owners):
            if results[index] is None:
                results[index] = ([], [])
            results[index][0].append(per_row[i].item())
            results[index][1].append(per_row[i].item() / counts[i].item())
    return results, truncated


def _ending_losses(model, ids, mask, targets, chunk_rows: int = 32):
    """Per-token losses of the positions that predict ending tokens. The LM head (the largest matmul of a
    small model) runs on those positions only, in chunks that keep the vocabulary-wide logits in cache."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return torch.nn.functional.cross_entropy(model(input_ids=ids).logits[:, :-1][mask].float(), targets,
                                                 reduction="none")
    hidden = base(input_ids=ids).last_hidden_state[:, :-1][mask]
    real_vocab = getattr(model.config, "tokenizer_vocab_size", None)  # nanogpt2's padded rows never count
    losses = []
    for rows, row_targets in zip(hidden.split(chunk_rows), targets.split(chunk_rows)):
        logits = head(rows).float()
        if real_vocab is not None and real_vocab < logits.shape[-1]:
            logits[:, real_vocab:] = float("-inf")
        losses.append(torch.nn.functional.cross_entropy(logits, row_targets, reduction="none"))
    return torch.cat(losses)


def _metrics(predictions: list[dict]) -> dict:
    n = len(predictions)
    return {"acc": sum(p["pred"] == p["label"] for p in predictions) / n,
            "acc_norm": sum(p["pred_norm"] == p["label"] for p in predictions) / n, "num_examples": n}


def evaluate_hellaswag(model, tokenizer, examples: list[dict], style: str = "completion", batch_size: int = 32,
                       device=None, accelerator=None, progress: bool = True) -> dict:
    """Score `examples` (from `load_hellaswag`) with `model`; see the module docstring for the styles.

    With an `accelerate.Accelerator` of several processes, each scores its share and every process
    returns the same gathered result."""
    if style not in STYLES:
        raise HellaSwagError(f"unknown style {style!r}; choose {', '.join(STYLES)}")
    encode = _encoder(tokenizer)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = device or (accelerator.device if accelerator else next(model.parameters()).device)
    config = getattr(model, "config", None)
    max_length = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1024)
    mine = examples[rank::world]
    was_training = model.training
    model.eval()
    predictions, truncated = [], 0
    bar = tqdm(total=len(mine), desc=f"HellaSwag ({style})", disable=not progress or rank != 0, unit="ex")
    for begin in range(0, len(mine), batch_size * 8):  # render a bit ahead, score in batches
        block = mine[begin : begin + batch_size * 8]
        rendered = [render_example(example, encode, style) for example in block]
        scores, block_truncated = score_examples(model, rendered, max_length, device, batch_size)
        truncated += block_truncated
        for example, (rows, _, char_lengths), (sums, means) in zip(block, rendered, scores):
            norm = means if style == "completion" else [s / c for s, c in zip(sums, char_lengths)]
            predictions.append({
                "ind": example["ind"], "label": example["label"], "split_type": example.get("split_type"),
                "pred": min(range(4), key=sums.__getitem__), "pred_norm": min(range(4), key=norm.__getitem__),
                "sum_losses": sums, "mean_losses": means,
            })
        bar.update(len(block))
    bar.close()
    model.train(was_training)

    if world > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([predictions])
        predictions = [p for part in gathered for p in part]
        truncated = sum(gather_object([truncated]))
        position = {example["ind"]: i for i, example in enumerate(examples)}
        predictions.sort(key=lambda p: position[p["ind"]])
    result = {**_metrics(predictions), "style": style, "num_truncated": truncated}
    for split_type in sorted({p["split_type"] for p in predictions if p["split_type"]}):
        result[split_type] = _metrics([p for p in predictions if p["split_type"] == split_type])
    result["predictions"] = predictions
    return result
