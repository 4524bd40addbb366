"""Step 3: tokenization, measured. GPT-2's BPE against a BPE trained on Tiny Shakespeare.

    python examples/tokenization_report.py                  # prints the report, writes docs/tokenization.md

Tokens per character on prose, code, numbers and six non-English samples (tests/fixtures/tokenization),
how numbers split, what happens to <|endoftext|> inside user text, and whitespace effects.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from nanogpt2.bpe_training import train_bpe_tokenizer
from nanogpt2.tokenizer import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from char_data import load_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "fixtures" / "tokenization"


def pieces(tokenizer, text):
    return [tokenizer.decode([i]) for i in tokenizer.encode_ordinary(text)]


def build_report(shakespeare_vocab_size: int = 4096, data_file=None) -> str:
    gpt2 = load_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "input.txt"
        corpus.write_text(load_text(data_file), encoding="utf-8")
        train_bpe_tokenizer([corpus], shakespeare_vocab_size, Path(tmp) / "tok", min_frequency=2)
        shakespeare = load_tokenizer(Path(tmp) / "tok")
        shakespeare.decode([0])  # loaded fully before the directory goes
    lines = ["# Tokenization", "",
             "Made by `python examples/tokenization_report.py` (GPT-2's BPE, 50,257 tokens, against a byte-level "
             f"BPE of {shakespeare_vocab_size:,} tokens trained on Tiny Shakespeare with the same regex). "
             "Lower tokens/char means a shorter sequence for the same text.", "",
             "| sample | characters | GPT-2 tokens | GPT-2 tokens/char | Shakespeare-BPE tokens | Shakespeare-BPE tokens/char |",
             "|---|---|---|---|---|---|"]
    for sample in sorted(SAMPLES.glob("*.txt")):
        text = sample.read_text(encoding="utf-8")
        a, b = len(gpt2.encode_ordinary(text)), len(shakespeare.encode_ordinary(text))
        lines.append(f"| {sample.stem} | {len(text)} | {a} | {a / len(text):.3f} | {b} | {b / len(text):.3f} |")
    lines += ["", "## How numbers split (GPT-2)", ""]
    for number in ["7", "42", "1337", "2024", "12345", "3.14159", "8,118,835,999", " 1000000"]:
        lines.append(f"- `{number}` -> {pieces(gpt2, number)}")
    special = "Hello<|endoftext|>world"
    encoding = gpt2.encoding
    try:
        encoding.encode(special)
        refused = "accepted (unexpected)"
    except ValueError:
        refused = "refused with ValueError (tiktoken's default guards against special tokens in user text)"
    lines += ["", "## `<|endoftext|>` inside user text", "",
              f"- `encode_ordinary({special!r})` treats it as text: {gpt2.encode_ordinary(special)} "
              f"(pieces {pieces(gpt2, special)}); this is what prepare_fineweb.py uses for documents.",
              f"- `encode({special!r})` is {refused}.",
              f"- `encode({special!r}, allowed_special='all')` gives the single id 50256: "
              f"{encoding.encode(special, allowed_special='all')}.",
              f"- The Hugging Face tokenizer of a checkpoint maps it to 50256 (it is a special token there): "
              f"{gpt2.to_hf()(special)['input_ids']}.", "", "## Whitespace", ""]
    for text in ["hello", " hello", "hello ", "  hello", "\nhello", "Hello", "HELLO"]:
        lines.append(f"- `{text!r}` -> {gpt2.encode_ordinary(text)} {pieces(gpt2, text)}")
    lines += ["", "A leading space is part of the next word's token (' hello' is one token, 'hello' another id), so "
              "prompts ending in a space make the model predict an unusual token; trailing spaces become their own "
              "tokens."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_size", type=int, default=4096, help="vocabulary of the Shakespeare BPE")
    parser.add_argument("--data_file", help="Tiny Shakespeare input.txt (default: ../shared/data's, else download)")
    parser.add_argument("--output_file", default=str(REPO / "docs" / "tokenization.md"))
    args = parser.parse_args(argv)
    report = build_report(args.vocab_size, args.data_file)
    print(report)
    Path(args.output_file).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
