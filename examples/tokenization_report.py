"""Step 3: tokenization, measured. GPT-2's BPE against a byte-level BPE trained on Tiny Shakespeare.

    python examples/tokenization_report.py                  # prints the report, writes docs/tokenization.md
    python examples/tokenization_report.py --vocab_size 1024 --output_file /tmp/report.md

Measures tokens per character on English prose, code, numbers and six non-English samples
(tests/fixtures/tokenization/*.txt), how numbers split into tokens, when `<|endoftext|>` inside user
text is refused, kept as text or turned into the special token (it depends on the call), and what
leading and trailing whitespace does. Every number in the report is computed when it runs.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from nanogpt2.bpe_training import train_bpe_tokenizer
from nanogpt2.tokenizer import ENDOFTEXT, load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from char_data import load_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "fixtures" / "tokenization"
NUMBERS = ["7", "42", "1337", "2024", " 2024", "12345", "3.14159", "8,118,835,999", " 1000000", "555-0199"]
WHITESPACE = ["hello", " hello", "hello ", "  hello", "\nhello", "hello\n", "Hello", "HELLO"]


def pieces(tokenizer, text):
    """The text of each token (`encode_ordinary`), as a code span."""
    return "`" + repr([tokenizer.decode([i]) for i in tokenizer.encode_ordinary(text)]) + "`"


def train_shakespeare_bpe(vocab_size, data_file=None):
    """(nanogpt2 TextTokenizer, transformers tokenizer) of a BPE trained on Tiny Shakespeare."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "input.txt"
        corpus.write_text(load_text(data_file), encoding="utf-8")
        hf_tokenizer = train_bpe_tokenizer([corpus], vocab_size, Path(tmp) / "tokenizer")
        return load_tokenizer(Path(tmp) / "tokenizer"), hf_tokenizer


def density_section(tokenizers):
    names = list(tokenizers)
    columns = " | ".join(f"{n} tokens | {n} tokens/char" for n in names)
    lines = ["| sample | characters | UTF-8 bytes | " + columns + " |",
             "|---|---|---|" + "---|---|" * len(names)]
    per_char = {}
    for sample in sorted(SAMPLES.glob("*.txt")):
        text = sample.read_text(encoding="utf-8").strip()
        counts = [len(tokenizer.encode_ordinary(text)) for tokenizer in tokenizers.values()]
        per_char[sample.stem] = counts[0] / len(text)
        cells = " | ".join(f"{count} | {count / len(text):.3f}" for count in counts)
        lines.append(f"| {sample.stem} | {len(text)} | {len(text.encode())} | {cells} |")
    english = per_char["english_prose"]
    costliest = max(per_char, key=per_char.get)
    lines += ["", f"With {names[0]}, {costliest} costs {per_char[costliest] / english:.1f}x the tokens per character "
              f"of English prose: a byte-level BPE learns merges only for what its training text holds, and "
              "text it rarely saw falls back to single bytes (up to 3 per CJK or Devanagari character)."]
    return lines


def pieces_table(header, samples, tokenizers):
    """A markdown table: one row per sample, the pieces each tokenizer cuts it into."""
    lines = [f"| {header} | " + " | ".join(tokenizers) + " |", "|---|" + "---|" * len(tokenizers)]
    for sample in samples:
        lines.append(f"| `{sample!r}` | " + " | ".join(pieces(t, sample) for t in tokenizers.values()) + " |")
    return lines


def numbers_section(tokenizers):
    lines = pieces_table("number", NUMBERS, tokenizers)
    lines += ["", "GPT-2's regex keeps a run of digits together (` ?\\p{N}+`), then BPE cuts the run wherever its "
              "learned merges fall, not at fixed groups of digits, and the same digits get other tokens after a "
              "space (`'2024'` against `' 2024'`). A tokenizer trained on text with few numbers keeps them as "
              "single digits."]
    return lines


