#!/usr/bin/env python
"""Train your own byte-level BPE tokenizer (GPT-2's pre-tokenization regex and byte alphabet) with the
Hugging Face `tokenizers` library, then pretrain with it:

    python train_tokenizer.py --files input.txt --vocab_size 4096 --output_dir tokenizers/shakespeare-4k
    python prepare_fineweb.py --data_files docs.jsonl --tokenizer tokenizers/shakespeare-4k --output_dir data/sk
    python run_pretrain.py --preset tiny --tokenizer tokenizers/shakespeare-4k --data_dir data/sk

The output directory holds Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json) with
<|endoftext|> (id 0) as the document separator; AutoTokenizer and nanogpt2.tokenizer.load_tokenizer load
it, the shard manifest records its fingerprint, and checkpoints trained with it carry it.
"""

import argparse
import sys

from nanogpt2.bpe_training import train_bpe_tokenizer
from nanogpt2.errors import cli
from nanogpt2.fileio import check_output_dir


@cli
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", required=True,
                        help=".txt (a file is one document), .jsonl/.json/.parquet (a row is one document) files")
    parser.add_argument("--vocab_size", type=int, default=8192,
                        help="tokens in all: 256 bytes + <|endoftext|> + merges (default 8192)")
    parser.add_argument("--output_dir", required=True, help="directory for tokenizer.json and tokenizer_config.json")
    parser.add_argument("--text_column", default="text", help="column holding the text in .jsonl/.json/.parquet files")
    parser.add_argument("--min_frequency", type=int, default=2, help="merge only pairs seen at least this often")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="write into an existing non-empty --output_dir (its tokenizer files are replaced)")
    args = parser.parse_args(argv)
    check_output_dir(args.output_dir, "--output_dir", args.overwrite_output_dir)
    tokenizer = train_bpe_tokenizer(args.files, args.vocab_size, args.output_dir, args.text_column,
                                    args.min_frequency)
    print(f"wrote {args.output_dir}: {len(tokenizer)} tokens")
    if len(tokenizer) < args.vocab_size:
        print(f"warning: the text has too few distinct pairs seen {args.min_frequency}+ times for "
              f"--vocab_size {args.vocab_size}; add text or lower --min_frequency", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
