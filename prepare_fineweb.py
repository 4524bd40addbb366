#!/usr/bin/env python
"""FineWeb-Edu (or any text dataset) -> GPT-2 token shards for run_pretrain.py --data_dir.

    python prepare_fineweb.py                                        # FineWeb-Edu sample-10BT (online), 100M-token shards
    python prepare_fineweb.py --data_files docs.jsonl --output_dir data/docs --shard_size 1000000
    python prepare_fineweb.py --max_tokens 10000000                  # try it on the first 10M tokens

Shard 0 is validation, the rest training. Every document is prefixed with <|endoftext|> and encoded with
encode_ordinary (special-token text inside documents is plain text). Rerunning skips intact shards.
The shard format and manifest.json are described in nanogpt2/shards.py and the README.
"""

import argparse
import os
import sys

from nanogpt2.data import DataError
from nanogpt2.prepare import Source, prepare_shards


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", default="HuggingFaceFW/fineweb-edu", help="Hub dataset")
    parser.add_argument("--dataset_config_name", default="sample-10BT", help="the Hub dataset's config")
    parser.add_argument("--split", default="train")
    parser.add_argument("--revision", default=None, help="Hub dataset revision (recorded in the manifest)")
    parser.add_argument("--data_files", nargs="+", help="local .jsonl/.json/.parquet/.txt files instead of the Hub")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--output_dir", default="edu_fineweb10B")
    parser.add_argument("--shard_size", type=int, default=100_000_000, help="tokens per shard")
    parser.add_argument("--num_proc", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="tokenizer processes")
    parser.add_argument("--max_tokens", type=int, default=None, help="stop after this many tokens")
    parser.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    parser.add_argument("--tokenizer", default=None, help="HF tokenizer.json directory (default: GPT-2's)")
    parser.add_argument("--prefix", default=None, help="shard file prefix (default: edufineweb, or 'shard' for local files)")
    args = parser.parse_args(argv)
    source = Source(None if args.data_files else args.dataset_name,
                    None if args.data_files else args.dataset_config_name, args.split, args.data_files,
                    args.text_column, args.streaming, args.revision)
    prefix = args.prefix or ("shard" if args.data_files else "edufineweb")
    try:
        manifest = prepare_shards(source, args.output_dir, args.tokenizer, args.shard_size, args.num_proc,
                                  args.max_tokens, prefix)
    except (DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.output_dir}: {len(manifest['shards'])} shards, {manifest['total_tokens']:,} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
