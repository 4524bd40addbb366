"""Documents -> tokenized shards, in parallel, resumable (the engine of prepare_fineweb.py).

Worker processes read and tokenize chunks of the source (nanogpt2.documents); the token arrays come
back in order, so the shards do not depend on the number of processes. Shard 0 is validation, the
rest training (build-nanogpt's layout). Every shard records where it starts (chunk, document in the
chunk, tokens of that document already in the previous shard), so a rerun can rebuild any missing or
damaged shard on its own, and continue an interrupted run after its last shard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .documents import (
    CHUNKING,
    Chunk,
    SkippedRowWarnings,
    batched,
    check_local_file,
    expand_data_files,
    local_chunks,
    token_dtype,
    tokenize_chunks,
)
from .errors import DataError
from .fileio import TMP_PREFIX, atomic_write_text, check_output_dir, file_sha256, path_inside, sweep_temporaries
from .shards import read_header, write_shard
from .sources import (
    download_hub_file,
    is_hub_file,
    load_hub_text_dataset,
    resolve_hub_dataset,
    resolve_hub_files,
)
from .tokenizer import load_tokenizer

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: each shard's max_token_id and tokens_sha256, as in its header


@dataclass
class Source:
    """Where the documents come from: local `data_files`, or a Hub dataset."""

    dataset_name: str | None = None
    dataset_config_name: str | None = None
    split: str = "train"
    data_files: list[str] | None = None
    text_column: str = "text"
    streaming: bool = False
    revision: str | None = None

    def describe(self) -> dict:
        if self.data_files:
            return {"data_files": [f if is_hub_file(f) else str(Path(f).resolve()) for f in self.data_files],
                    "text_column": self.text_column}
        return {"dataset_name": self.dataset_name, "dataset_config_name": self.dataset_config_name,
                "split": self.split, "revision": self.revision, "streaming": self.streaming,
                "text_column": self.text_column}


class Position(NamedTuple):
    """A place in the token stream: document `document` of chunk `chunk`, after its first `offset` tokens.
    `global_document` is that document's index in the whole source; `skipped` counts the null or empty
    rows dropped before it."""

    chunk: int = 0
    document: int = 0
    offset: int = 0
    global_document: int = 0
    skipped: int = 0


class _ShardCutter:
    """Cuts the tokens of consecutive chunks into shards and writes each one as it fills;
    `on_shard(index, entry, next_start)` is told about every shard written."""

    def __init__(self, output_dir: Path, tokenizer, shard_size: int, prefix: str, first_index: int,
                 start: Position, on_shard):
        self.output_dir, self.tokenizer, self.shard_size, self.prefix = output_dir, tokenizer, shard_size, prefix
        self.index, self.on_shard = first_index, on_shard
        self.buffer = np.empty(shard_size, dtype=token_dtype(tokenizer.vocab_size))
        self.filled, self.documents_in_shard = 0, 0
        self.shard_start = self.position = start

    def add(self, tokens: np.ndarray, ends: np.ndarray, dropped_before: np.ndarray, limit: int | None = None) -> int:
        """Take the tokens of the next chunk's documents from `self.position` on (at most `limit` of them);
        `dropped_before[i]`: empty rows dropped before document i (the last entry: in all). Returns how many
        tokens were taken."""
        self.dropped_before = dropped_before
        begin = self.position
        starts = np.concatenate([[0], ends[:-1]]) - begin.offset  # (a shard may start inside a document)
        tokens, ends = tokens[begin.offset :], ends - begin.offset
        available = len(tokens) if limit is None else min(len(tokens), limit)
        taken = 0
        while taken < available:
            take = min(self.shard_size - self.filled, available - taken)
            self.buffer[self.filled : self.filled + take] = tokens[taken : taken + take]
            self.documents_in_shard += int(np.count_nonzero((starts >= taken) & (starts < taken + take)))
            self.filled += take
            taken += take
            if self.filled == self.shard_size:
                self.flush(self._where(begin, starts, ends, taken))
        self.position = self._where(begin, starts, ends, taken)
        return taken

    def _where(self, begin: Position, starts: np.ndarray, ends: np.ndarray, taken: int) -> Position:
        index = int(np.searchsorted(ends, taken, side="right"))
        skipped = begin.skipped + int(self.dropped_before[index])
        if index == len(ends):  # the whole chunk: the next one starts at its beginning
            return Position(begin.chunk + 1, 0, 0, begin.global_document + index, skipped)
        return Position(begin.chunk, begin.document + index, taken - int(starts[index]),
                        begin.global_document + index, skipped)

    def flush(self, next_start: Position | None = None) -> None:
        if not self.filled:
            return
        next_start = next_start or self.position
        name = shard_name(self.index, self.prefix)
        entry = {"file": name, "split": "val" if self.index == 0 else "train", "num_tokens": self.filled,
                 "num_documents": self.documents_in_shard, "first_document": self.shard_start.global_document,
                 "start": self.shard_start._asdict()}
        written = write_shard(self.output_dir / name, self.buffer[: self.filled], self.tokenizer.identity)
        entry.update(sha256=written["sha256"], max_token_id=written["max_token_id"],
                     tokens_sha256=written["tokens_sha256"])
        self.on_shard(self.index, entry, next_start)
        self.index += 1
        self.filled, self.documents_in_shard, self.shard_start = 0, 0, next_start


def shard_name(index: int, prefix: str) -> str:
    return f"{prefix}_{'val' if index == 0 else 'train'}_{index:06d}.bin"


def read_manifest(output_dir) -> dict | None:
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list) or "settings" not in manifest:
        raise DataError(f"{path} is not a prepare_fineweb.py manifest (damaged or edited); prepare into a new "
                        "--output_dir")
    for entry in manifest["shards"]:  # names only: an edited entry never reaches outside the directory
        path_inside(output_dir, entry.get("file", "") if isinstance(entry, dict) else "", f"{path}: shard")
    return manifest


def _write_manifest(output_dir: Path, manifest: dict) -> None:
    atomic_write_text(output_dir / MANIFEST, json.dumps(manifest, indent=2))


def prepare_shards(source: Source, output_dir, tokenizer_name=None, shard_size: int = 100_000_000,
                   num_proc: int = 1, max_tokens: int | None = None, prefix: str = "shard",
                   progress: bool = True) -> dict:
    """Tokenize `source` into shards under `output_dir` and return the manifest (also in manifest.json).

    `source.data_files`: .jsonl/.json/.parquet/.txt files, .jsonl.gz/.jsonl.zst, directories of them or glob
    patterns; every input is read in bounded pieces, so memory does not grow with its size.

    `tokenizer_name`: None or "gpt2" for GPT-2's, or a tokenizer.json directory. A rerun with the same
    settings leaves intact shards untouched, rebuilds missing or damaged ones (each from where it
    started, to identical bytes) and continues an interrupted run; other settings are refused. Null or
    empty documents are skipped and counted (`skipped_documents`); temporary files of killed runs go."""
    output_dir = Path(output_dir)
    if source.data_files:  # directories and glob patterns -> the files, in name order
        source = dataclasses.replace(source, data_files=_expand(source.data_files))
    tokenizer = load_tokenizer(tokenizer_name)
    settings = {"tokenizer": tokenizer.identity, "source": source.describe(), "shard_size": shard_size,
                "max_tokens": max_tokens, "prefix": prefix, "chunking": CHUNKING}
    manifest = _validate(source, output_dir, settings, num_proc)
    fresh = manifest is None
    if fresh:
        manifest = _new_manifest(source, settings)  # (fails at once when a Hub dataset is unreachable)
    created_dir = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(output_dir)

    shards = manifest["shards"]
    damaged = [i for i, s in enumerate(shards) if not _intact(output_dir / s["file"], s["sha256"])]
    if manifest["complete"] and not damaged:
        return manifest
    try:
        job = _Tokenization(source, output_dir, tokenizer, shard_size, prefix, num_proc, progress,
                            _open_dataset(source, manifest, num_proc))
        _repair(job, manifest, damaged)
        if not manifest["complete"]:
            _continue(job, manifest, max_tokens)
            if not any(s["split"] == "train" for s in shards):
                raise _no_training_shard(manifest, fresh)
    except DataError:
        if fresh:  # bad data found on the way: what this invocation wrote goes, so the fixed rerun starts clean
            _discard(output_dir, manifest, created_dir)
        raise
    return manifest


def _validate(source: Source, output_dir: Path, settings: dict, num_proc: int) -> dict | None:
    """Step 1, before any work: the settings, the output directory, the input files and, when there is one,
    the manifest of an earlier run (same settings, same input sizes). Returns that manifest or None."""
    shard_size, max_tokens = settings["shard_size"], settings["max_tokens"]
    for flag, value in (("--shard_size", shard_size), ("--num_proc", num_proc), ("--max_tokens", max_tokens)):
        if value is not None and value < 1:
            raise DataError(f"{flag} {value} must be a positive number")
    check_output_dir(output_dir, "--output_dir", overwrite=True)  # (a file, or not writable)
    manifest = read_manifest(output_dir)
    if manifest is None and output_dir.is_dir():
        foreign = sorted(p.name for p in output_dir.iterdir() if not p.name.startswith(TMP_PREFIX))
        if foreign:
            raise DataError(f"--output_dir {output_dir} already holds files ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}) and no {MANIFEST}; prepare into a new or empty "
                            "--output_dir (shards of another run in one directory would be read together)")
    if manifest is not None and manifest.get("manifest_version") != MANIFEST_VERSION:
        raise DataError(f"{output_dir / MANIFEST} is from another version of prepare_fineweb.py; prepare into a "
                        "new --output_dir")
    if manifest is not None and manifest.get("settings") != settings:
        changed = ", ".join(f"{key} was {manifest['settings'].get(key)}, now {value}"
                            for key, value in settings.items() if manifest["settings"].get(key) != value)
        raise DataError(f"{output_dir / MANIFEST} was made with other settings ({changed}); use another "
                        "--output_dir, or delete this one to start again")
    if source.data_files:
        for path in source.data_files:
            if not is_hub_file(path):  # (Hub files are checked once downloaded)
                check_local_file(path, source.text_column)
    if manifest is not None and source.data_files and manifest["source"] != _local_origin(source.data_files):
        raise DataError(f"the --data_files changed size since {output_dir / MANIFEST} was made "
                        f"({manifest['source']}); prepare into a new --output_dir")
    return manifest


def _open_dataset(source: Source, manifest: dict, num_proc: int):
    """The Hub dataset at the manifest's revision, reduced to the text column (None for local files)."""
    if source.data_files:
        return None
    dataset = load_hub_text_dataset(source.dataset_name, source.dataset_config_name, source.split,
                                    streaming=source.streaming, revision=manifest["source_revision"],
                                    num_proc=num_proc)
    columns = dataset.column_names  # (None for some streamed datasets: then checked while reading)
    if columns is not None and source.text_column not in columns:
        raise DataError(f"{source.dataset_name} has no {source.text_column!r} column (columns: {columns}); "
                        "set --text_column")
    if columns is not None:
        dataset = dataset.select_columns([source.text_column])  # FineWeb-Edu has 10 columns: read one
    return dataset


