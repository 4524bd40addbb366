"""Token streams for pretraining: local text files -> tokens, and the per-rank batch loaders.

TrainLoader reads (B, T+1) windows of a virtual stream made of the documents of every token array,
in an order reshuffled each epoch (shard order, then document order inside each shard), so the loss
has no period tied to the data layout. Global window g goes to rank g % world_size, so ranks read
disjoint windows; the state is (epoch, windows consumed), which makes resume exact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class DataError(ValueError):
    """Bad or missing input data; the message names the file and what to do."""


def read_documents(path: str | Path, text_column: str = "text") -> list[str]:
    """A .txt file is one document; .jsonl/.json/.parquet have one document per row in `text_column`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    if suffix in (".jsonl", ".json"):
        documents = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                if not isinstance(row, dict) or text_column not in row:
                    raise DataError(f"{path}:{number}: no {text_column!r} field (set --text_column)")
                documents.append(row[text_column])
        return documents
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_column not in table.column_names:
            raise DataError(f"{path}: no {text_column!r} column (columns: {table.column_names}; set --text_column)")
        return table.column(text_column).to_pylist()
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .txt, .jsonl, .json or .parquet")


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def tokenize_documents(documents: Sequence[str], tokenizer) -> np.ndarray:
    """One token stream: each document prefixed with the end-of-text token (GPT-2's document separator)."""
    eot = tokenizer.eot_token_id
    pieces = [[eot] + ids for ids in tokenizer.encode_ordinary_batch(list(documents))]
    total = sum(len(p) for p in pieces)
    stream = np.empty(total, dtype=token_dtype(tokenizer.vocab_size))
    position = 0
    for piece in pieces:
        stream[position : position + len(piece)] = piece
        position += len(piece)
    return stream


def tokenize_files(paths, tokenizer, text_column: str = "text") -> np.ndarray:
    """Local .txt/.jsonl/.json/.parquet files -> one token stream (see `tokenize_documents`)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    documents = [doc for path in paths for doc in read_documents(path, text_column)]
    if not documents:
        raise DataError(f"no documents in {', '.join(map(str, paths))}")
    return tokenize_documents(documents, tokenizer)


def load_local_text_dataset(data_files, streaming: bool = False):
    """Local .jsonl/.json/.parquet/.txt files as a `datasets` dataset (a .txt file is one document)."""
    import datasets

    files = [str(f) for f in ([data_files] if isinstance(data_files, (str, Path)) else data_files)]
    for file in files:
        if not Path(file).is_file():
            raise DataError(f"data file {file} does not exist")
    suffixes = {Path(f).suffix.lower() for f in files}
    builders = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
    if len(suffixes) != 1 or next(iter(suffixes)) not in builders:
        raise DataError(f"--data_files must all be one of .jsonl, .json, .parquet, .txt; got {sorted(suffixes)}")
    builder = builders[suffixes.pop()]
    kwargs = {"sample_by": "document"} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files=files, split="train", streaming=streaming, **kwargs)


OFFLINE_HINT = ("pass local files instead: prepare_fineweb.py --data_files docs.jsonl (or .parquet/.txt), "
                "run_pretrain.py --train_file docs.jsonl")


def load_hub_text_dataset(dataset_name, dataset_config_name=None, split="train", streaming=False, data_files=None,
                          revision=None):
    """The one call of `datasets.load_dataset` for Hub data; offline it fails at once with what to do."""
    if data_files:
        return load_local_text_dataset(data_files, streaming=streaming)
    if not dataset_name:
        raise DataError("no data: pass --dataset_name (Hub) or local files; " + OFFLINE_HINT)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise DataError(f"the Hub dataset {dataset_name} cannot be loaded offline (HF_HUB_OFFLINE is set); "
                        + OFFLINE_HINT)
    import datasets

    try:
        return datasets.load_dataset(dataset_name, name=dataset_config_name, split=split, streaming=streaming,
                                     revision=revision)
    except (ConnectionError, OSError) as error:
        raise DataError(f"could not reach the Hub for {dataset_name} ({type(error).__name__}); "
                        + OFFLINE_HINT) from None


def open_token_shards(data_dir, split: str, vocab_size: int | None = None, tokenizer=None) -> list[np.ndarray]:
    """The memory-mapped, validated token shards of `split` ("train" or "val") in a prepare_fineweb.py directory."""
    from .shards import open_shard

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data_dir {data_dir} does not exist; create it with prepare_fineweb.py")
    files = sorted(data_dir.glob(f"*_{split}_*.bin"))
    if not files:
        raise DataError(f"no {split} shards (*_{split}_*.bin) in {data_dir}; create them with prepare_fineweb.py")
    return [open_shard(f, vocab_size=vocab_size, tokenizer=tokenizer) for f in files]


def _document_spans(tokens: np.ndarray, eot_token_id: int) -> np.ndarray:
    """(start, length) of every document; a document starts at each end-of-text token."""
    starts = np.flatnonzero(tokens == eot_token_id)
    if len(starts) == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    lengths = np.diff(np.append(starts, len(tokens)))
    return np.stack([starts, lengths], axis=1)


def _windows_to_tensors(window: np.ndarray, batch_size: int, seq_len: int):
    window = torch.from_numpy(window.astype(np.int64))
    return window[:-1].view(batch_size, seq_len), window[1:].view(batch_size, seq_len)


class TrainLoader:
    """Endless (x, y) training batches of shape (batch_size, seq_len) for one rank."""

    def __init__(self, token_arrays: Sequence[np.ndarray], batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1, seed: int = 1337, shuffle: bool = True, eot_token_id: int = 50256):
        self.arrays = list(token_arrays)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.window_tokens = batch_size * seq_len
        self.spans = [_document_spans(a, eot_token_id) for a in self.arrays]
        self.total_tokens = sum(len(a) for a in self.arrays)
        self.windows_per_epoch = (self.total_tokens - 1) // self.window_tokens
        if self.windows_per_epoch < world_size:
            raise DataError(
                f"{self.total_tokens:,} training tokens are too few for {world_size} process(es) x "
                f"{batch_size} x {seq_len} tokens per batch; use more data or a smaller batch/sequence length"
            )
        self.epoch, self.step_in_epoch = 0, 0
        self._build_epoch()

    def _build_epoch(self) -> None:
        """The epoch's document table: (array, start, length) rows in reading order, and their offsets."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.arrays)) if self.shuffle else np.arange(len(self.arrays))
        tables = []
        for index in order:
            spans = self.spans[index]
            if self.shuffle:
                spans = spans[rng.permutation(len(spans))]
            tables.append(np.column_stack([np.full(len(spans), index), spans]))
        self.table = np.concatenate(tables)
        self.offsets = np.concatenate([[0], np.cumsum(self.table[:, 2])])

    def _read(self, begin: int, end: int) -> np.ndarray:
        """Tokens [begin, end) of this epoch's virtual stream."""
        out = np.empty(end - begin, dtype=np.int64)
        row = int(np.searchsorted(self.offsets, begin, side="right")) - 1
        written = 0
        while written < len(out):
            array_index, start, length = self.table[row]
            skip = begin + written - self.offsets[row]
            take = min(length - skip, len(out) - written)
            out[written : written + take] = self.arrays[array_index][start + skip : start + skip + take]
            written += take
            row += 1
        return out

    def next_batch(self):
        window = self.step_in_epoch * self.world_size + self.rank
        if window >= (self.windows_per_epoch // self.world_size) * self.world_size:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self._build_epoch()
            window = self.rank
        begin = window * self.window_tokens
        self.step_in_epoch += 1
        return _windows_to_tensors(self._read(begin, begin + self.window_tokens + 1), self.batch_size, self.seq_len)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "seed": self.seed,
                "world_size": self.world_size, "total_tokens": self.total_tokens}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "world_size", "total_tokens"):
            if state.get(key) != getattr(self, key):
                raise DataError(f"cannot resume the data position: {key} was {state.get(key)}, now "
                                f"{getattr(self, key)}; resume with the same data, seed and number of processes")
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self._build_epoch()


