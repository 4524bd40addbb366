"""The per-rank loaders of pretraining (run_setup.build_loaders picks them from the run's settings).

TrainLoader reads (B, T+1) windows of a virtual stream made of the documents of every token array,
in an order reshuffled each epoch (shard order, then document order inside each shard), so the loss
has no period tied to the data layout. Global window g goes to rank g % world_size, so ranks read
disjoint windows; the state is (epoch, windows consumed), which makes resume exact, also on another
number of processes (the global window order does not depend on it).
StreamingTrainLoader gives the same interface over a streaming `datasets` dataset.

Start-up costs O(shards): `open_token_shards` reads headers (and manifest.json), and TrainLoader lays out
an epoch from the shards' token and document counts; a shard's tokens are first read when training
reaches it (checked against their sha256 then, see nanogpt2.shards.TokenShard), and only a few shards'
document tables and memory maps are kept at once.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from queue import Full, Queue

import numpy as np
import torch

from .configuration_nanogpt2 import EOT_TOKEN_ID
from .errors import DataError
from .shards import TokenShard, open_token_shard

SHARD_EXTENSIONS = (".bin", ".npy")  # nanogpt2 and llm.c/modded-nanogpt .bin, build-nanogpt .npy
CACHED_SHARD_TABLES = 4  # document tables of shards a TrainLoader keeps (a window rarely spans more than 2)


def open_token_shards(data_dir, split: str, tokenizer=None) -> list[TokenShard]:
    """The validated token shards of `split` ("train" or "val") in a directory of prepare_fineweb.py,
    llm.c/modded-nanogpt or build-nanogpt shards: files named `*_<split>_*.bin|.npy`. Only headers are read
    (and checked against manifest.json when there is one); shards that record no statistics (older
    nanogpt2 shards, other tools') are read in full once, with a one-line note on stderr. No file stays open."""
    from .prepare import read_manifest

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data_dir {data_dir} does not exist; create it with prepare_fineweb.py "
                        "(or python -m nanogpt2.fetch_shards)")
    files = sorted(f for f in data_dir.glob(f"*_{split}_*") if f.suffix in SHARD_EXTENSIONS)
    if not files:
        raise DataError(f"no {split} shards (*_{split}_*.bin or .npy) in {data_dir}; create them with "
                        "prepare_fineweb.py (or python -m nanogpt2.fetch_shards)")
    manifest = read_manifest(data_dir)
    entries = {entry.get("file"): entry for entry in manifest["shards"]} if manifest else {}
    shards = [open_token_shard(f, tokenizer=tokenizer, expected=entries.get(f.name)) for f in files]
    scanned = [s for s in shards if s.scanned]
    if scanned:
        kinds = ", ".join(sorted({"older nanogpt2" if s.kind == "nanogpt2" else s.kind for s in scanned}))
        print(f"nanogpt2: {len(scanned)} of {len(shards)} {split} shards in {data_dir} ({kinds}, e.g. "
              f"{scanned[0].path.name}) record no largest token id: each was read in full to check it; shards "
              "written by this version of prepare_fineweb.py are checked from their headers", file=sys.stderr)
    return shards


def _document_spans(tokens: np.ndarray, eot_token_id: int) -> np.ndarray:
    """(start, length) of every document; a document starts at each end-of-text token."""
    starts = np.flatnonzero(tokens == eot_token_id)
    if len(starts) == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    lengths = np.diff(np.append(starts, len(tokens)))
    return np.stack([starts, lengths], axis=1)


class _InMemory:
    """An array already in memory (tokenized text) with TokenShard's interface for the loaders."""

    def __init__(self, tokens: np.ndarray):
        self.tokens, self._spans = np.asarray(tokens), {}

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, key):
        return self.tokens[key]

    def document_spans(self, eot_token_id: int) -> np.ndarray:
        if eot_token_id not in self._spans:
            self._spans[eot_token_id] = _document_spans(self.tokens, eot_token_id)
        return self._spans[eot_token_id]

    def document_count(self, eot_token_id: int) -> int:
        return len(self.document_spans(eot_token_id))


def _as_token_source(array):
    return array if isinstance(array, (TokenShard, _InMemory)) else _InMemory(array)


def _windows_to_tensors(window: np.ndarray, batch_size: int, seq_len: int):
    window = torch.from_numpy(window.astype(np.int64))
    return window[:-1].view(batch_size, seq_len), window[1:].view(batch_size, seq_len)