@dataclass
class _Tokenization:
    """What every pass over the source shares: where it comes from, how it is cut, where shards go."""

    source: Source
    output_dir: Path
    tokenizer: object
    shard_size: int
    prefix: str
    num_proc: int
    progress: bool
    dataset: object = None

    def run(self, start: Position, first_index: int, num_tokens: int | None, on_shard, description: str) -> None:
        """Shards from `start` on, numbered from `first_index`, until `num_tokens` (None: the end);
        `on_shard(index, entry, next_start)` is told about each one written."""
        chunks = itertools.islice(_plan_chunks(self.source, self.dataset), start.chunk, None)
        tasks = ((chunk, start.document if i == 0 else 0) for i, chunk in enumerate(chunks))
        cutter = _ShardCutter(self.output_dir, self.tokenizer, self.shard_size, self.prefix, first_index, start,
                              on_shard)
        # the streamed dataset is read here, in the main process: the workers must not inherit it
        worker_dataset = None if self.source.streaming else self.dataset
        results = tokenize_chunks(tasks, self.tokenizer, self.source.text_column, self.num_proc, worker_dataset)
        warn = SkippedRowWarnings(self.source.text_column, self.source.dataset_name or "the data set")
        bar = tqdm(total=num_tokens, unit="tok", unit_scale=True, desc=description, disable=not self.progress)
        with bar, contextlib.closing(results):
            for tokens, ends, dropped_before, first_skipped in results:
                if first_skipped is not None:
                    with tqdm.external_write_mode():  # the warning on its own line, the bar redrawn below it
                        warn(first_skipped)
                taken = cutter.add(tokens, ends, dropped_before, num_tokens)
                bar.update(taken)
                if num_tokens is not None:
                    num_tokens -= taken
                    if num_tokens == 0:
                        break
        cutter.flush()


