#!/usr/bin/env python
"""FineWeb-Edu (or any text dataset) -> GPT-2 token shards for run_pretrain.py --data_dir.

    python prepare_fineweb.py                          # FineWeb-Edu sample-10BT (online) -> edu_fineweb10B/, 100M/shard
    python prepare_fineweb.py --streaming --max_tokens 10000000    # try it on the first 10M tokens
    python prepare_fineweb.py --data_files docs.jsonl --output_dir data/docs --shard_size 1000000   # offline
    python prepare_fineweb.py --data_files fineweb-edu/sample/10BT/ --output_dir edu_fineweb10B  # its parquet files

Shard 0 is validation, the rest training. Every document is prefixed with <|endoftext|> and encoded with
encode_ordinary (special-token text inside documents is plain text). Any --num_proc gives the same bytes.
A rerun keeps intact shards untouched, rebuilds missing or damaged ones and continues an interrupted run.
The shard format and manifest.json are described in the README ("Data: FineWeb-Edu shards").
"""

import argparse
import os
import sys

from nanogpt2.errors import DataError, cli
from nanogpt2.prepare import Source, prepare_shards, verify_prepared


@cli
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", default="HuggingFaceFW/fineweb-edu",
                        help="Hub dataset, needs internet (default: %(default)s)")
    parser.add_argument("--dataset_config_name", default="sample-10BT",
                        help="the Hub dataset's config (default: %(default)s)")
    parser.add_argument("--split", default="train", help="the Hub dataset's split")
    parser.add_argument("--revision", default=None,
                        help="Hub dataset branch, tag or commit (default main); the commit read is in the manifest")
    parser.add_argument("--data_files", nargs="+",
                        help="local .jsonl/.json/.parquet files (one document per row; also .jsonl.gz and .jsonl.zst) "
                             "or .txt files (one document each), directories of them or glob patterns (quoted), "
                             "instead of the Hub; works offline, streamed in bounded memory")
    parser.add_argument("--text_column", default="text", help="the column that holds the documents' text")
    parser.add_argument("--output_dir", default="edu_fineweb10B",
                        help="where the shards and manifest.json go (default: %(default)s)")
    parser.add_argument("--shard_size", type=int, default=100_000_000, help="tokens per shard (default 100M)")
    parser.add_argument("--num_proc", type=int, default=max(1, os.cpu_count() or 1),
                        help="tokenizer processes (default: one per CPU core)")
    parser.add_argument("--max_tokens", type=int, default=None,
                        help="stop after this many tokens (to try it; with a Hub dataset add --streaming, or the "
                             "whole dataset is downloaded first)")
    parser.add_argument("--streaming", action="store_true",
                        help="Hub only: tokenize while downloading, without datasets' Arrow copy on disk; the "
                             "main process then reads the stream (local files are read by the workers)")
    parser.add_argument("--tokenizer", default=None,
                        help="a tokenizer.json directory, e.g. from train_tokenizer.py (default: GPT-2's)")
    parser.add_argument("--prefix", default=None,
                        help="shard file name prefix (default: edufineweb for the Hub, shard for local files)")
    parser.add_argument("--verify", action="store_true",
                        help="only check --output_dir against its manifest.json (every shard's size, header and "
                             "sha256) and exit: 0 when intact, 1 naming the first shard that is not")
    args = parser.parse_args(argv)
    if args.verify:
        manifest = verify_prepared(args.output_dir)
        if manifest is None:
            raise DataError(f"--output_dir {args.output_dir} has no manifest.json; nothing to verify")
        print(f"{args.output_dir}: {len(manifest['shards'])} shards intact, {manifest['total_tokens']:,} tokens")
        return 0
    source = Source(None if args.data_files else args.dataset_name,
                    None if args.data_files else args.dataset_config_name, args.split, args.data_files,
                    args.text_column, args.streaming, args.revision)
    prefix = args.prefix or ("shard" if args.data_files else "edufineweb")
    manifest = prepare_shards(source, args.output_dir, args.tokenizer, args.shard_size, args.num_proc,
                              args.max_tokens, prefix)
    skipped = manifest.get("skipped_documents", 0)
    print(f"{args.output_dir}: {len(manifest['shards'])} shards, {manifest['total_tokens']:,} tokens"
          + (f" ({skipped:,} rows without text skipped: null, empty or not a string)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
