"""Tiny Shakespeare as characters: the vocabulary, a 90/10 split, random (x, y) batches, loss estimates.
Shared by bigram.py and gpt_char.py (the seed's first two steps).

The character vocabulary is saved as a Hugging Face tokenizer (tokenizer.json: a BPE model with no
merges, so every character is one token, and a `Fuse` decoder, so decoding adds no spaces), which
makes a character-level checkpoint load with AutoTokenizer like any other.
"""

import os
from pathlib import Path

import torch

from nanogpt2.sources import download_tiny_shakespeare

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The offline data folder: $NANOGPT2_SHARED_DATA, else ../shared/data beside the checkout (as the tests
    find it); it may not exist (then the examples download what they need)."""
    return Path(os.environ.get("NANOGPT2_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_text(path=None) -> str:
    """--data_file if given; else the shared data folder's copy; else downloaded once."""
    if path is not None:
        if not Path(path).is_file():
            raise SystemExit(f"error: --data_file {path} does not exist; pass Tiny Shakespeare's input.txt")
        return Path(path).read_text(encoding="utf-8")
    shared_copy = shared_data_dir() / "tinyshakespeare" / "input.txt"
    return Path(shared_copy if shared_copy.is_file() else download_tiny_shakespeare()).read_text(encoding="utf-8")


class CharTokenizer:
    """Characters <-> ids over the sorted set of characters of the text (65 for Tiny Shakespeare)."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    @classmethod
    def from_pretrained(cls, directory):
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(Path(directory) / "tokenizer.json")).get_vocab()
        return cls(sorted(vocab, key=vocab.get))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"characters {unknown} are not in the {self.vocab_size}-character vocabulary")
        return [self.index[c] for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def to_hf(self):
        """The same vocabulary as a transformers tokenizer (what AutoTokenizer loads from a checkpoint)."""
        from tokenizers import Tokenizer, decoders, models
        from transformers import PreTrainedTokenizerFast

        backend = Tokenizer(models.BPE(vocab=dict(self.index), merges=[]))
        backend.decoder = decoders.Fuse()
        return PreTrainedTokenizerFast(tokenizer_object=backend, model_input_names=["input_ids", "attention_mask"])

    def save_pretrained(self, directory):
        self.to_hf().save_pretrained(directory)


def split_data(text, tokenizer, train_fraction=0.9):
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n = int(train_fraction * len(data))
    return data[:n], data[n:]


def get_batch(data, batch_size, block_size, generator):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in starts])
    y = torch.stack([data[i + 1 : i + block_size + 1] for i in starts])
    return x, y


@torch.no_grad()
def estimate_loss(loss_fn, splits, batch_size, block_size, eval_iters, seed=0):
    """Mean loss over `eval_iters` random batches of each split (nanoGPT's estimate_loss); the batches
    come from a fixed seed, so every evaluation of a run sees the same characters."""
    generator = torch.Generator().manual_seed(seed)
    return {name: sum(loss_fn(*get_batch(data, batch_size, block_size, generator)).item()
                      for _ in range(eval_iters)) / eval_iters for name, data in splits.items()}
