"""HellaSwag (Zellers et al. 2019) for any causal LM, batched, with two scoring styles.

- completion (build-nanogpt's hellaswag.py): tokens of `ctx`, then of `" " + ending`; the loss over the
  ending tokens only; acc = lowest summed loss, acc_norm = lowest mean loss per token.
- harness (EleutherAI lm-evaluation-harness 0.4.13, lm_eval/tasks/hellaswag/utils.py and hellaswag.yaml):
  query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()), choices =
  preprocess(ending), continuation = " " + choice (the default target_delimiter, lm_eval/config/task.py);
  the context's trailing spaces move to the continuation, then context + continuation are tokenized
  together and split where the context's own tokens end (lm_eval/api/model.py `_encode_pair`);
  acc = highest log-likelihood, acc_norm = highest log-likelihood divided by the choice's length in
  characters (lm_eval/api/task.py `process_results`, multiple_choice `completion_len`).
  tests/test_hellaswag.py checks the rendering against lm_eval's own `process_docs` (all 10,042
  validation examples) and `_encode_pair` (every 50th).

All four endings of several examples go through one forward pass, right-padded: no attention mask is
needed because a causal model never looks at the padding after a real token. Examples are sorted by
length so that a batch holds rows of similar width. Like the harness, the last token of a row is only a
target (never an input), and rows longer than the model's window lose tokens on the left.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .configuration_nanogpt2 import GPT2_VOCAB_SIZE
from .errors import HellaSwagError
from .sources import download_hellaswag

STYLES = ("completion", "harness")
TEXT_FIELDS = ("ctx", "ctx_a", "ctx_b", "activity_label")
# Model types whose logits are exactly output_embeddings(base_model(...).last_hidden_state); for them the LM
# head runs on the ending positions only. Others (final-logit softcapping, logit scales, custom code) go
# through the model's own forward.
HEAD_ON_HIDDEN_MODEL_TYPES = {"nanogpt2", "gpt2"}


def _validate(example, where: str) -> dict:
    if not isinstance(example, dict):
        raise HellaSwagError(f"{where}: expected a JSON object, got {type(example).__name__}")
    for field in (*TEXT_FIELDS, "endings", "label"):
        if field not in example:
            raise HellaSwagError(f"{where}: missing field {field!r}")
    for field in TEXT_FIELDS:
        if not isinstance(example[field], str):
            raise HellaSwagError(f"{where}: field {field!r} must be a string")
    endings = example["endings"]
    if not isinstance(endings, list) or len(endings) != 4:
        count = len(endings) if isinstance(endings, list) else type(endings).__name__
        raise HellaSwagError(f"{where}: expected a list of 4 endings, got {count}")
    if not all(isinstance(ending, str) for ending in endings):
        raise HellaSwagError(f"{where}: every ending must be a string")
    label = example["label"]
    if isinstance(label, bool) or label not in (0, 1, 2, 3, "0", "1", "2", "3"):
        raise HellaSwagError(f"{where}: label {label!r} is not one of 0..3")
    example["label"] = int(label)
    return example


def load_hellaswag(data_file=None, split: str = "validation", limit: int | None = None) -> list[dict]:
    """Examples of a HellaSwag jsonl file (the official file, downloaded, when `data_file` is None), every
    line validated; errors name the file and line."""
    path = Path(data_file) if data_file is not None else download_hellaswag(split)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise HellaSwagError(f"HellaSwag file {path} {what}; pass an existing jsonl with --data_file")
    if limit is not None and limit < 1:
        raise HellaSwagError(f"a HellaSwag limit of {limit} evaluates nothing; use 1 or more, or no limit")
    examples = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if limit is not None and len(examples) >= limit:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise HellaSwagError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                                     f"{error.start + 1}); pass the HellaSwag jsonl file") from None
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as error:
                raise HellaSwagError(f"{path}:{number}: malformed JSON ({error.msg})") from None
            example = _validate(example, f"{path}:{number}")
            example.setdefault("ind", number - 1)
            examples.append(example)
    if not examples:
        raise HellaSwagError(f"{path} has no examples")
    return examples


def harness_preprocess(text: str) -> str:
    """lm-evaluation-harness's hellaswag `preprocess`: strip, WikiHow's ' [title]' becomes '. ', other
    bracketed tags go, double spaces become one."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def harness_query_and_choices(example: dict) -> tuple[str, list[str]]:
    query = harness_preprocess(example["activity_label"] + ": " + example["ctx_a"] + " "
                               + example["ctx_b"].capitalize())
    return query, [harness_preprocess(ending) for ending in example["endings"]]