class TrainLoader:
    """Endless (x, y) training batches of shape (batch_size, seq_len) for one rank.

    `token_arrays`: TokenShards (`open_token_shards`) or arrays. An epoch is laid out from the arrays'
    token and document counts only; a shard's documents are located (one read of the shard) when the
    stream reaches it. The order is that of one table of every document (shard order from the epoch's
    generator, then each shard's document order from the same generator, in turn): the generator's state
    before each shard's permutation is kept, so the shard's part of that table is made when needed."""

    def __init__(self, token_arrays: Sequence, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1, seed: int = 1337, shuffle: bool = True, eot_token_id: int = EOT_TOKEN_ID):
        self.arrays = [_as_token_source(a) for a in token_arrays]
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.eot_token_id = seed, shuffle, eot_token_id
        self.window_tokens = batch_size * seq_len
        self.total_tokens = sum(len(a) for a in self.arrays)
        self.windows_per_epoch = (self.total_tokens - 1) // self.window_tokens
        if self.windows_per_epoch < world_size:
            raise DataError(
                f"{self.total_tokens:,} training tokens are too few for {world_size} process(es) x "
                f"{batch_size} x {seq_len} tokens per batch; use more data or a smaller batch/sequence length"
            )
        self._counts: dict[int, int] = {}  # documents per array, asked for when the generator needs them
        self._spans: OrderedDict[int, np.ndarray] = OrderedDict()  # the last arrays' document spans
        self.epoch, self.step_in_epoch = 0, 0
        self._build_epoch()

    def _build_epoch(self) -> None:
        """The epoch's shard order and where each shard starts in the stream; the document order inside
        a shard comes later (`_shard_table`), from the generator state saved before it."""
        self._rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.arrays)
        self.order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        self.shard_offsets = np.concatenate([[0], np.cumsum([len(self.arrays[i]) for i in self.order])])
        self._states: list[dict] = []  # generator state before the document permutation of each slot
        self._tables: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _count(self, index: int) -> int:
        if index not in self._counts:
            self._counts[index] = self.arrays[index].document_count(self.eot_token_id)
        return self._counts[index]

    def _document_spans(self, index: int) -> np.ndarray:
        if index in self._spans:
            self._spans.move_to_end(index)
        else:
            self._spans[index] = self.arrays[index].document_spans(self.eot_token_id)
            while len(self._spans) > CACHED_SHARD_TABLES:
                self._spans.popitem(last=False)
        return self._spans[index]

    def _shard_table(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """The documents of the `slot`-th shard of this epoch's order, in reading order ((start, length)
        rows), and their offsets from the shard's start."""
        if slot in self._tables:
            self._tables.move_to_end(slot)
            return self._tables[slot]
        spans = self._document_spans(int(self.order[slot]))
        if self.shuffle:
            while len(self._states) <= slot:  # advance the generator over the shards before, as one table did
                self._states.append(self._rng.bit_generator.state)
                self._rng.permutation(self._count(int(self.order[len(self._states) - 1])))
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = self._states[slot]
            spans = spans[rng.permutation(len(spans))]
        self._tables[slot] = (spans, np.concatenate([[0], np.cumsum(spans[:, 1])]))
        while len(self._tables) > CACHED_SHARD_TABLES:
            self._tables.popitem(last=False)
        return self._tables[slot]

    def _read(self, begin: int, end: int) -> np.ndarray:
        """Tokens [begin, end) of this epoch's virtual stream."""
        out = np.empty(end - begin, dtype=np.int64)
        slot = int(np.searchsorted(self.shard_offsets, begin, side="right")) - 1
        written = 0
        while written < len(out):
            array = self.arrays[int(self.order[slot])]
            table, offsets = self._shard_table(slot)
            position = begin + written - int(self.shard_offsets[slot])  # inside this shard's part of the stream
            row = int(np.searchsorted(offsets, position, side="right")) - 1
            while written < len(out) and row < len(table):
                start, length = int(table[row, 0]), int(table[row, 1])
                skip = begin + written - int(self.shard_offsets[slot]) - int(offsets[row])
                take = min(length - skip, len(out) - written)
                out[written : written + take] = array[start + skip : start + skip + take]
                written += take
                row += 1
            slot += 1
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
                "world_size": self.world_size, "total_tokens": self.total_tokens, "window_tokens": self.window_tokens}

    def load_state_dict(self, state: dict) -> None:
        """Resume at the saved position; a state saved by another number of processes is resharded."""
        for key in ("seed", "total_tokens", "window_tokens"):
            if key in state and state[key] != getattr(self, key):
                raise DataError(f"cannot resume the data position: {key} was {state[key]}, now "
                                f"{getattr(self, key)}; resume with the same data, seed and micro-batch x "
                                "sequence length")
        self.epoch, self.step_in_epoch = state["epoch"], self.reshard_position(state["step_in_epoch"],
                                                                               state["world_size"])
        self._build_epoch()

    def reshard_position(self, step_in_epoch: int, saved_world_size: int) -> int:
        """This rank's step_in_epoch for a position saved by `saved_world_size` processes. Every rank had read
        step_in_epoch windows, i.e. global windows [0, step_in_epoch x saved_world_size) of the epoch; since
        global window g goes to rank g % world_size, the same stream continues on any world size dividing it."""
        consumed = step_in_epoch * saved_world_size
        if consumed % self.world_size:
            raise DataError(f"cannot resume the data position of {saved_world_size} process(es) on {self.world_size}: "
                            f"{consumed} windows read this epoch is not a multiple of {self.world_size}; pick a "
                            "number of processes that, times --per_device_train_batch_size, divides --total_batch_size")
        return consumed // self.world_size


