"""Tokens/s of the prepare_fineweb.py pipeline (workers read and tokenize chunks of the file, the main
process cuts and writes shards with their sha256) with 1 and 2 processes, against raw tiktoken
`encode_ordinary_batch` (one thread) on the same documents, in the same run. A second peer, raw
tiktoken in 2 processes on documents already in memory, shows what 2 processes can gain on this
machine at the time (other load on the machine lowers it).

    python benchmarks/prepare_throughput.py --data_file ../shared/data/english_mix/english_mix.jsonl

Contenders run interleaved for --rounds rounds; the best round of each is reported. Besides wall-clock
tokens/s it prints tokens per CPU-second (this process and its workers together), which other load
disturbs less. For the estimate on many cores it also prints the main process's own CPU time per
token, in the pipeline and when it reads a `datasets` stream itself (--streaming): the rate at which
the main process alone would be saturated.
"""

import argparse
import json
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

from nanogpt2.documents import batched
from nanogpt2.prepare import Source, prepare_shards
from nanogpt2.tokenizer import load_tokenizer

DOCUMENTS: list[str] = []


def raw_tiktoken(part=slice(None)) -> int:
    """Tokens in DOCUMENTS[part] (+1 per document for <|endoftext|>), by tiktoken alone."""
    encoding = load_tokenizer().encoding
    return sum(1 + len(ids) for ids in encoding.encode_ordinary_batch(DOCUMENTS[part], num_threads=1))


def raw_tiktoken_two_processes() -> int:
    with multiprocessing.get_context("fork").Pool(2) as pool:  # the workers inherit DOCUMENTS
        return sum(pool.map(raw_tiktoken, [slice(0, None, 2), slice(1, None, 2)]))


def measure(work) -> dict:
    """Wall and CPU seconds (of this process, and of its finished children) of `work()`, and its tokens."""
    start_wall, start = time.perf_counter(), os.times()
    tokens = work()
    end = os.times()
    return {"tokens": tokens, "wall": time.perf_counter() - start_wall,
            "main_cpu": end.user + end.system - start.user - start.system,
            "children_cpu": end.children_user + end.children_system - start.children_user - start.children_system}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_file", required=True, help="a .jsonl file with a `text` column")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is reported")
    parser.add_argument("--shard_size", type=int, default=10_000_000, help="tokens per shard")
    parser.add_argument("--repeat", type=int, default=4,
                        help="use the documents this many times, so that the fixed set-up of a run (starting "
                             "processes, opening files) weighs about as little as on a real corpus")
    args = parser.parse_args(argv)
    with open(args.data_file, encoding="utf-8") as f:
        DOCUMENTS[:] = [json.loads(line)["text"] for line in f] * args.repeat
    workdir = Path(tempfile.mkdtemp())
    data_file = workdir / "documents.jsonl"
    with open(data_file, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": text}) + "\n" for text in DOCUMENTS)

    def pipeline(num_proc):
        out = workdir / f"shards-{num_proc}"
        try:
            return prepare_shards(Source(data_files=[str(data_file)]), out, shard_size=args.shard_size,
                                  num_proc=num_proc, progress=False)["total_tokens"]
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def streamed_main_process_work():
        """What the main process does per document with --streaming: read the stream, send batches."""
        import datasets

        stream = datasets.load_dataset("json", data_files=[str(data_file)], split="train", streaming=True)
        texts = (text for batch in stream.iter(batch_size=1000) for text in batch["text"])
        for batch in batched(texts, 256):
            pickle.dumps(tuple(batch))
        return total_tokens

    contenders = {"raw tiktoken encode_ordinary_batch, 1 thread": raw_tiktoken,
                  "prepare_fineweb pipeline, 1 process": lambda: pipeline(1),
                  "raw tiktoken, 2 processes (in memory)": raw_tiktoken_two_processes,
                  "prepare_fineweb pipeline, 2 processes": lambda: pipeline(2),
                  "streamed dataset: main process's reading": streamed_main_process_work}
    total_tokens = raw_tiktoken()
    runs = {name: [] for name in contenders}
    try:
        for _ in range(args.rounds):
            for name, work in contenders.items():
                runs[name].append(measure(work))
    finally:
        shutil.rmtree(workdir)
    for name, rows in runs.items():
        assert all(row["tokens"] == total_tokens for row in rows), f"{name} counted other tokens"

    def best(name, key):  # tokens per second of `key` time, best round
        return max(row["tokens"] / key(row) for row in runs[name])

    def wall(row):
        return row["wall"]

    def cpu(row):
        return row["main_cpu"] + row["children_cpu"]

    names = list(contenders)
    raw, one, raw_two, two = (best(name, wall) for name in names[:4])
    raw_cpu = best(names[0], cpu)
    print(f"{len(DOCUMENTS):,} documents ({args.repeat} x {args.data_file}), {total_tokens:,} tokens, "
          f"{os.cpu_count()} CPUs, best of {args.rounds} rounds")
    print(f"{'contender':<46} {'M tok/s':>8} {'vs raw':>7} {'M tok/CPU-s':>12} {'vs raw':>7}")
    for name in names[:4]:
        rate, per_cpu = best(name, wall), best(name, cpu)
        print(f"{name:<46} {rate / 1e6:8.2f} {rate / raw:6.2f}x {per_cpu / 1e6:12.2f} {per_cpu / raw_cpu:6.2f}x")
    print(f"pipeline, 1 process vs raw tiktoken: {one / raw:.2f} (target >= 0.85); "
          f"2 processes vs 1: {two / one:.2f}x (target >= 1.7; raw tiktoken's: {raw_two / raw:.2f}x)")
    for label, name in (("pipeline, 2 processes", names[3]), ("--streaming (read + send)", names[4])):
        main_rate = best(name, lambda row: row["main_cpu"])
        print(f"main process, {label}: {1e6 / main_rate * 1e3:.1f} CPU-ms per M tokens, saturated at "
              f"{main_rate / 1e6:.0f} M tokens/s")


if __name__ == "__main__":
    main()