def _encoder(tokenizer):
    if hasattr(tokenizer, "encode_ordinary"):  # nanogpt2 TextTokenizer
        return tokenizer.encode_ordinary
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def render_example(example: dict, encode, style: str = "completion") -> tuple[list[list[int]], list[int], list[int]]:
    """Per ending: the context+ending token ids, the index where the ending's tokens start, and the
    ending's length in characters (harness acc_norm)."""
    rows, starts, char_lengths = [], [], []
    if style == "completion":
        context = encode(example["ctx"])
        for ending in example["endings"]:
            rows.append(context + encode(" " + ending))
            starts.append(len(context))
            char_lengths.append(len(ending))
    elif style == "harness":
        query, choices = harness_query_and_choices(example)
        # lm_eval moves the context's trailing spaces to the continuation before tokenizing
        context = query.rstrip()
        moved = query[len(context):]
        context_length = len(encode(context))
        for choice in choices:
            rows.append(encode(context + moved + " " + choice))
            starts.append(context_length)
            char_lengths.append(len(choice))
    else:
        raise HellaSwagError(f"unknown style {style!r}; choose {', '.join(STYLES)}")
    for number, (row, start) in enumerate(zip(rows, starts)):
        if start < 1 or start >= len(row):
            problem = "an empty context" if start < 1 else f"ending {number} has no tokens of its own"
            raise HellaSwagError(f"HellaSwag example ind={example.get('ind')}: {problem}; fix or drop the example")
    return rows, starts, char_lengths


def model_max_length(model) -> int | None:
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


@torch.no_grad()
def score_examples(model, rendered: list, max_length: int, device, batch_size: int, sharded: bool = False):
    """Summed and mean ending losses (nats) of every ending of every rendered example, and how many
    examples had to lose tokens on the left to fit `max_length` inputs."""
    results = [([], []) for _ in rendered]
    truncated = 0
    order = sorted(range(len(rendered)), key=lambda i: max(len(r) for r in rendered[i][0]))
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        inputs, targets, first_targets, owners = [], [], [], []
        for index in chunk:
            example_rows, example_starts, _ = rendered[index]
            truncated += any(len(row) - 1 > max_length for row in example_rows)
            for row, start in zip(example_rows, example_starts):
                cut = max(0, len(row) - 1 - max_length)
                inputs.append(row[:-1][cut:])
                targets.append(row[1:][cut:])
                first_targets.append(max(start - 1 - cut, 0))  # target j is token j + 1 of the row
                owners.append(index)
        width = max(len(row) for row in inputs)
        ids = torch.zeros(len(inputs), width, dtype=torch.long)
        target_ids = torch.zeros(len(inputs), width, dtype=torch.long)
        mask = torch.zeros(len(inputs), width, dtype=torch.bool)
        for i, (row, row_targets, first) in enumerate(zip(inputs, targets, first_targets)):
            ids[i, : len(row)] = torch.tensor(row)
            target_ids[i, : len(row)] = torch.tensor(row_targets)
            mask[i, first : len(row)] = True
        ids, target_ids, mask = ids.to(device), target_ids.to(device), mask.to(device)
        losses = ending_losses(model, ids, mask, target_ids[mask], sharded)
        per_row = torch.zeros(len(inputs), device=device).index_add_(0, mask.nonzero()[:, 0], losses).tolist()
        counts = mask.sum(1).tolist()
        for total, count, index in zip(per_row, counts, owners):
            results[index][0].append(total)
            results[index][1].append(total / count)
    return results, truncated


def _head_chunk_rows(device) -> int:
    # CPU: 32 positions x 50304 logits (6 MB) stay in cache (measured, docs/benchmarks.md); GPU: large enough
    # to keep the device busy, small enough to bound memory (2048 x 50304 fp32 = 400 MB).
    return 32 if torch.device(device).type == "cpu" else 2048


