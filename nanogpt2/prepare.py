"""Documents -> tokenized shards, in parallel, resumable (the engine of prepare_fineweb.py).

Documents are tokenized by a process pool in their original order, so the shards do not depend on
the number of processes. Shard 0 is validation, the rest training (build-nanogpt's layout). After each
shard the manifest is rewritten atomically with where the shard starts (document index and offset);
a rerun keeps every shard whose checksum matches and re-tokenizes only from the first missing one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .data import DataError, token_dtype
from .shards import shard_sha256, write_shard
from .tokenizer import load_tokenizer

MANIFEST = "manifest.json"
_worker_tokenizer = None


@dataclass
class Source:
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    split: str = "train"
    data_files: list[str] | None = None
    text_column: str = "text"
    streaming: bool = False
    revision: str | None = None

    def describe(self) -> dict:
        return {"dataset_name": self.dataset_name, "dataset_config_name": self.dataset_config_name,
                "split": self.split, "data_files": self.data_files, "text_column": self.text_column,
                "revision": self.revision or ("local" if self.data_files else "main")}


def load_source(source: Source):
    """A `datasets` dataset of documents: local files (offline) or a Hub dataset (online only)."""
    if source.data_files:
        from .data import load_local_text_dataset

        return load_local_text_dataset(source.data_files, streaming=source.streaming)
    from .data import load_hub_text_dataset

    return load_hub_text_dataset(source.dataset_name, source.dataset_config_name, source.split,
                                 streaming=source.streaming, revision=source.revision)


def _init_worker(tokenizer_name):
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_name)


def _tokenize(texts: list[str]) -> list[np.ndarray]:
    """Each text as <|endoftext|> + its ids, all in one array (one object to send between processes),
    returned as per-document views."""
    ids = _worker_tokenizer.encode_ordinary_batch(texts)
    ends = np.cumsum([1 + len(x) for x in ids])
    starts = ends - [1 + len(x) for x in ids]
    flat = np.empty(ends[-1], dtype=token_dtype(_worker_tokenizer.vocab_size))
    flat[starts] = _worker_tokenizer.eot_token_id
    for start, document in zip(starts, ids):
        flat[start + 1 : start + 1 + len(document)] = document
    return flat, ends


def _split(result) -> list[np.ndarray]:
    flat, ends = result
    return np.split(flat, ends[:-1])


def _batches(documents, text_column: str, size: int):
    batch = []
    for row in documents:
        text = row[text_column] if isinstance(row, dict) else row
        if not isinstance(text, str):
            raise DataError(f"column {text_column!r} holds {type(text).__name__}, not text (set --text_column)")
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def shard_name(index: int, prefix: str) -> str:
    split = "val" if index == 0 else "train"
    return f"{prefix}_{split}_{index:06d}.bin"


def read_manifest(output_dir: Path) -> dict | None:
    path = output_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def _write_manifest(output_dir: Path, manifest: dict) -> None:
    tmp = output_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, output_dir / MANIFEST)


def prepare_shards(source: Source, output_dir, tokenizer_name=None, shard_size: int = 100_000_000,
                   num_proc: int = 1, max_tokens: int | None = None, prefix: str = "shard",
                   progress: bool = True, docs_per_task: int = 64) -> dict:
    """Tokenize `source` into shards under `output_dir`; returns the manifest."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_name)
    settings = {"tokenizer": tokenizer.identity, "source": source.describe(), "shard_size": shard_size,
                "max_tokens": max_tokens, "prefix": prefix}
    manifest = read_manifest(output_dir)
    if manifest is not None and manifest["settings"] != settings:
        raise DataError(f"{output_dir / MANIFEST} was made with other settings ({manifest['settings']}); use a new "
                        "--output_dir or delete the old one")
    if manifest is None:
        manifest = {"format_version": 1, "settings": settings, "shards": [], "complete": False}

    # keep the longest prefix of shards whose files are intact; restart tokenizing where it ends
    kept = []
    for shard in manifest["shards"]:
        path = output_dir / shard["file"]
        if not path.is_file() or shard_sha256(path) != shard["sha256"]:
            break
        kept.append(shard)
    later = {s["file"]: s for s in manifest["shards"][len(kept):]}
    if manifest["complete"] and len(kept) == len(manifest["shards"]):
        return manifest
    if later:  # a shard is missing or damaged: start where it started
        first_missing = manifest["shards"][len(kept)]
        start_doc, start_offset = first_missing["first_document"], first_missing["first_document_offset"]
    elif kept:  # an interrupted run: continue after its last shard
        start_doc, start_offset = manifest["next_document"], manifest["next_document_offset"]
    else:
        start_doc, start_offset = 0, 0
    manifest["shards"], manifest["complete"] = kept, False

    documents = load_source(source)
    if start_doc:
        documents = documents.skip(start_doc)
    dtype = token_dtype(tokenizer.vocab_size)
    buffer = np.empty(shard_size, dtype=dtype)
    filled, doc_index, shard_first = 0, start_doc, (start_doc, start_offset)
    total = sum(s["num_tokens"] for s in kept)
    documents_in_shard = 0
    bar = tqdm(total=max_tokens, initial=total, unit="tok", unit_scale=True, desc="tokenizing", disable=not progress)

    def flush(num_tokens, next_doc, next_offset):
        nonlocal filled, shard_first, documents_in_shard
        index = len(manifest["shards"])
        name = shard_name(index, prefix)
        path = output_dir / name
        entry = {"file": name, "split": "val" if index == 0 else "train", "num_tokens": int(num_tokens),
                 "num_documents": documents_in_shard, "first_document": int(shard_first[0]),
                 "first_document_offset": int(shard_first[1])}
        previous = later.get(name)
        if previous is not None and path.is_file() and {k: previous[k] for k in entry} == entry \
                and shard_sha256(path) == previous["sha256"]:
            entry["sha256"] = previous["sha256"]  # intact from an earlier run: never rewritten
        else:
            entry["sha256"] = write_shard(path, buffer[:num_tokens], tokenizer.identity)
        manifest["shards"].append(entry)
        manifest["next_document"], manifest["next_document_offset"] = int(next_doc), int(next_offset)
        _write_manifest(output_dir, manifest)
        filled, shard_first, documents_in_shard = 0, (next_doc, next_offset), 0

    context = get_context("spawn" if os.name == "nt" else "fork")
    pool = context.Pool(num_proc, initializer=_init_worker, initargs=(tokenizer_name,)) if num_proc > 1 else None
    if pool is None:
        _init_worker(tokenizer_name)
    try:
        batches = _batches(documents, source.text_column, docs_per_task)
        results = pool.imap(_tokenize, batches) if pool else map(_tokenize, batches)
        done = False
        for result in results:
            for tokens in _split(result):
                offset = start_offset if doc_index == start_doc else 0
                tokens = tokens[offset:]
                if offset == 0:
                    documents_in_shard += 1
                while len(tokens):
                    if max_tokens is not None and total >= max_tokens:
                        done = True
                        break
                    room = shard_size - filled
                    if max_tokens is not None:
                        room = min(room, max_tokens - total)
                    take = min(room, len(tokens))
                    buffer[filled : filled + take] = tokens[:take]
                    filled, total, offset = filled + take, total + take, offset + take
                    tokens = tokens[take:]
                    bar.update(take)
                    if filled == shard_size:
                        next_doc, next_offset = (doc_index, offset) if len(tokens) else (doc_index + 1, 0)
                        flush(shard_size, next_doc, next_offset)
                if done:
                    break
                doc_index += 1
            if done:
                break
    finally:
        if pool:
            pool.terminate()
        bar.close()
    if filled:
        flush(filled, doc_index, 0)
    manifest["complete"] = True
    manifest["total_tokens"] = int(sum(s["num_tokens"] for s in manifest["shards"]))
    _write_manifest(output_dir, manifest)
    return manifest
