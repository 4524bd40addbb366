"""Writing model checkpoints that load anywhere, atomically.

A checkpoint directory is a plain `save_pretrained` layout (config.json, model.safetensors with
the tied embedding stored once, generation_config.json) plus Hugging Face tokenizer files, plus the
two code files and `auto_map`, so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`
works where nanogpt2 is not installed.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

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


class _DropTiedWeightNotice(logging.Filter):
    """Accelerate's "Removed shared tensor {...} while saving" when the removed tensors are only the tied
    `lm_head.weight` (stored once by design); any other shared tensor still warns."""

    pattern = re.compile(r"Removed shared tensor (\{.*?\}) while saving")

    def filter(self, record: logging.LogRecord) -> bool:
        match = self.pattern.search(record.getMessage())  # after Accelerate's "[RANK n] " prefix
        if match is None:
            return True
        try:
            names = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            return True
        return not all(str(name).split(".")[-2:] == ["lm_head", "weight"] for name in names)


@contextmanager
def quiet_saves():
    """Inside: no tied-weight notice from Accelerate's save_state and no one-shard "Writing model shards"
    progress bar from save_pretrained, which would otherwise print onto the training progress bar."""
    from transformers.utils import logging as hf_logging

    notice_filter = _DropTiedWeightNotice()
    accelerate_logger = logging.getLogger("accelerate.utils.other")
    accelerate_logger.addFilter(notice_filter)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    if bars_were_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        accelerate_logger.removeFilter(notice_filter)
        if bars_were_on:
            hf_logging.enable_progress_bar()


def write_model_files(model, directory: str | os.PathLike, tokenizer: TextTokenizer | None = None,
                      state_dict: dict | None = None) -> None:
    """save_pretrained (with the code files and auto_map: see NanoGPT2PreTrainedModel.save_pretrained) +
    tokenizer files whose model_max_length is the model's context, into an existing (temporary) directory.
    `state_dict` replaces the model's own (e.g. the full weights gathered from FSDP shards)."""
    with quiet_saves():
        model.save_pretrained(directory, state_dict=state_dict)
    hf_tokenizer = (tokenizer or load_tokenizer()).to_hf()  # may be a shared (cached) object: restore it
    default_max_length = hf_tokenizer.model_max_length
    hf_tokenizer.model_max_length = getattr(model.config, "n_positions", default_max_length)
    try:
        hf_tokenizer.save_pretrained(directory)
    finally:
        hf_tokenizer.model_max_length = default_max_length


def save_model_checkpoint(model, directory: str | os.PathLike, tokenizer: TextTokenizer | None = None) -> Path:
    """Write a loadable checkpoint of `model` (a NanoGPT2ForCausalLM) to `directory`, atomically."""
    with atomic_directory(directory) as tmp:
        write_model_files(model, tmp, tokenizer)
    return Path(directory)


__all__ = ["atomic_directory", "quiet_saves", "write_model_files", "save_model_checkpoint", "NanoGPT2ForCausalLM"]
