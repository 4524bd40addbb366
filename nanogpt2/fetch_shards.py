"""Download ready-made GPT-2-tokenized FineWeb / FineWeb-Edu shards (llm.c format) from the Hub, to train
without tokenizing: `run_pretrain.py --data_dir DIR` reads them as they are.

    python -m nanogpt2.fetch_shards finewebedu10B --output_dir finewebedu10B            # all 103 train shards
    python -m nanogpt2.fetch_shards fineweb10B --output_dir fineweb10B --num_train_shards 9   # ~0.9B tokens

The sets are those of modded-nanogpt's data/cached_fineweb10B.py and cached_finewebedu10B.py (Hub dataset
repositories by kjj0): one validation shard and 103 train shards of about 100M tokens (200 MB) each.
huggingface_hub resumes an interrupted download and skips finished files, so rerunning is safe.
"""

from __future__ import annotations

import argparse
import sys

from .errors import DataError, cli
from .sources import download_hub_files

# name: (Hub dataset repository, file name prefix, train shards), from modded-nanogpt's download scripts
SHARD_SETS = {
    "fineweb10B": ("kjj0/fineweb10B-gpt2", "fineweb", 103),
    "finewebedu10B": ("kjj0/finewebedu10B-gpt2", "finewebedu", 103),
}


def shard_filenames(name: str, num_train_shards: int | None = None) -> list[str]:
    """The validation shard, then train shards 1..num_train_shards (default all) of the set `name`."""
    if name not in SHARD_SETS:
        raise DataError(f"unknown shard set {name!r}; choose one of {', '.join(SHARD_SETS)}")
    _, prefix, available = SHARD_SETS[name]
    count = available if num_train_shards is None else num_train_shards
    if not 1 <= count <= available:
        raise DataError(f"--num_train_shards must be between 1 and {available} for {name} (got {count})")
    return [f"{prefix}_val_000000.bin"] + [f"{prefix}_train_{i:06d}.bin" for i in range(1, count + 1)]


def fetch_shards(name: str, output_dir, num_train_shards: int | None = None, progress=None):
    """Download (or resume) the shards of `name` into `output_dir`; their paths."""
    files = shard_filenames(name, num_train_shards)
    return download_hub_files(SHARD_SETS[name][0], files, output_dir, repo_type="dataset", progress=progress)


@cli
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanogpt2.fetch_shards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(SHARD_SETS), help="the shard set")
    parser.add_argument("--output_dir", default=None, help="where the shards go (default: the set's name)")
    parser.add_argument("--num_train_shards", type=int, default=None,
                        help="download only the first N train shards (default: all 103)")
    args = parser.parse_args(argv)
    output_dir = args.output_dir or args.name
    paths = fetch_shards(args.name, output_dir, args.num_train_shards,
                         progress=lambda path: print(f"have {path}", flush=True))
    print(f"{len(paths)} shards in {output_dir}; train with: run_pretrain.py --data_dir {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