class ValidationLoader:
    """The same `num_batches` validation batches every time (the first tokens, never shuffled);
    batch i belongs to rank i % world_size, so what is evaluated does not depend on the process count."""

    def __init__(self, token_arrays: Sequence[np.ndarray], batch_size: int, seq_len: int, num_batches: int,
                 rank: int = 0, world_size: int = 1):
        self.stream = np.concatenate([np.asarray(a) for a in token_arrays]) if len(token_arrays) > 1 else \
            np.asarray(token_arrays[0])
        self.batch_size, self.seq_len = batch_size, seq_len
        available = (len(self.stream) - 1) // (batch_size * seq_len)
        if available == 0:
            raise DataError(f"{len(self.stream):,} validation tokens are fewer than one batch of "
                            f"{batch_size} x {seq_len}; use more validation data or a smaller batch")
        self.num_batches = min(num_batches, available)
        self.indices = list(range(rank, self.num_batches, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        tokens = self.batch_size * self.seq_len
        for i in self.indices:
            yield _windows_to_tensors(self.stream[i * tokens : (i + 1) * tokens + 1], self.batch_size, self.seq_len)


class StreamingTrainLoader:
    """TrainLoader's interface over a streaming `datasets.IterableDataset`: each rank reads its own
    part (split_dataset_by_node), documents are shuffled in a buffer, tokenized on the fly and packed
    into windows. The state (the dataset's position plus the leftover tokens) makes resume exact."""

    def __init__(self, dataset, tokenizer, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1,
                 seed: int = 1337, text_column: str = "text", shuffle_buffer: int = 10_000):
        from datasets.distributed import split_dataset_by_node

        if shuffle_buffer:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
        self.dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.tokenizer, self.text_column = tokenizer, text_column
        self.batch_size, self.seq_len = batch_size, seq_len
        self.epoch = 0
        self.buffer: list[int] = []
        self._rows = None

    def _next_document(self) -> list[int]:
        for _ in range(2):
            if self._rows is None:
                self.dataset.set_epoch(self.epoch)
                self._rows = iter(self.dataset)
            try:
                row = next(self._rows)
                return [self.tokenizer.eot_token_id] + self.tokenizer.encode_ordinary(row[self.text_column])
            except StopIteration:
                self.epoch, self._rows = self.epoch + 1, None
        raise DataError("the streaming dataset yielded no documents for this process")

    def next_batch(self):
        need = self.batch_size * self.seq_len + 1
        while len(self.buffer) < need:
            self.buffer.extend(self._next_document())
        window = np.array(self.buffer[:need])
        del self.buffer[: need - 1]  # the next window starts at this one's last target
        return _windows_to_tensors(window, self.batch_size, self.seq_len)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "dataset": self.dataset.state_dict(), "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.buffer = state["epoch"], list(state["buffer"])
        self.dataset.load_state_dict(state["dataset"])
        self._rows = None
