"""Writing model checkpoints that load anywhere, atomically.

A checkpoint directory is a plain `save_pretrained` layout (config.json, model.safetensors with
the tied embedding stored once, generation_config.json) plus Hugging Face tokenizer files, plus the
two code files and `auto_map`, so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`
works where nanogpt2 is not installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .configuration_nanogpt2 import NanoGPT2Config
from .modeling_nanogpt2 import NanoGPT2ForCausalLM
from .tokenizer import TextTokenizer, load_tokenizer


@contextmanager
def atomic_directory(directory: str | os.PathLike):
    """Yield a temporary sibling directory; on success it replaces `directory` in one rename.

    A crash or kill inside the block leaves `directory` as it was (plus a `.tmp-*` sibling that
    `is_incomplete` recognises and the next save sweeps away)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if directory.exists():
            old = directory.with_name(f".old-{directory.name}-{os.getpid()}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


__all__ = ["atomic_directory", "write_model_files", "save_model_checkpoint", "NanoGPT2ForCausalLM"]
