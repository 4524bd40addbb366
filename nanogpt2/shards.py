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
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from .documents import token_dtype
from .fileio import atomic_file
from .sources import DataError

MAGIC = b"NGPT2TOK"
VERSION = 1
HEADER_SIZE = 256
_HEADER = struct.Struct("<8sIIQII64s")
DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


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


def open_shard(path, tokenizer=None) -> np.memmap:
    """The shard's tokens, memory-mapped and checked against the expected tokenizer/vocabulary."""
    header = read_header(path)
    if tokenizer is not None and header["fingerprint"] != tokenizer.fingerprint:
        raise DataError(f"{path} was made with another tokenizer (fingerprint {header['fingerprint'][:12]}..., "
                        f"expected {tokenizer.name} {tokenizer.fingerprint[:12]}...); prepare the data with the "
                        "same --tokenizer as training")
    tokens = np.memmap(path, dtype=DTYPES[header["itemsize"]], mode="r", offset=HEADER_SIZE,
                       shape=(header["num_tokens"],))
    limit = (tokenizer.vocab_size if tokenizer is not None else header["vocab_size"])
    if len(tokens) and int(tokens.max()) >= limit:
        raise DataError(f"{path} holds token id {int(tokens.max())} >= vocabulary size {limit}: corrupt, or made "
                        "with another tokenizer; re-create it")
    return tokens