class ValidationLoader:
    """The same `num_batches` validation batches every time (the first tokens, never shuffled);
    batch i belongs to rank i % world_size, so what is evaluated does not depend on the process count.
    The arrays are read where the batches lie (nothing is concatenated in memory)."""

    def __init__(self, token_arrays: Sequence, batch_size: int, seq_len: int, num_batches: int,
                 rank: int = 0, world_size: int = 1):
        self.arrays = [_as_token_source(a) for a in token_arrays]
        self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in self.arrays])])
        self.batch_size, self.seq_len = batch_size, seq_len
        total = int(self.offsets[-1])
        available = (total - 1) // (batch_size * seq_len)
        if available <= 0:
            raise DataError(f"{total:,} validation tokens are fewer than one batch of "
                            f"{batch_size} x {seq_len}; use more validation data or a smaller batch")
        self.num_batches = min(num_batches, available)
        self.indices = list(range(rank, self.num_batches, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, begin: int, end: int) -> np.ndarray:
        out = np.empty(end - begin, dtype=np.int64)
        index = int(np.searchsorted(self.offsets, begin, side="right")) - 1
        written = 0
        while written < len(out):
            start = begin + written - int(self.offsets[index])
            take = min(len(self.arrays[index]) - start, len(out) - written)
            out[written : written + take] = self.arrays[index][start : start + take]
            written += take
            index += 1
        return out

    def __iter__(self):
        tokens = self.batch_size * self.seq_len
        for i in self.indices:
            yield _windows_to_tensors(self._read(i * tokens, (i + 1) * tokens + 1), self.batch_size, self.seq_len)


def stream_text(row: dict, text_column: str) -> str | None:
    """The text of a streamed row, or None for a null, empty or non-string value (a row to skip and count).
    A row without the column at all means the wrong --text_column: an error naming the columns there are."""
    if text_column not in row:
        raise DataError(f"the streamed dataset has no {text_column!r} column (columns: {sorted(row)}); "
                        "set --text_column")
    text = row[text_column]
    return text if isinstance(text, str) and text else None


class StreamingTrainLoader:
    """TrainLoader's interface over a streaming `datasets` dataset, without preprocessing: each rank
    reads its own part (`split_dataset_by_node`), documents are shuffled in a buffer of
    `shuffle_buffer` documents (reseeded per rank and epoch), tokenized on the fly and packed into
    windows. `datasets`' own shuffle buffer is not used: its content is lost on resume. Here the
    buffer's texts, the generator state and the leftover tokens are part of `state_dict()`, so resume
    is exact (the state holds `shuffle_buffer` documents of text: about 4 MB for FineWeb-Edu at 1,000)."""

    def __init__(self, dataset, tokenizer, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1,
                 seed: int = 1337, text_column: str = "text", shuffle_buffer: int = 1000):
        """`dataset`: a streaming `IterableDataset` (`sources.load_hub_text_dataset(..., streaming=True)`,
        or `stream.skip(n)` after taking validation documents from its start)."""
        from datasets.distributed import split_dataset_by_node

        self.dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.tokenizer, self.text_column = tokenizer, text_column
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size, self.seed, self.shuffle_buffer = rank, world_size, seed, max(1, shuffle_buffer)
        self.epoch = 0
        self.documents: list[str] = []  # the shuffle buffer
        self.tokens: list[int] = []  # tokenized but not yet batched
        self.skipped_rows = 0  # null, empty or non-text rows read so far (all epochs)
        self._start_epoch(self.epoch)

    def _start_epoch(self, epoch: int, dataset_state: dict | None = None) -> None:
        self.epoch = epoch
        self.rng = np.random.default_rng([self.seed, self.rank, epoch])
        self.dataset.set_epoch(epoch)  # before load_state_dict: datasets applies a state only to its own epoch
        if dataset_state is not None:
            self.dataset.load_state_dict(dataset_state)
        self._rows = iter(self.dataset)
        self._exhausted = False

    def _read_row(self) -> str | None:
        """The next row's text; None at the end of the epoch."""
        while True:
            if self._exhausted:
                return None
            try:
                row = next(self._rows)
            except StopIteration:
                self._exhausted = True
                return None
            text = stream_text(row, self.text_column)
            if text is not None:
                return text
            self.skipped_rows += 1  # null, empty or not a string: skipped and counted, never fatal
            if self.skipped_rows == 1:
                from tqdm.auto import tqdm

                tqdm.write(f"warning: skipping streamed rows whose {self.text_column!r} is null, empty or not text "
                           f"(process {self.rank}); metrics.jsonl counts them as skipped_rows", file=sys.stderr)

    def _next_document(self) -> str:
        """A random document of the buffer, replaced by the next one read; at the end of the epoch the
        buffer is drained, then the next epoch starts."""
        for _ in range(2):
            while len(self.documents) < self.shuffle_buffer and (text := self._read_row()) is not None:
                self.documents.append(text)
            if self.documents:
                i = int(self.rng.integers(len(self.documents)))
                self.documents[i], self.documents[-1] = self.documents[-1], self.documents[i]
                return self.documents.pop()
            self._start_epoch(self.epoch + 1)
        raise DataError(f"the streaming dataset yielded no documents for process {self.rank} of {self.world_size}"
                        + (f" ({self.skipped_rows} rows had a null, empty or non-text {self.text_column!r}; set "
                           "--text_column)" if self.skipped_rows else ""))

    def next_batch(self):
        need = self.batch_size * self.seq_len + 1
        while len(self.tokens) < need:
            self.tokens.append(self.tokenizer.eot_token_id)
            self.tokens.extend(self.tokenizer.encode_ordinary(self._next_document()))
        window = np.array(self.tokens[:need])
        del self.tokens[: need - 1]  # the next window starts at this one's last target
        return _windows_to_tensors(window, self.batch_size, self.seq_len)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "dataset": self.dataset.state_dict(), "exhausted": self._exhausted,
                "rng": self.rng.bit_generator.state, "documents": list(self.documents), "tokens": list(self.tokens),
                "seed": self.seed, "rank": self.rank, "world_size": self.world_size, "skipped_rows": self.skipped_rows}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "world_size", "rank"):
            if state.get(key) != getattr(self, key):
                raise DataError(f"cannot resume the streaming position: {key} was {state.get(key)}, now "
                                f"{getattr(self, key)}; resume with the same seed and number of processes")
        self._start_epoch(state["epoch"], state["dataset"])
        self._exhausted = state["exhausted"]
        self.rng.bit_generator.state = state["rng"]
        self.documents, self.tokens = list(state["documents"]), list(state["tokens"])
        self.skipped_rows = state.get("skipped_rows", 0)


