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
from contextlib import contextmanager
from pathlib import Path

from .fileio import atomic_directory
from .tokenizer import TextTokenizer, load_tokenizer


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


__all__ = ["quiet_saves", "write_model_files", "save_model_checkpoint"]
