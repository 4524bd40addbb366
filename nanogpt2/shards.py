"""The token shard file format (version 1), read lazily: headers at start-up, tokens when training reaches them.

    offset  size  field
    0       8     magic b"NGPT2TOK"
    8       4     format version (uint32, little endian) = 1
    12      4     bytes per token: 2 (uint16, vocabularies up to 65,536) or 4 (uint32)
    16      8     number of tokens (uint64)
    24      4     vocabulary size of the tokenizer (uint32)
    28      4     end-of-text token id (uint32)
    32      64    the tokenizer's fingerprint (ASCII hex sha256, see nanogpt2.tokenizer)
    96      8     b"NGSTATS1" when the next fields are set (shards of nanogpt2 <= 0.x before them: zeros)
    104     4     largest token id in the shard (uint32)
    108     4     zero
    112     8     number of documents as the loader counts them: end-of-text tokens, plus one when the
                  shard starts inside a document (uint64)
    120     32    sha256 of the tokens (bytes 256 to the end)
    152     104   zero padding
    256     ...   the tokens, little endian

The statistics (largest id, documents, checksum) let a loader trust a shard from its 256-byte header: start-up
costs O(shards), not O(tokens). `TokenShard` checks the tokens against the checksum once, the first time
it is read, before any of them reach training. A shard without them (written before they existed, or by
another tool) is scanned once when it is opened, as every shard was before. The format version stays 1:
the statistics live in what used to be padding, so older readers read the new shards as they are.

Every check that can fail names the file and says what to do.

`open_token_shard` also reads the shards of other tools as they are, detected by extension and header:
- llm.c / modded-nanogpt `.bin` (llm.c dev/data/data_common.py `write_datafile`): 256 int32 header
  (little endian) with [0] magic 20240520, [1] version 1, [2] number of tokens; then uint16 GPT-2 ids;
- build-nanogpt `.npy` (fineweb.py: `np.save` of a uint16 array of GPT-2 ids).
Both hold GPT-2 ids with `<|endoftext|>` before each document, as this project's shards do, but no
tokenizer fingerprint: they are checked against the GPT-2 vocabulary instead.

File handles stay bounded: a `TokenShard` holds none; its memory map is opened when tokens are read and
kept in a small least-recently-used set (`MAX_OPEN_SHARDS` per process), so thousands of shards train
under the default `ulimit -n` of 1,024.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .documents import token_dtype
from .errors import DataError
from .fileio import atomic_file

MAGIC = b"NGPT2TOK"
VERSION = 1
HEADER_SIZE = 256
_HEADER = struct.Struct("<8sIIQII64s")
STATS_MAGIC, STATS_OFFSET = b"NGSTATS1", 96
_STATS = struct.Struct("<8sIIQ32s")  # marker, largest id, zero, documents, sha256 of the tokens
DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
LLMC_MAGIC, LLMC_VERSION, LLMC_HEADER_SIZE = 20240520, 1, 256 * 4
GPT2_SHARDS_VOCAB_SIZE, GPT2_SHARDS_EOT = 50257, 50256  # the ids of llm.c and build-nanogpt shards
MAX_OPEN_SHARDS = 8  # memory maps (each one an open file) a process keeps at once
SCAN_BLOCK_BYTES = 1 << 24  # a scan reads 16 MiB at a time: its memory stays bounded whatever the shard size
REBUILD_HINT = "delete it and rerun the prepare_fineweb.py command that made it (it rebuilds only that shard)"


def token_statistics(tokens: np.ndarray, eot_token_id: int) -> dict:
    """What a shard header records about its tokens: the largest id, the number of documents (end-of-text
    tokens, plus one when the tokens start inside a document) and the sha256 of their bytes."""
    tokens = np.ascontiguousarray(tokens)
    digest, largest, documents = hashlib.sha256(), 0, 0
    step = max(1, SCAN_BLOCK_BYTES // tokens.itemsize)
    for start in range(0, len(tokens), step):  # in blocks: no temporary as large as the shard
        block = tokens[start : start + step]
        digest.update(memoryview(block).cast("B"))
        largest = max(largest, int(block.max()))
        documents += int(np.count_nonzero(block == eot_token_id))
    if len(tokens) == 0 or tokens[0] != eot_token_id:
        documents += 1
    return {"max_token_id": largest, "documents": documents, "tokens_sha256": digest.hexdigest()}


def write_shard(path, tokens: np.ndarray, tokenizer_identity: dict, fsync: bool = True) -> dict:
    """Write `tokens` atomically (temporary file, fsync, rename), with their statistics in the header.
    Returns {"sha256" (of the file), "max_token_id", "documents", "tokens_sha256"}."""
    path = Path(path)
    itemsize = np.dtype(token_dtype(tokenizer_identity["vocab_size"])).itemsize
    tokens = np.ascontiguousarray(tokens, dtype=DTYPES[itemsize])
    stats = token_statistics(tokens, tokenizer_identity["eot_token_id"])
    header = _HEADER.pack(MAGIC, VERSION, itemsize, len(tokens), tokenizer_identity["vocab_size"],
                          tokenizer_identity["eot_token_id"], tokenizer_identity["fingerprint"].encode()[:64])
    header += _STATS.pack(STATS_MAGIC, stats["max_token_id"], 0, stats["documents"],
                          bytes.fromhex(stats["tokens_sha256"]))
    header = header.ljust(HEADER_SIZE, b"\0")
    payload = memoryview(tokens).cast("B")
    digest = hashlib.sha256(header)
    digest.update(payload)
    with atomic_file(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        f.write(header)
        f.write(payload)
    return {"sha256": digest.hexdigest(), **stats}


def read_header(path) -> dict:
    """The checked header of a nanogpt2 shard (the file's size must match it); "max_token_id", "documents"
    and "tokens_sha256" are None in shards written before the header recorded them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard {path} does not exist")
    with open(path, "rb") as f:
        raw = f.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE or raw[:8] != MAGIC:
        raise DataError(f"{path} is not a nanogpt2 token shard (bad magic); re-create it with prepare_fineweb.py")
    magic, version, itemsize, num_tokens, vocab_size, eot, fingerprint = _HEADER.unpack(raw[: _HEADER.size])
    if version != VERSION:
        raise DataError(f"{path} has shard format version {version}; this nanogpt2 reads version {VERSION}: "
                        "re-create it with this version's prepare_fineweb.py")
    if itemsize not in DTYPES:
        raise DataError(f"{path} declares {itemsize} bytes per token; only 2 (uint16) and 4 (uint32) exist")
    if itemsize != np.dtype(token_dtype(vocab_size)).itemsize:
        raise DataError(f"{path} stores {itemsize}-byte tokens for a vocabulary of {vocab_size:,} (expected "
                        f"{np.dtype(token_dtype(vocab_size)).itemsize}); re-create it with prepare_fineweb.py")
    expected = HEADER_SIZE + num_tokens * itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise DataError(f"{path} is truncated or corrupt: {actual:,} bytes, the header promises {expected:,}; "
                        "delete it and rerun prepare_fineweb.py (it rebuilds only missing shards)")
    stats = {"max_token_id": None, "documents": None, "tokens_sha256": None}
    marker, largest, zero, documents, sha = _STATS.unpack(raw[STATS_OFFSET : STATS_OFFSET + _STATS.size])
    padding = STATS_OFFSET + _STATS.size
    if marker == STATS_MAGIC and zero == 0 and raw[padding:] == bytes(HEADER_SIZE - padding):
        stats = {"max_token_id": largest, "documents": documents, "tokens_sha256": sha.hex()}
    elif raw[STATS_OFFSET:] != bytes(HEADER_SIZE - STATS_OFFSET):
        raise DataError(f"{path} has a damaged header (bytes 96-255 are neither zeros nor token statistics); "
                        + REBUILD_HINT)
    return {"itemsize": itemsize, "num_tokens": num_tokens, "vocab_size": vocab_size, "eot_token_id": eot,
            "fingerprint": fingerprint.rstrip(b"\0").decode(), **stats}


def shard_format(path) -> str:
    """"nanogpt2", "llm.c" or "npy", from the extension and the first bytes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard {path} does not exist")
    if path.suffix == ".npy":
        return "npy"
    with open(path, "rb") as f:
        start = f.read(8)
    if start == MAGIC:
        return "nanogpt2"
    if len(start) >= 4 and int.from_bytes(start[:4], "little") == LLMC_MAGIC:
        return "llm.c"
    raise DataError(f"{path} is not a nanogpt2 token shard (bad magic: neither NGPT2TOK nor llm.c's {LLMC_MAGIC}); "
                    "re-create it with prepare_fineweb.py")


class TokenShard:
    """The tokens of one shard file, behind a checked header; nothing is read or kept open until tokens
    are asked for (`len`, `dtype` and the recorded statistics come from the header).

    Reading (`shard[i:j]`, `np.asarray(shard)`, `document_spans`) first checks the tokens against the
    sha256 recorded in the header, once per object (one pass over the file in 16 MiB reads), so corrupt
    tokens never reach training; a mismatch raises DataError naming the file. Slices come from a memory
    map kept in a process-wide least-recently-used set of `MAX_OPEN_SHARDS`."""

    def __init__(self, path: Path, kind: str, dtype, offset: int, num_tokens: int, eot_token_id: int,
                 max_token_id: int | None = None, documents: int | None = None, tokens_sha256: str | None = None):
        self.path, self.kind, self.dtype, self.offset = Path(path), kind, np.dtype(dtype), offset
        self.num_tokens, self.eot_token_id = num_tokens, eot_token_id
        self.max_token_id, self.documents, self.tokens_sha256 = max_token_id, documents, tokens_sha256
        self.scanned = False  # the statistics were computed by reading the tokens (no header record)
        self._verified = tokens_sha256 is None  # nothing recorded to check against
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        return f"TokenShard({str(self.path)!r}, {self.kind}, {self.num_tokens:,} tokens)"

    def tokens(self) -> np.ndarray:
        """All the tokens, memory-mapped (through the shared set of open maps), checked first."""
        self.verify()
        return _OPEN_MAPS.get(self)

    def __getitem__(self, key):
        return self.tokens()[key]

    def __array__(self, dtype=None, copy=None):
        tokens = np.asarray(self.tokens())
        return tokens if dtype is None else tokens.astype(dtype)

    def memmap(self) -> np.ndarray:
        """A new memory map of the tokens (unchecked: use `tokens()` or `verify()` first); holds a file open."""
        if self.num_tokens == 0:
            return np.empty(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.num_tokens,))

    def verify(self) -> None:
        """Check the tokens against the header's sha256 (once; no-op without one)."""
        if not self._verified:
            self.scan()

    def document_count(self, eot_token_id: int) -> int:
        """How many documents the loader cuts the shard into (see `document_spans`), from the header when
        it records them for this end-of-text id."""
        if self.documents is not None and eot_token_id == self.eot_token_id:
            return self.documents
        return len(self.document_spans(eot_token_id))

    def document_spans(self, eot_token_id: int) -> np.ndarray:
        """(start, length) of every document: one starts at each end-of-text token, and at 0."""
        starts = self.scan(eot_token_id)["starts"]
        if len(starts) == 0 or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        if (self.documents is not None and eot_token_id == self.eot_token_id and len(starts) != self.documents):
            raise DataError(f"{self.path} holds {len(starts):,} documents, its header records {self.documents:,}: "
                            f"corrupt; {REBUILD_HINT}")
        lengths = np.diff(np.append(starts, self.num_tokens))
        return np.stack([starts, lengths], axis=1)

    def scan(self, eot_token_id: int | None = None, statistics: bool = False) -> dict:
        """One pass over the tokens in 16 MiB reads (bounded memory, nothing mapped): checks them against the
        header's sha256 when not done yet, and returns {"starts": positions of `eot_token_id` (None: not
        asked), and with `statistics` "max_token_id" and "documents" (for the shard's own end-of-text id)}."""
        with self._lock:
            digest = None if self._verified else hashlib.sha256()
            block = np.empty(max(1, min(self.num_tokens, SCAN_BLOCK_BYTES // self.dtype.itemsize)), dtype=self.dtype)
            starts, largest, own_eot, first = [], 0, 0, None
            with open(self.path, "rb", buffering=0) as f:
                f.seek(self.offset)
                done = 0
                while done < self.num_tokens:
                    part = block[: min(len(block), self.num_tokens - done)]
                    _read_exactly(f, memoryview(part).cast("B"), self.path)
                    if digest is not None:
                        digest.update(part)
                    if eot_token_id is not None:
                        starts.append(np.flatnonzero(part == eot_token_id) + done)
                    if statistics:
                        largest = max(largest, int(part.max()))
                        own_eot += int(np.count_nonzero(part == self.eot_token_id))
                        first = int(part[0]) if first is None else first
                    done += len(part)
            if digest is not None:
                if digest.hexdigest() != self.tokens_sha256:
                    raise DataError(f"{self.path}: its tokens do not match the sha256 in its header (changed or "
                                    f"damaged after it was written); {REBUILD_HINT}")
                self._verified = True
        result = {"starts": np.concatenate(starts) if starts else (None if eot_token_id is None else
                                                                    np.empty(0, dtype=np.int64))}
        if statistics:
            result.update(max_token_id=largest, documents=own_eot + (first != self.eot_token_id))
        return result


def _read_exactly(f, buffer: memoryview, path: Path) -> None:
    view, got = buffer, 0
    while got < len(buffer):
        n = f.readinto(view[got:])
        if not n:
            raise DataError(f"{path} ended while being read (truncated since it was opened?); {REBUILD_HINT}")
        got += n


class _OpenMaps:
    """The memory maps open in this process, least recently used first; at most `capacity` of them (a map
    holds its file open until it is dropped here and no slice of it is left)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._maps: OrderedDict[TokenShard, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, shard: TokenShard) -> np.ndarray:
        with self._lock:
            tokens = self._maps.get(shard)
            if tokens is not None:
                self._maps.move_to_end(shard)
                return tokens
        tokens = shard.memmap()
        with self._lock:
            self._maps[shard] = tokens
            self._maps.move_to_end(shard)
            while len(self._maps) > max(1, self.capacity):
                self._maps.popitem(last=False)
        return tokens

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()


_OPEN_MAPS = _OpenMaps(MAX_OPEN_SHARDS)


def open_token_shard(path, tokenizer=None, expected: dict | None = None) -> TokenShard:
    """A shard checked from its header (and `expected`, its manifest.json entry, when given): a nanogpt2
    shard, an llm.c/modded-nanogpt `.bin` or a build-nanogpt `.npy` (see the module docstring). A shard whose
    header records no statistics (older nanogpt2 shards, other tools') is scanned now, once: `.scanned`."""
    path = Path(path)
    kind = shard_format(path)
    if kind == "nanogpt2":
        header = read_header(path)
        if tokenizer is not None and header["fingerprint"] != tokenizer.fingerprint:
            raise DataError(f"{path} was made with another tokenizer (fingerprint {header['fingerprint'][:12]}..., "
                            f"expected {tokenizer.name} {tokenizer.fingerprint[:12]}...); prepare the data with the "
                            "same --tokenizer as training")
        shard = TokenShard(path, kind, DTYPES[header["itemsize"]], HEADER_SIZE, header["num_tokens"],
                           header["eot_token_id"], header["max_token_id"], header["documents"],
                           header["tokens_sha256"])
        limit = tokenizer.vocab_size if tokenizer is not None else header["vocab_size"]
    else:
        if tokenizer is not None and (tokenizer.vocab_size, tokenizer.eot_token_id) != (GPT2_SHARDS_VOCAB_SIZE,
                                                                                      GPT2_SHARDS_EOT):
            raise DataError(f"{path} is a {kind} shard of GPT-2 token ids, but the tokenizer has "
                            f"{tokenizer.vocab_size:,} tokens; train it with GPT-2's tokenizer (the default)")
        offset, dtype, count = _llmc_layout(path) if kind == "llm.c" else _npy_layout(path)
        shard = TokenShard(path, kind, dtype, offset, count, GPT2_SHARDS_EOT)
        limit = GPT2_SHARDS_VOCAB_SIZE
    if shard.max_token_id is None:  # nothing recorded: read the tokens once, as every shard was before
        stats = shard.scan(statistics=True)
        shard.max_token_id, shard.documents, shard.scanned = stats["max_token_id"], stats["documents"], True
    if shard.num_tokens and shard.max_token_id >= limit:
        raise DataError(f"{path} holds token id {shard.max_token_id} >= vocabulary size {limit}: corrupt, or made "
                        "with another tokenizer; re-create it")
    if expected is not None:
        _check_against_manifest(shard, expected)
    return shard


def _check_against_manifest(shard: TokenShard, entry: dict) -> None:
    for key, recorded in (("num_tokens", shard.num_tokens), ("max_token_id", shard.max_token_id),
                          ("tokens_sha256", shard.tokens_sha256)):
        if key in entry and recorded is not None and entry[key] != recorded:
            raise DataError(f"shard {shard.path}: its header says {key} {recorded}, manifest.json says {entry[key]}: "
                            f"changed after prepare; {REBUILD_HINT}")


def open_shard(path, tokenizer=None) -> np.ndarray:
    """The shard's tokens, memory-mapped, checked against the expected tokenizer/vocabulary and (where the
    header records it) their sha256: reads the whole file. Training uses `open_token_shard` (lazy)."""
    shard = open_token_shard(path, tokenizer)
    shard.verify()
    return shard.memmap()


def _llmc_layout(path: Path) -> tuple[int, np.dtype, int]:
    header = np.fromfile(path, dtype="<i4", count=256)
    if len(header) < 256:
        raise DataError(f"{path} is shorter than an llm.c shard header (1,024 bytes): truncated; download it again")
    if header[1] != LLMC_VERSION:
        raise DataError(f"{path} is an llm.c shard of version {header[1]}; nanogpt2 reads version {LLMC_VERSION} "
                        "(uint16 GPT-2 tokens), not version 2 (uint32 Llama-3 tokens)")
    expected = LLMC_HEADER_SIZE + 2 * int(header[2])
    actual = path.stat().st_size
    if header[2] < 0 or actual != expected:
        raise DataError(f"{path} is truncated or corrupt: {actual:,} bytes, its llm.c header promises "
                        f"{expected:,} ({int(header[2]):,} tokens); download or write it again")
    return LLMC_HEADER_SIZE, np.dtype("<u2"), int(header[2])


def _npy_layout(path: Path) -> tuple[int, np.dtype, int]:
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)  # (dropped below: no file stays open)
    except (ValueError, OSError, EOFError) as error:  # not .npy, truncated, or an object array
        raise DataError(f"{path} is not a readable .npy array of token ids ({error}); write it again") from None
    if tokens.ndim != 1 or tokens.dtype not in (np.dtype("<u2"), np.dtype("<u4")):
        raise DataError(f"{path} holds a {tokens.dtype} array of shape {tokens.shape}; a token shard is a 1-D "
                        "uint16 array (build-nanogpt's fineweb.py)")
    layout = (int(tokens.offset) if isinstance(tokens, np.memmap) else 0, tokens.dtype, len(tokens))
    del tokens
    return layout
