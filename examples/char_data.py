"""Tiny Shakespeare as characters: the vocabulary, a 90/10 split, random (x, y) batches, loss estimates.
Shared by bigram.py and gpt_char.py (the seed's first two steps)."""

import json
import os
import urllib.request
from pathlib import Path

import torch

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
LOCAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def load_text(path=None) -> str:
    """--data_file if given; else ../shared/data's copy next to the checkout; else downloaded once."""
    for candidate in (path, LOCAL):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text(encoding="utf-8")
    if path:
        raise SystemExit(f"error: {path} does not exist")
    cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "nanogpt2" / "tinyshakespeare.txt"
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            cache.write_bytes(urllib.request.urlopen(URL, timeout=30).read())
        except OSError as error:
            raise SystemExit(f"error: could not download Tiny Shakespeare ({error}); pass --data_file input.txt")
    return cache.read_text(encoding="utf-8")


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
        return cls(json.loads((Path(directory) / "char_vocab.json").read_text()))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        return [self.index[c] for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def save_pretrained(self, directory):
        (Path(directory) / "char_vocab.json").write_text(json.dumps(self.chars))


def split_data(text, tokenizer, train_fraction=0.9):
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n = int(train_fraction * len(data))
    return data[:n], data[n:]


def get_batch(data, batch_size, block_size, generator):
    starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in starts])
    y = torch.stack([data[i + 1 : i + block_size + 1] for i in starts])
    return x, y


@torch.no_grad()
def estimate_loss(loss_fn, splits, batch_size, block_size, eval_iters, seed=0):
    """Mean loss over `eval_iters` random batches of each split (nanoGPT's estimate_loss)."""
    generator = torch.Generator().manual_seed(seed)
    return {name: sum(loss_fn(*get_batch(data, batch_size, block_size, generator)).item()
                      for _ in range(eval_iters)) / eval_iters for name, data in splits.items()}
