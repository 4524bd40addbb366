"""Tokenizers: OpenAI's GPT-2 BPE through tiktoken (offline, from vendored ranks), or any
Hugging Face `tokenizer.json` (e.g. one made by train_tokenizer.py), behind one small interface.

The GPT-2 ranks file `assets/gpt2.tiktoken` is vendored from the openai-whisper source distribution
on PyPI (`whisper/assets/gpt2.tiktoken`, MIT licence, see assets/LICENSE-gpt2-tiktoken); it is
identical to what OpenAI's encoder.json + vocab.bpe define. Nothing here touches the network.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from pathlib import Path

from .errors import DataError
from .fileio import file_sha256

GPT2_RANKS_FILE = Path(__file__).parent / "assets" / "gpt2.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# tiktoken's `gpt2` encoding: the pre-tokenization regex of OpenAI's encoder.py
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
GPT2_NAME = "gpt2"


@functools.lru_cache(maxsize=1)
def gpt2_mergeable_ranks() -> dict[bytes, int]:
    """The 50,256 byte-sequence -> id ranks of GPT-2, read from the vendored file and checked."""
    data = GPT2_RANKS_FILE.read_bytes()
    if hashlib.sha256(data).hexdigest() != GPT2_RANKS_SHA256:
        raise RuntimeError(f"{GPT2_RANKS_FILE} is corrupt (sha256 mismatch); reinstall nanogpt2")
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}


@functools.lru_cache(maxsize=1)
def gpt2_encoding():
    """The tiktoken Encoding equal to `tiktoken.get_encoding("gpt2")`, built without downloading."""
    import tiktoken

    ranks = gpt2_mergeable_ranks()
    return tiktoken.Encoding(
        name=GPT2_NAME, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: len(ranks)}
    )


def _recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The BPE merge list, in order, that produces `ranks`: each multi-byte token is the merge of the
    two pieces that BPE restricted to lower ranks leaves (as tiktoken's educational module does)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = None
            for i in range(len(parts) - 1):
                pair_rank = ranks.get(parts[i] + parts[i + 1])
                if pair_rank is not None and pair_rank < rank and (best is None or pair_rank < best[1]):
                    best = (i, pair_rank)
            if best is None:
                raise ValueError(f"token {token!r} (rank {rank}) is not reachable by BPE merges")
            i = best[0]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges.append((parts[0], parts[1]))
    return merges


@functools.lru_cache(maxsize=1)
def gpt2_hf_tokenizer():
    """A transformers GPT-2 tokenizer (fast, tokenizers-backed) made from the same ranks: same ids as
    tiktoken, `<|endoftext|>` as bos/eos/unk."""
    from transformers import GPT2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_to_char = bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(byte_to_char[x] for x in b)

    ranks = gpt2_mergeable_ranks()
    vocab = {to_str(token): rank for token, rank in ranks.items()}
    vocab[ENDOFTEXT] = len(ranks)
    merges = [(to_str(a), to_str(b)) for a, b in _recover_merges(ranks)]
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=1024)
    return tokenizer


class TextTokenizer:
    """What the data pipeline and training need of a tokenizer.

    - `encode_ordinary(text)`: ids with special-token text treated as plain text
    - `decode(ids)`
    - `eot_token_id` (document separator), `vocab_size` (number of real ids)
    - `identity`: a dict that names the tokenizer and fingerprints its vocabulary (for manifests)
    - `save_pretrained(dir)`: Hugging Face tokenizer files, so AutoTokenizer loads the checkpoint
    """

    name: str
    eot_token_id: int
    vocab_size: int

    @property
    def identity(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size, "eot_token_id": self.eot_token_id,
                "fingerprint": self.fingerprint}


class TiktokenGPT2Tokenizer(TextTokenizer):
    """OpenAI GPT-2's tokenizer, run by tiktoken (`to_hf()` gives the equivalent transformers tokenizer)."""

    name = GPT2_NAME
    fingerprint = GPT2_RANKS_SHA256

    def __init__(self):
        self.encoding = gpt2_encoding()
        self.eot_token_id = self.encoding.eot_token
        self.vocab_size = self.encoding.n_vocab

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.encoding.decode(list(ids))

    def to_hf(self):
        return gpt2_hf_tokenizer()

    def save_pretrained(self, directory) -> None:
        self.to_hf().save_pretrained(directory)


class TokenizerJsonTokenizer(TextTokenizer):
    """A `tokenizer.json` (a directory holding one, or the file itself), run by the `tokenizers` library
    (`to_hf()` gives the transformers tokenizer of the same files)."""

    def __init__(self, path):
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise DataError(f"no tokenizer.json at {path}: pass a directory made by train_tokenizer.py "
                            "or save_pretrained, or omit --tokenizer_name for GPT-2's")
        self.path = file.parent
        self.name = str(self.path.resolve())
        self.backend = Tokenizer.from_file(str(file))
        self.backend.encode_special_tokens = True  # "<|endoftext|>" inside a document is just text
        self.fingerprint = file_sha256(file)
        self.vocab_size = self.backend.get_vocab_size(with_added_tokens=True)
        eot = self.backend.token_to_id(ENDOFTEXT)
        if eot is None:
            config = self.path / "tokenizer_config.json"
            eos = json.loads(config.read_text()).get("eos_token") if config.is_file() else None
            eot = self.backend.token_to_id(eos) if isinstance(eos, str) else None
        if eot is None:
            raise DataError(f"tokenizer {file} has no {ENDOFTEXT} (or eos) token to separate documents")
        self.eot_token_id = eot

    def encode_ordinary(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def to_hf(self):
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        if (self.path / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(self.path)
        return PreTrainedTokenizerFast(tokenizer_file=str(self.path / "tokenizer.json"), eos_token=ENDOFTEXT,
                                       bos_token=ENDOFTEXT, unk_token=ENDOFTEXT)

    def save_pretrained(self, directory) -> None:
        self.to_hf().save_pretrained(directory)


def load_tokenizer(name_or_path: str | os.PathLike | None = None) -> TextTokenizer:
    """GPT-2's tokenizer for None or "gpt2"; otherwise a Hugging Face tokenizer.json at that path."""
    if name_or_path is None or str(name_or_path) == GPT2_NAME:
        return TiktokenGPT2Tokenizer()
    return TokenizerJsonTokenizer(name_or_path)


__all__ = ["TextTokenizer", "TiktokenGPT2Tokenizer", "TokenizerJsonTokenizer", "load_tokenizer", "gpt2_encoding",
           "gpt2_hf_tokenizer", "ENDOFTEXT", "GPT2_PATTERN"]