def endoftext_section(gpt2, shakespeare, shakespeare_hf):
    text = f"Hello{ENDOFTEXT}world"
    encoding = gpt2.encoding
    try:
        encoding.encode(text)
        tiktoken_default = "accepted"
    except ValueError as error:
        tiktoken_default = f"refused: `ValueError: {str(error).split('.')[0]}.`"
    gpt2_hf = gpt2.to_hf()
    calls = [
        ("GPT-2, tiktoken `encode_ordinary(text)` (what prepare_fineweb.py uses)", gpt2.encode_ordinary(text)),
        ("GPT-2, tiktoken `encode(text)`", tiktoken_default),
        ("GPT-2, tiktoken `encode(text, allowed_special='all')`", encoding.encode(text, allowed_special="all")),
        ("GPT-2, transformers tokenizer of a checkpoint, `tokenizer(text)`", gpt2_hf(text)["input_ids"]),
        ("GPT-2, transformers, `tokenizer(text, split_special_tokens=True)`",
         gpt2_hf(text, split_special_tokens=True)["input_ids"]),
        ("Shakespeare BPE, `load_tokenizer(dir).encode_ordinary(text)`", shakespeare.encode_ordinary(text)),
        ("Shakespeare BPE, `AutoTokenizer.from_pretrained(dir)(text)`", shakespeare_hf(text)["input_ids"]),
    ]
    lines = [f"The user text is `{text!r}`; `{ENDOFTEXT}` is id {gpt2.eot_token_id} for GPT-2 and "
             f"{shakespeare.eot_token_id} for the Shakespeare BPE.", ""]
    for call, result in calls:
        if isinstance(result, list):
            special = gpt2.eot_token_id if call.startswith("GPT-2") else shakespeare.eot_token_id
            verdict = "the special token" if special in result else "plain text"
            result = f"{verdict}: `{result}`"
        lines.append(f"- {call}: {result}")
    lines += ["", "Documents are encoded with `encode_ordinary`, so a web page that contains the string cannot forge "
              "a document boundary; a chat or generation front end built on the transformers tokenizer must pass "
              "`split_special_tokens=True` for the same guarantee."]
    return lines


def whitespace_section(tokenizers):
    lines = pieces_table("text", WHITESPACE, tokenizers)
    lines += ["", "A space belongs to the token of the word after it (`' hello'` is one token, a different id "
              "from `'hello'`), so a prompt that ends in a space leaves the model to continue from a lone-space "
              "token it rarely saw before a word; of several spaces, all but the last form their own token; "
              "trailing spaces and newlines are tokens of their own; case changes the tokens completely."]
    return lines


def build_report(shakespeare_vocab_size: int = 4096, data_file=None) -> str:
    gpt2 = load_tokenizer()
    shakespeare, shakespeare_hf = train_shakespeare_bpe(shakespeare_vocab_size, data_file)
    tokenizers = {"GPT-2": gpt2, "Shakespeare BPE": shakespeare}
    lines = ["# Tokenization", "",
             "Made by `python examples/tokenization_report.py`: GPT-2's BPE (50,257 tokens) against a byte-level BPE "
             f"of {shakespeare.vocab_size:,} tokens trained on Tiny Shakespeare by `train_tokenizer.py` (same "
             "pre-tokenization regex, same byte alphabet). The samples are `tests/fixtures/tokenization/*.txt`.",
             "", "## Tokens per character", "", "Fewer tokens per character means shorter sequences for the same text "
             "(more text per context window, less compute per document).", ""]
    lines += density_section(tokenizers)
    lines += ["", "## How numbers split", ""] + numbers_section(tokenizers)
    lines += ["", "## `<|endoftext|>` inside user text", ""] + endoftext_section(gpt2, shakespeare, shakespeare_hf)
    lines += ["", "## Leading and trailing whitespace", ""] + whitespace_section(tokenizers)
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_size", type=int, default=4096, help="vocabulary of the Shakespeare BPE")
    parser.add_argument("--data_file", help="Tiny Shakespeare input.txt (default: ../shared/data's, else download)")
    parser.add_argument("--output_file", default=str(REPO / "docs" / "tokenization.md"), help="the Markdown report")
    args = parser.parse_args(argv)
    report = build_report(args.vocab_size, args.data_file)
    print(report)
    output = Path(args.output_file)
    tmp = output.with_name(f".tmp-{output.name}")
    tmp.write_text(report, encoding="utf-8")
    os.replace(tmp, output)
    return report


if __name__ == "__main__":
    main()
