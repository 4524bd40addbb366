"""Peak memory of prepare_fineweb.py as the input grows: the summed RSS of the main process and its workers,
sampled every 0.1 s, on inputs made here from english_mix (its documents repeated to the size asked) as
.jsonl, .jsonl.gz and parquet.

    python benchmarks/prepare_memory.py --source ../shared/data/english_mix/english_mix.jsonl \
        --sizes_gb 0.5 1 --formats jsonl parquet jsonl.gz --num_proc 2

Each run is `prepare_fineweb.py --data_files INPUT --num_proc N --shard_size 100000000` (FineWeb-Edu's
shard size) in a fresh process. Printed per run: input bytes, tokens, seconds, tokens/s, the peak memory of
the process tree (the sum of its processes' proportional set sizes, PSS: forked workers share the main
process's pages, which a sum of RSS would count once per process), the peak RSS of the main process alone,
and the largest worker's. The inputs and
shards go under --scratch and are removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def make_input(source: Path, target: Path, size: int, fmt: str) -> None:
    """`source`'s lines repeated until `size` bytes of JSON lines, written as `fmt`."""
    lines = source.read_bytes().splitlines(keepends=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        texts = [json.loads(line)["text"] for line in lines]
        with pq.ParquetWriter(target, pa.schema([("text", pa.string())])) as writer:
            written = 0
            while written < size:
                for start in range(0, len(texts), 1000):  # row groups of 1,000 documents, as FineWeb-Edu's
                    batch = texts[start : start + 1000]
                    writer.write_table(pa.table({"text": batch}))
                    written += sum(len(t) for t in batch)
        return
    opener = gzip.open(target, "wb", compresslevel=1) if fmt == "jsonl.gz" else open(target, "wb")
    with opener as f:
        written = 0
        while written < size:
            for line in lines:
                f.write(line)
            written += sum(len(line) for line in lines)


def run(data_file: Path, output_dir: Path, num_proc: int, shard_size: int) -> dict:
    command = [sys.executable, str(REPO / "prepare_fineweb.py"), "--data_files", str(data_file), "--output_dir",
               str(output_dir), "--num_proc", str(num_proc), "--shard_size", str(shard_size)]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    main = psutil.Process(process.pid)
    peak_total = peak_main = peak_worker = 0
    while process.poll() is None:
        try:
            children = main.children(recursive=True)
            main_rss = main.memory_info().rss
            worker_rss = [c.memory_info().rss for c in children]
            # the tree's memory: proportional set sizes (forked workers share the main process's pages)
            total = sum(p.memory_full_info().pss for p in [main, *children])
        except psutil.Error:  # a process ended between the listing and the reading
            continue
        peak_main, peak_total = max(peak_main, main_rss), max(peak_total, total)
        peak_worker = max([peak_worker, *worker_rss])
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"prepare_fineweb.py failed:\n{err[-3000:]}")
    manifest = json.loads((output_dir / "manifest.json").read_text())
    return {"input_bytes": data_file.stat().st_size, "tokens": manifest["total_tokens"], "seconds": seconds,
            "peak_total": peak_total, "peak_main": peak_main, "peak_worker": peak_worker}


def describe(row: dict, num_proc: int) -> str:
    rate = row["tokens"] / row["seconds"] / 1e6
    return (f"{row['format']}, {row['size_gb']} GB of text, {row['input_bytes'] / 1e9:.2f} GB on disk, "
            f"{row['tokens'] / 1e6:,.1f}M tokens, --num_proc {num_proc}: {row['seconds']:.0f} s, {rate:.2f}M "
            f"tokens/s; peak {row['peak_total'] / 2**20:,.0f} MiB in all (PSS; RSS of the main "
            f"{row['peak_main'] / 2**20:,.0f} MiB, largest worker {row['peak_worker'] / 2**20:,.0f} MiB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "english_mix" / "english_mix.jsonl"))
    parser.add_argument("--sizes_gb", nargs="+", type=float, default=[0.5, 1.0])
    parser.add_argument("--formats", nargs="+", default=["jsonl"], choices=["jsonl", "jsonl.gz", "parquet"])
    parser.add_argument("--num_proc", type=int, default=2)
    parser.add_argument("--shard_size", type=int, default=100_000_000)
    parser.add_argument("--scratch", default="/tmp/nanogpt2-prepare-memory")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in args.sizes_gb:
            for fmt in args.formats:
                data_file = scratch / f"input-{size}GB.{fmt}"
                if not data_file.exists():
                    make_input(Path(args.source), data_file, int(size * 1e9), fmt)
                output_dir = scratch / f"shards-{size}GB-{fmt}"
                shutil.rmtree(output_dir, ignore_errors=True)
                row = {"format": fmt, "size_gb": size, **run(data_file, output_dir, args.num_proc, args.shard_size)}
                shutil.rmtree(output_dir, ignore_errors=True)
                rows.append(row)
                print(describe(row, args.num_proc), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n| input | text | on disk | tokens | s | M tokens/s | peak memory, all processes (PSS) | main (RSS) "
          "| largest worker (RSS) |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mib = {key: f"{r[key] / 2**20:,.0f} MiB" for key in ("peak_total", "peak_main", "peak_worker")}
        print(f"| {r['format']} | {r['size_gb']} GB | {r['input_bytes'] / 1e9:.2f} GB | {r['tokens'] / 1e6:,.1f}M | "
              f"{r['seconds']:.0f} | {r['tokens'] / r['seconds'] / 1e6:.2f} | {mib['peak_total']} | "
              f"{mib['peak_main']} | "
              f"{mib['peak_worker']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
