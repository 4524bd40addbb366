"""Train a byte-level BPE tokenizer the GPT-2 way with the Hugging Face `tokenizers` library: text is
split with GPT-2's pre-tokenization regex (GPT2_PATTERN, so merges never cross a word, number or
punctuation boundary), each piece is mapped to GPT-2's printable byte alphabet (all 256 bytes are in
the vocabulary, so any text encodes and decodes exactly), and `<|endoftext|>` is the only special token
(id 0), the document separator that prepare_fineweb.py and run_pretrain.py expect."""

from __future__ import annotations

import os
from pathlib import Path

from .documents import read_documents
from .errors import DataError, SettingsError
from .fileio import temporary_directory
from .tokenizer import ENDOFTEXT, GPT2_PATTERN

MIN_VOCAB_SIZE = 257  # 256 byte tokens + <|endoftext|>


def gpt2_style_bpe(vocab_size: int, min_frequency: int = 2):
    """An untrained byte-level BPE tokenizer with GPT-2's pre-tokenization, and its trainer."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True)
    return tokenizer, trainer


def train_bpe_tokenizer(files, vocab_size: int, output_dir, text_column: str = "text", min_frequency: int = 2):
    """Train on .txt (one document per file) and .jsonl/.json/.parquet (one per row of `text_column`)
    files and save Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json) to `output_dir`.
    Each file is written to a temporary directory first and moved in with os.replace. Returns the
    transformers tokenizer."""
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB_SIZE:
        raise SettingsError(f"--vocab_size {vocab_size} is too small: the 256 byte tokens and {ENDOFTEXT} need "
                         f"{MIN_VOCAB_SIZE}")
    if min_frequency < 1:
        raise SettingsError(f"--min_frequency {min_frequency} must be at least 1")
    documents = [document for file in files for document in read_documents(file, text_column)]
    characters = set().union(*map(set, documents))
    if len(characters) < 2:  # nothing to learn merges from: refused before anything is written
        what = ("no text (every document is empty)" if not characters else
                f"one distinct character only ({min(characters)!r})")
        raise DataError(f"--files {' '.join(map(str, files))}: the corpus holds {what}; pass files with real text")
    tokenizer, trainer = gpt2_style_bpe(vocab_size, min_frequency)
    tokenizer.train_from_iterator(documents, trainer=trainer, length=len(documents))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                      unk_token=ENDOFTEXT, model_input_names=["input_ids", "attention_mask"])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with temporary_directory(output_dir, "tokenizer") as tmp:
        for file in wrapped.save_pretrained(tmp):
            os.replace(file, output_dir / Path(file).name)
    return wrapped
