"""The token shard file format (version 1), read with memory mapping.

    offset  size  field
    0       8     magic b"NGPT2TOK"
    8       4     format version (uint32, little endian) = 1
    12      4     bytes per token: 2 (uint16, vocabularies up to 65,536) or 4 (uint32)
    16      8     number of tokens (uint64)
    24      4     vocabulary size of the tokenizer (uint32)
    28      4     end-of-text token id (uint32)
    32      64    the tokenizer's fingerprint (ASCII hex sha256, see nanogpt2.tokenizer)
    96      160   zero padding
    256     ...   the tokens, little endian

Every check that can fail names the file and says what to do.

`open_shard` also reads the shards of other tools as they are, detected by extension and header:
- llm.c / modded-nanogpt `.bin` (llm.c dev/data/data_common.py `write_datafile`): 256 int32 header
  (little endian) with [0] magic 20240520, [1] version 1, [2] number of tokens; then uint16 GPT-2 ids;
- build-nanogpt `.npy` (fineweb.py: `np.save` of a uint16 array of GPT-2 ids).
Both hold GPT-2 ids with `<|endoftext|>` before each document, as this project's shards do, but no
tokenizer fingerprint: they are checked against the GPT-2 vocabulary instead.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from .documents import token_dtype
from .errors import DataError
from .fileio import atomic_file

MAGIC = b"NGPT2TOK"
VERSION = 1
HEADER_SIZE = 256
_HEADER = struct.Struct("<8sIIQII64s")
DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
LLMC_MAGIC, LLMC_VERSION, LLMC_HEADER_SIZE = 20240520, 1, 256 * 4
GPT2_SHARDS_VOCAB_SIZE, GPT2_SHARDS_EOT = 50257, 50256  # the ids of llm.c and build-nanogpt shards


def write_shard(path, tokens: np.ndarray, tokenizer_identity: dict) -> str:
    """Write `tokens` atomically (temporary file, fsync, rename); returns the file's sha256."""
    path = Path(path)
    itemsize = np.dtype(token_dtype(tokenizer_identity["vocab_size"])).itemsize
    tokens = np.ascontiguousarray(tokens, dtype=DTYPES[itemsize])
    header = _HEADER.pack(MAGIC, VERSION, itemsize, len(tokens), tokenizer_identity["vocab_size"],
                          tokenizer_identity["eot_token_id"], tokenizer_identity["fingerprint"].encode()[:64])
    header = header.ljust(HEADER_SIZE, b"\0")
    payload = memoryview(tokens).cast("B")
    digest = hashlib.sha256(header)
    digest.update(payload)
    with atomic_file(path, fsync=True) as tmp, open(tmp, "wb") as f:
        f.write(header)
        f.write(payload)
    return digest.hexdigest()


def read_header(path) -> dict:
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
    return {"itemsize": itemsize, "num_tokens": num_tokens, "vocab_size": vocab_size, "eot_token_id": eot,
            "fingerprint": fingerprint.rstrip(b"\0").decode()}


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


def open_shard(path, tokenizer=None) -> np.ndarray:
    """The shard's tokens, memory-mapped and checked against the expected tokenizer/vocabulary: a nanogpt2
    shard, an llm.c/modded-nanogpt `.bin` or a build-nanogpt `.npy` (see the module docstring)."""
    kind = shard_format(path)
    if kind == "nanogpt2":
        header = read_header(path)
        if tokenizer is not None and header["fingerprint"] != tokenizer.fingerprint:
            raise DataError(f"{path} was made with another tokenizer (fingerprint {header['fingerprint'][:12]}..., "
                            f"expected {tokenizer.name} {tokenizer.fingerprint[:12]}...); prepare the data with the "
                            "same --tokenizer as training")
        tokens = np.memmap(path, dtype=DTYPES[header["itemsize"]], mode="r", offset=HEADER_SIZE,
                           shape=(header["num_tokens"],))
        limit = tokenizer.vocab_size if tokenizer is not None else header["vocab_size"]
    else:
        if tokenizer is not None and (tokenizer.vocab_size, tokenizer.eot_token_id) != (GPT2_SHARDS_VOCAB_SIZE,
                                                                                      GPT2_SHARDS_EOT):
            raise DataError(f"{path} is a {kind} shard of GPT-2 token ids, but the tokenizer has "
                            f"{tokenizer.vocab_size:,} tokens; train it with GPT-2's tokenizer (the default)")
        tokens = _open_llmc_shard(path) if kind == "llm.c" else _open_npy_shard(path)
        limit = GPT2_SHARDS_VOCAB_SIZE
    if len(tokens) and int(tokens.max()) >= limit:
        raise DataError(f"{path} holds token id {int(tokens.max())} >= vocabulary size {limit}: corrupt, or made "
                        "with another tokenizer; re-create it")
    return tokens


def _open_llmc_shard(path: Path) -> np.memmap:
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
    return np.memmap(path, dtype="<u2", mode="r", offset=LLMC_HEADER_SIZE, shape=(int(header[2]),))


def _open_npy_shard(path: Path) -> np.ndarray:
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # not .npy, truncated, or an object array
        raise DataError(f"{path} is not a readable .npy array of token ids ({error}); write it again") from None
    if tokens.ndim != 1 or tokens.dtype not in (np.dtype("<u2"), np.dtype("<u4")):
        raise DataError(f"{path} holds a {tokens.dtype} array of shape {tokens.shape}; a token shard is a 1-D "
                        "uint16 array (build-nanogpt's fineweb.py)")
    return tokens