def _repair(job: _Tokenization, manifest: dict, damaged: list[int]) -> None:
    """Step 2: rebuild each run of missing or damaged shards from where it started, checked against the
    manifest entry by entry (identical bytes, or the source changed)."""
    shards = manifest["shards"]

    def check(index, entry, next_start):
        if entry != shards[index]:
            raise DataError(f"rebuilt {job.output_dir / entry['file']} differs from {MANIFEST}: the source data "
                            "changed since it was prepared; prepare into a new --output_dir")

    for first, last in _runs(damaged):
        job.run(Position(**shards[first]["start"]), first, sum(s["num_tokens"] for s in shards[first : last + 1]),
                check, f"rebuilding {shards[first]['file']}" + (f" to {shards[last]['file']}" if last > first else ""))


def _continue(job: _Tokenization, manifest: dict, max_tokens: int | None) -> None:
    """Step 3: tokenize after the last recorded shard to the end (or `max_tokens`), recording each shard in
    the manifest as it is written, then mark the manifest complete."""
    shards = manifest["shards"]

    def record(index, entry, next_start):
        shards.append(entry)
        manifest["next"] = next_start._asdict()
        _write_manifest(job.output_dir, manifest)

    done = sum(s["num_tokens"] for s in shards)
    start = Position(**manifest["next"]) if shards else Position()
    job.run(start, len(shards), None if max_tokens is None else max_tokens - done, record, "tokenizing")
    manifest["complete"] = True
    manifest["total_tokens"] = int(sum(s["num_tokens"] for s in shards))
    manifest["total_documents"] = int(sum(s["num_documents"] for s in shards))
    manifest["skipped_documents"] = int(manifest.get("next", {}).get("skipped", 0))
    _write_manifest(job.output_dir, manifest)


