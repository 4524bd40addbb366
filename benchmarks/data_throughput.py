"""Can the data keep up with a GPU? Tokens/s of the three ways tokens reach training, each in one process,
and how many processes of this machine's speed keep up with one GPU at --gpu_tokens_per_sec (default
578K tokens/s: GPT-2 124M at 50% MFU on an H100/H200, see docs/benchmarks.md "Training throughput").

    python benchmarks/data_throughput.py --data_file ../shared/data/english_mix/english_mix.jsonl

- prepare: `prepare_shards` (prepare_fineweb.py's engine) with --num_proc 1: read the .jsonl, tokenize, cut
  and write shards with their statistics and sha256. Done once, before training (pre-tokenized shards).
- streaming loader: `StreamingTrainLoader` (run_pretrain.py --streaming / --dataset_name) over the same
  file through a streaming `datasets` dataset: read, shuffle buffer, tokenize, pack (B=16, T=1024); this
  work runs during training, in each rank's prefetch thread.
- shard loader: `TrainLoader` over the prepared shards (B=16, T=1024): what training from shards costs.

Contenders run interleaved for --rounds rounds (best round reported); each also prints tokens per
CPU-second of this process (and its workers), which other load on the machine disturbs less: it is the rate
of one process that has a core to itself. The processes needed for one GPU are given from both rates.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nanogpt2.data import StreamingTrainLoader, TrainLoader, open_token_shards  # noqa: E402
from nanogpt2.prepare import Source, prepare_shards  # noqa: E402
from nanogpt2.sources import load_hub_text_dataset  # noqa: E402
from nanogpt2.tokenizer import load_tokenizer  # noqa: E402


def timed(work) -> dict:
    start_wall, start = time.perf_counter(), os.times()
    tokens = work()
    end = os.times()
    cpu = end.user + end.system - start.user - start.system
    cpu += end.children_user + end.children_system - start.children_user - start.children_system
    return {"tokens": tokens, "wall": time.perf_counter() - start_wall, "cpu": cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_file", default=str(REPO.parent / "shared/data/english_mix/english_mix.jsonl"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=150, help="batches of 16 x 1024 tokens per loader round")
    parser.add_argument("--gpu_tokens_per_sec", type=float, default=578_000)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    scratch = Path(tempfile.mkdtemp(prefix="nanogpt2-data-throughput-"))
    tokenizer = load_tokenizer()
    batch, seq = 16, 1024

    def prepare():
        out = scratch / f"shards-{time.monotonic_ns()}"
        manifest = prepare_shards(Source(data_files=[args.data_file]), out, shard_size=1_000_000, num_proc=1,
                                  progress=False)
        return manifest["total_tokens"]

    def streaming():
        stream = load_hub_text_dataset(None, data_files=[args.data_file], streaming=True)
        loader = StreamingTrainLoader(stream, tokenizer, batch, seq, shuffle_buffer=1000)
        for _ in range(args.batches):
            loader.next_batch()
        return args.batches * batch * seq

    shards_dir = scratch / "for-loader"
    prepare_shards(Source(data_files=[args.data_file]), shards_dir, shard_size=1_000_000, progress=False)
    train = open_token_shards(shards_dir, "train")

    def shard_loader():
        loader = TrainLoader(train, batch, seq, seed=int(time.monotonic_ns() % 1000))
        for _ in range(args.batches):
            loader.next_batch()
        return args.batches * batch * seq

    contenders = {"prepare (1 process)": prepare, "streaming loader (1 process)": streaming,
                  "shard loader (1 process)": shard_loader}
    best = {}
    try:
        for round_ in range(args.rounds):
            for name, work in contenders.items():
                result = timed(work)
                rate = result["tokens"] / result["wall"]
                print(f"round {round_ + 1}: {name}: {result['tokens'] / 1e6:.1f}M tokens in {result['wall']:.1f} s "
                      f"= {rate / 1e6:.2f}M tokens/s ({result['tokens'] / max(result['cpu'], 1e-9) / 1e6:.2f}M per "
                      "CPU-second)", flush=True)
                if name not in best or rate > best[name]["rate"]:
                    best[name] = {**result, "rate": rate}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    gpu = args.gpu_tokens_per_sec
    print(f"\n| path | M tokens/s, 1 process (wall) | M tokens per CPU-second | processes for 1 GPU at "
          f"{gpu / 1e3:.0f}K tokens/s: by wall / by CPU-second | for 8 GPUs, by CPU-second |\n|---|---|---|---|---|")
    for name, r in best.items():
        per_cpu = r["tokens"] / max(r["cpu"], 1e-9)
        worst = math.ceil(gpu / min(r["rate"], per_cpu))
        print(f"| {name} | {r['rate'] / 1e6:.2f} | {per_cpu / 1e6:.2f} | {gpu / r['rate']:.2f} / {gpu / per_cpu:.2f} "
              f"-> {worst} | {8 * gpu / per_cpu:.2f} -> {math.ceil(8 * gpu / per_cpu)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