class BatchPrefetcher:
    """Wraps a train loader (`next_batch`, `state_dict`, `load_state_dict`): a background thread reads
    the next `depth` batches ahead and, with `pin_memory`, copies them into page-locked memory, so
    `.to("cuda", non_blocking=True)` is a real asynchronous copy. `state_dict()` is the wrapped loader's
    state after the last batch handed out (consumed), not after the last one read ahead, so resume is exact."""

    def __init__(self, loader, depth: int = 2, pin_memory: bool = False):
        self.loader, self.depth, self.pin_memory = loader, max(1, depth), pin_memory
        self._thread, self._rewind = None, False
        self._state = loader.state_dict()

    def __getattr__(self, name):  # batch_size, seq_len, ... of the wrapped loader
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def _produce(self, queue, stop) -> None:
        import copy

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    queue.put(item, timeout=0.1)
                    return True
                except Full:
                    pass
            return False

        try:
            while not stop.is_set():
                x, y = self.loader.next_batch()
                if self.pin_memory:
                    x, y = x.pin_memory(), y.pin_memory()
                put((x, y, copy.deepcopy(self.loader.state_dict())))
        except BaseException as error:  # handed to the consumer, raised by next_batch
            put(error)

    def _start(self) -> None:
        import threading

        if self._rewind:  # a failed thread may have read past the consumed position
            self.loader.load_state_dict(self._state)
            self._rewind = False
        self._queue, self._stop = Queue(maxsize=self.depth), threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(self._queue, self._stop), daemon=True,
                                        name="nanogpt2-batch-prefetch")
        self._thread.start()

    def next_batch(self):
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):  # the thread has ended; the next call starts a new one
            self._thread.join()
            self._thread, self._rewind = None, True
            raise item
        x, y, self._state = item
        return x, y

    def close(self) -> None:
        """Stops the reader thread; the wrapped loader is left at the consumed position (batches read
        ahead are dropped) and reading resumes from there at the next `next_batch`."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.loader.load_state_dict(self._state)

    def state_dict(self) -> dict:
        return self._state

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.loader.load_state_dict(state)
        self._state = self.loader.state_dict()