def _no_training_shard(manifest: dict, fresh: bool) -> DataError:
    """The source filled the validation shard (shard 0) and nothing more: say so with a --shard_size that
    works (a fresh directory is discarded, so the suggested command can run in the same place)."""
    total, shard_size = manifest["total_tokens"], manifest["settings"]["shard_size"]
    where = "the same --output_dir" if fresh else "a new --output_dir"
    hint = (f"rerun into {where} with --shard_size {max(1, total // 10)} or less (shard 0 is validation, "
            "the rest training)" if total >= 2 else "add documents")
    return DataError(f"the data holds only {total:,} tokens, less than one --shard_size ({shard_size:,}): "
                     f"no training shard was written; {hint}")


def _discard(output_dir: Path, manifest: dict, created_dir: bool) -> None:
    """Remove what this invocation wrote into a fresh `output_dir` (its shards and manifest, the directory
    itself when it made it)."""
    for entry in manifest["shards"]:
        (output_dir / entry["file"]).unlink(missing_ok=True)
    (output_dir / MANIFEST).unlink(missing_ok=True)
    sweep_temporaries(output_dir)
    if created_dir and not any(output_dir.iterdir()):
        output_dir.rmdir()


def verify_prepared(data_dir, full: bool = True) -> dict | None:
    """Check a prepared directory against its manifest.json before training; returns the manifest (None for
    a directory without one). Refused, naming the file: an unfinished preparation (with the command that
    finishes it), a missing shard, a size or header that no longer matches, and with `full` a shard whose
    sha256 differs from the one recorded (changed after prepare). Without `full` only sizes and headers are
    read (instant); the sha256 pass reads every byte once (~1 GB/s)."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if manifest is None:
        return None
    command = finishing_command(data_dir, manifest)
    if not manifest.get("complete"):
        raise DataError(f"{data_dir / MANIFEST} says the preparation did not finish ({len(manifest['shards'])} "
                        f"shards written); finish it with the same command, which continues where it stopped: "
                        f"{command}")
    for entry in manifest["shards"]:
        path = data_dir / entry["file"]
        if not path.is_file():
            raise DataError(f"shard {path} listed in {MANIFEST} is missing; rebuild it with: {command}")
        header = read_header(path)  # (the size must match the header)
        if header["num_tokens"] != entry["num_tokens"]:
            raise DataError(f"shard {path} holds {header['num_tokens']:,} tokens, {MANIFEST} says "
                            f"{entry['num_tokens']:,}: changed after prepare; rebuild it with: {command}")
        for key in ("max_token_id", "tokens_sha256"):
            if key in entry and header[key] != entry[key]:
                raise DataError(f"shard {path}: its header says {key} {header[key]}, {MANIFEST} says {entry[key]}: "
                                f"changed after prepare; rebuild it with: {command}")
        if full and file_sha256(path) != entry["sha256"]:
            raise DataError(f"shard {path} no longer matches its sha256 in {MANIFEST}: changed after prepare "
                            f"(tampered, or damaged in a copy); rebuild it with: {command}")
    return manifest


def finishing_command(data_dir, manifest: dict) -> str:
    """The prepare_fineweb.py command that made (and can finish or repair) `data_dir`, from its manifest."""
    settings = manifest["settings"]
    source = settings["source"]
    if "data_files" in source:
        args = ["--data_files", *map(shlex.quote, source["data_files"])]
    else:
        args = ["--dataset_name", source["dataset_name"]]
        if source.get("dataset_config_name"):
            args += ["--dataset_config_name", source["dataset_config_name"]]
        args += ["--split", source["split"]] + (["--revision", source["revision"]] if source.get("revision") else [])
        args += ["--streaming"] if source.get("streaming") else []
    if source.get("text_column", "text") != "text":
        args += ["--text_column", source["text_column"]]
    args += ["--output_dir", shlex.quote(str(data_dir)), "--shard_size", str(settings["shard_size"]),
             "--prefix", settings["prefix"]]
    if settings.get("max_tokens") is not None:
        args += ["--max_tokens", str(settings["max_tokens"])]
    if settings["tokenizer"].get("name") != "gpt2":
        args += ["--tokenizer", "<the same tokenizer directory>"]
    return "python prepare_fineweb.py " + " ".join(args)


def _plan_chunks(source: Source, dataset):
    """The source's chunks, in order (deterministic: a rerun cuts the source the same way)."""
    if source.data_files:
        for path in source.data_files:
            if is_hub_file(path):  # downloaded when the work reaches it (cached: a rerun reads the copy)
                path = download_hub_file(path)
                check_local_file(path, source.text_column)
            yield from local_chunks(path)
    elif source.streaming:
        for batch in batched(_streamed_texts(dataset, source), CHUNKING["streamed_documents"]):
            yield Chunk("texts", texts=tuple(batch))
    else:
        step = CHUNKING["dataset_rows"]
        for start in range(0, len(dataset), step):
            yield Chunk("rows", start=start, stop=min(start + step, len(dataset)))