def ending_losses(model, ids, mask, targets, sharded: bool = False) -> torch.Tensor:
    """Per-token cross-entropy (fp32) of the positions where `mask` is set, in row-major order. `sharded`:
    the model is FSDP-wrapped (the caller knows; run_pretrain passes it)."""
    from .modeling_nanogpt2 import (
        real_vocab_cross_entropy,  # imported here: only this function needs the model
    )
    unwrapped = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    base = getattr(unwrapped, "base_model", None)
    model_type = getattr(getattr(unwrapped, "config", None), "model_type", None)
    # FSDP gathers the root's weights (embeddings, head) in the root's forward only: call that under FSDP
    if model_type in HEAD_ON_HIDDEN_MODEL_TYPES and base is not None and base is not unwrapped and not sharded:
        head = unwrapped.get_output_embeddings()
        hidden = base(input_ids=ids).last_hidden_state[mask]
        # nanogpt2's padded vocabulary rows never count
        real_vocab = getattr(unwrapped.config, "tokenizer_vocab_size", None) or head.weight.shape[0]
        chunk_rows = _head_chunk_rows(ids.device)
        return torch.cat([
            real_vocab_cross_entropy(rows, head.weight, row_targets, real_vocab, reduction="none",
                                     softcap=getattr(unwrapped.config, "logit_softcap", None))
            for rows, row_targets in zip(hidden.split(chunk_rows), targets.split(chunk_rows))
        ])
    # Any other causal LM: its own forward, keeping only the last `keep` positions' logits when it can,
    # a few rows at a time so that rows x keep x vocab logits stay near 2**27 values (512 MB in fp32).
    keep = ids.shape[1] - int(mask.any(0).nonzero()[0])
    can_keep = "logits_to_keep" in inspect.signature(unwrapped.forward).parameters
    vocab = getattr(getattr(unwrapped, "config", None), "vocab_size", None) or GPT2_VOCAB_SIZE
    step = max(1, 2**27 // ((keep if can_keep else ids.shape[1]) * vocab))
    kept = []
    for row_ids, row_mask in zip(ids.split(step), mask.split(step)):
        if can_keep:
            logits = model(input_ids=row_ids, logits_to_keep=keep).logits
        else:
            logits = model(input_ids=row_ids).logits[:, -keep:]
        kept.append(logits[row_mask[:, -keep:]].float())
    return torch.nn.functional.cross_entropy(torch.cat(kept), targets, reduction="none")


def _metrics(predictions: list[dict]) -> dict:
    n = len(predictions)
    return {"acc": sum(p["pred"] == p["label"] for p in predictions) / n,
            "acc_norm": sum(p["pred_norm"] == p["label"] for p in predictions) / n, "num_examples": n}


def evaluate_hellaswag(model, tokenizer, examples: list[dict], style: str = "completion", batch_size: int = 32,
                       device=None, accelerator=None, progress: bool = True, max_length: int | None = None,
                       sharded: bool = False) -> dict:
    """Score `examples` (from `load_hellaswag`) with `model` (eval mode, no grad; restored afterwards).

    Returns acc, acc_norm, num_examples, style, num_truncated, the metrics per split_type and
    `predictions` (per example: ind, label, split_type, pred, pred_norm, sum_losses, mean_losses).
    With an `accelerate.Accelerator` of several processes, each scores every num_processes-th example and
    every process returns the same gathered result. `max_length` defaults to the model config's window.
    `sharded`: the model is FSDP-wrapped, so every forward is collective (score through its own forward)."""
    if style not in STYLES:
        raise HellaSwagError(f"unknown style {style!r}; choose {', '.join(STYLES)}")
    if not examples:
        raise HellaSwagError("no HellaSwag examples to evaluate")
    max_length = max_length or model_max_length(model)
    if not max_length:
        raise HellaSwagError("the model config names no context window (n_positions/max_position_embeddings); "
                             "pass max_length (--max_length)")
    encode = _encoder(tokenizer)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = device or (accelerator.device if accelerator else next(model.parameters()).device)
    positions = list(range(rank, len(examples), world))
    was_training = model.training
    model.eval()
    predictions, truncated = [], 0
    bar = tqdm(total=len(positions), desc=f"HellaSwag ({style})", disable=not progress or rank != 0, unit="ex")
    block_size = batch_size * 8  # render a few batches ahead so that length sorting has something to sort
    try:
        for begin in range(0, len(positions), block_size):
            block = [examples[p] for p in positions[begin : begin + block_size]]
            rendered = [render_example(example, encode, style) for example in block]
            try:
                scores, block_truncated = score_examples(model, rendered, max_length, device, batch_size, sharded)
            except RuntimeError as error:
                raise RuntimeError(f"HellaSwag: scoring the examples ind={block[0]['ind']}..{block[-1]['ind']} "
                                   f"failed: {error}") from error
            truncated += block_truncated
            for position, example, (_, _, char_lengths), (sums, means) in zip(
                    positions[begin:], block, rendered, scores):
                norm = means if style == "completion" else [s / c for s, c in zip(sums, char_lengths)]
                predictions.append({
                    "position": position, "ind": example["ind"], "label": example["label"],
                    "split_type": example.get("split_type"), "pred": min(range(4), key=sums.__getitem__),
                    "pred_norm": min(range(4), key=norm.__getitem__), "sum_losses": sums, "mean_losses": means,
                })
            bar.update(len(block))
    finally:
        bar.close()
        model.train(was_training)

    if world > 1:
        from accelerate.utils import gather_object

        predictions = [p for part in gather_object([predictions]) for p in part]
        truncated = sum(gather_object([truncated]))
        predictions.sort(key=lambda p: p["position"])
    for prediction in predictions:
        del prediction["position"]
    result = {**_metrics(predictions), "style": style, "num_truncated": truncated}
    for split_type in sorted({p["split_type"] for p in predictions if p["split_type"]}):
        result[split_type] = _metrics([p for p in predictions if p["split_type"] == split_type])
    result["predictions"] = predictions
    return result
