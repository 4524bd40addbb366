"""Train a byte-level BPE tokenizer the GPT-2 way (same pre-tokenization regex, byte alphabet,
<|endoftext|> as the only special token) with the Hugging Face `tokenizers` library."""

from __future__ import annotations

from pathlib import Path

from .data import read_documents
from .tokenizer import ENDOFTEXT, GPT2_PATTERN


def train_bpe_tokenizer(files, vocab_size: int, output_dir, text_column: str = "text", min_frequency: int = 2):
    """Train on .txt/.jsonl/.json/.parquet files and save HF tokenizer files to `output_dir`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise ValueError(f"--vocab_size {vocab_size} is too small: 256 byte tokens + <|endoftext|> are needed")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True)

    def documents():
        for file in files:
            yield from read_documents(file, text_column)

    tokenizer.train_from_iterator(documents(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                      unk_token=ENDOFTEXT)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(output_dir)
    return wrapped
