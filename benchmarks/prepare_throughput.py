"""Tokens/s of the prepare_fineweb.py pipeline (read, tokenize in a process pool, write shards) with 1 and 2
processes, against raw tiktoken `encode_ordinary_batch` on the same documents, in the same run.

    python benchmarks/prepare_throughput.py --data_file ../shared/data/english_mix/english_mix.jsonl
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from nanogpt2.prepare import Source, prepare_shards
from nanogpt2.tokenizer import load_tokenizer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_file", required=True, help="a .jsonl file with a `text` column")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is reported")
    parser.add_argument("--shard_size", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=4,
                        help="use the documents this many times (about 0.25 s of set-up per run is then a small "
                             "part, as it is for a real 10B-token corpus)")
    args = parser.parse_args(argv)
    with open(args.data_file, encoding="utf-8") as f:
        documents = [json.loads(line)["text"] for line in f] * args.repeat
    workdir = Path(tempfile.mkdtemp())
    data_file = workdir / "documents.jsonl"
    with open(data_file, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": text}) + "\n" for text in documents)
    encoding = load_tokenizer().encoding

    def raw_tiktoken(threads):
        start = time.perf_counter()
        tokens = sum(1 + len(ids) for ids in encoding.encode_ordinary_batch(documents, num_threads=threads))
        return tokens / (time.perf_counter() - start)

    def pipeline(num_proc):
        out = Path(tempfile.mkdtemp())
        try:
            start = time.perf_counter()
            manifest = prepare_shards(Source(data_files=[str(data_file)]), out, shard_size=args.shard_size,
                                      num_proc=num_proc, progress=False)
            return manifest["total_tokens"] / (time.perf_counter() - start)
        finally:
            shutil.rmtree(out)

    contenders = {"raw tiktoken, 1 thread": lambda: raw_tiktoken(1),
                  "prepare_fineweb pipeline, 1 process": lambda: pipeline(1),
                  "prepare_fineweb pipeline, 2 processes": lambda: pipeline(2)}
    rates = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            rates[name].append(run())
    shutil.rmtree(workdir)
    best = {name: max(values) for name, values in rates.items()}
    raw = best["raw tiktoken, 1 thread"]
    one = best["prepare_fineweb pipeline, 1 process"]
    print(f"{len(documents):,} documents ({args.repeat} x {args.data_file})")
    for name, rate in best.items():
        print(f"{name:<40} {rate / 1e6:7.2f} M tokens/s   {rate / raw:5.2f}x raw tiktoken")
    print(f"pipeline per process vs raw tiktoken: {one / raw:.2f} (target >= 0.85); "
          f"2 processes vs 1: {best['prepare_fineweb pipeline, 2 processes'] / one:.2f}x (target >= 1.7)")


if __name__ == "__main__":
    main()
