"""Writing model checkpoints that load anywhere, atomically.

A checkpoint directory is a plain `save_pretrained` layout (config.json, model.safetensors with
the tied embedding stored once, generation_config.json) plus Hugging Face tokenizer files, plus the
two code files and `auto_map`, so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`
works where nanogpt2 is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from .configuration_nanogpt2 import NanoGPT2Config
from .fileio import atomic_directory
from .tokenizer import TextTokenizer, load_tokenizer


def write_model_files(model, directory: str | os.PathLike, tokenizer: TextTokenizer | None = None,
                      state_dict: dict | None = None) -> None:
    """save_pretrained + tokenizer files + remote code into an existing (temporary) directory.
    `state_dict` replaces the model's own (e.g. the full weights gathered from FSDP shards)."""
    if isinstance(model.config, NanoGPT2Config) or getattr(model.config, "model_type", None) == "nanogpt2":
        type(model.config).register_for_auto_class()
        type(model).register_for_auto_class("AutoModelForCausalLM")
    model.save_pretrained(directory, state_dict=state_dict)
    (tokenizer or load_tokenizer()).save_pretrained(directory)


def save_model_checkpoint(model, directory: str | os.PathLike, tokenizer: TextTokenizer | None = None) -> Path:
    """Write a loadable checkpoint of `model` (a NanoGPT2ForCausalLM) to `directory`, atomically."""
    with atomic_directory(directory) as tmp:
        write_model_files(model, tmp, tokenizer)
    return Path(directory)


__all__ = ["write_model_files", "save_model_checkpoint"]