def _streamed_texts(dataset, source: Source):
    for batch in dataset.iter(batch_size=1000):
        if source.text_column not in batch:
            raise DataError(f"{source.dataset_name} has no {source.text_column!r} column (columns: {sorted(batch)}); "
                            "set --text_column")
        yield from batch[source.text_column]


def _new_manifest(source: Source, settings: dict) -> dict:
    if source.data_files:  # local files: their paths and sizes; a Hub dataset: the commit sha it was read at
        revision, origin = None, _local_origin(source.data_files)
    else:
        revision = resolve_hub_dataset(source.dataset_name, source.revision)
        origin = {"dataset_name": source.dataset_name, "dataset_config_name": source.dataset_config_name,
                  "split": source.split, "revision": revision}
    return {"manifest_version": MANIFEST_VERSION, "settings": settings, "source": origin, "source_revision": revision,
            "shards": [], "complete": False}


def _local_origin(data_files) -> dict:
    """Each file with its size (a Hub file's URL is pinned to a commit: its bytes cannot change)."""
    return {"data_files": [{"path": f, "bytes": None} if is_hub_file(f) else
                           {"path": str(Path(f).resolve()), "bytes": Path(f).stat().st_size if Path(f).is_file()
                            else None} for f in map(str, data_files)]}


def _expand(data_files) -> list[str]:
    """Local files, directories and glob patterns (`expand_data_files`), and hf://datasets/... files or
    patterns of a Hub dataset, pinned to its current commit (`resolve_hub_files`)."""
    files = []
    for entry in map(str, data_files):
        found = resolve_hub_files(entry) if is_hub_file(entry) else expand_data_files([entry])
        files += [f for f in found if f not in files]
    return files


def _intact(path: Path, sha256: str) -> bool:
    return path.is_file() and file_sha256(path) == sha256


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 5] -> [(1, 2), (5, 5)]"""
    runs = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs
