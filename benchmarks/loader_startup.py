"""Start-up of the shard loaders as the data grows: time to the first batch, bytes read, RSS and open files
per rank, on synthetic shard sets of 0.5B, 2B and 10B tokens, with 1 and 2 processes.

    python benchmarks/loader_startup.py                               # this checkout
    git archive 9ce8448 | tar -x -C /tmp/before                       # the code before issue 25, to compare
    python benchmarks/loader_startup.py --nanogpt2 /tmp/before --label before

A set is one validation shard and N training shards of --shard_tokens tokens (100M, as prepare_fineweb.py
writes FineWeb-Edu) with valid nanogpt2 headers and a manifest.json; the tokens are a hole of a sparse file
(zeros: one document per shard, nothing on disk). The header statistics (largest id, documents, sha256 of
the tokens) and the manifest's checksums are the true ones of those zeros, so both the old loader (which
reads every token at start-up) and the new one (which trusts headers, then checks the shard the first
window lies in) accept them.

Each rank is a fresh process that imports nanogpt2 first (not timed), then does what run_pretrain.py's
build_loaders does, and reads one batch:
    open_token_shards(train), open_token_shards(val), TrainLoader(rank, world), ValidationLoader, next_batch()
and reports: seconds to that first batch; bytes read (read() calls, /proc/self/io rchar, plus file pages
mapped into the process, RssFile: pages touched through memory maps; the kernel may already have dropped
some of them again, so for the old loader this is a lower bound); the peak RSS added (VmHWM minus the RSS
before); and the open files (entries of /proc/self/fd) added. With 2 processes both ranks start at once
and the slower one is reported. The last lines print how each figure grows from the smallest set to the
largest (target of issue 25: time to first batch and RSS within 2x, first batch under 2 s at 10B tokens).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"0.5B": 500_000_000, "2B": 2_000_000_000, "10B": 10_000_000_000}

RANK_SCRIPT = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from nanogpt2.data import TrainLoader, ValidationLoader, open_token_shards

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM", "RssFile")}

def rchar():
    return int(dict(line.split(": ") for line in open("/proc/self/io"))["rchar"])

data, rank, world = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS now
    f.write("5")
before, read_before, files_before = status(), rchar(), len(os.listdir("/proc/self/fd"))
start = time.perf_counter()
train = open_token_shards(data, "train")
val = open_token_shards(data, "val")
loader = TrainLoader(train, 16, 1024, rank=rank, world_size=world, seed=1337)
ValidationLoader(val, 16, 1024, 20, rank, world)
x, y = loader.next_batch()
seconds = time.perf_counter() - start
after = status()
print(json.dumps({"seconds": seconds, "shards": len(train) + len(val),
                  "read_bytes": rchar() - read_before + max(0, after["RssFile"] - before["RssFile"]),
                  "rss_added": after["VmHWM"] - before["VmRSS"],
                  "files_added": len(os.listdir("/proc/self/fd")) - files_before}))
"""


def make_set(directory: Path, total_tokens: int, shard_tokens: int) -> None:
    """1 val + ceil(total / shard_tokens) train shards of zeros as sparse files, true headers, a manifest."""
    sys.path.insert(0, str(REPO))
    from nanogpt2.prepare import MANIFEST, MANIFEST_VERSION
    from nanogpt2.shards import _HEADER, _STATS, HEADER_SIZE, MAGIC, STATS_MAGIC, VERSION
    from nanogpt2.tokenizer import load_tokenizer

    identity = load_tokenizer().identity
    zeros = bytes(1 << 24)
    tokens_digest, file_digest = hashlib.sha256(), None
    for _ in range(2 * shard_tokens // len(zeros)):  # the tokens of every shard are the same zeros
        tokens_digest.update(zeros)
    tokens_digest.update(bytes(2 * shard_tokens % len(zeros)))
    header = _HEADER.pack(MAGIC, VERSION, 2, shard_tokens, identity["vocab_size"], identity["eot_token_id"],
                          identity["fingerprint"].encode())
    header += _STATS.pack(STATS_MAGIC, 0, 0, 1, tokens_digest.digest())  # largest id 0, one document
    header = header.ljust(HEADER_SIZE, b"\0")
    file_digest = hashlib.sha256(header)
    for _ in range(2 * shard_tokens // len(zeros)):
        file_digest.update(zeros)
    file_digest.update(bytes(2 * shard_tokens % len(zeros)))
    directory.mkdir(parents=True)
    shards = []
    for index in range(1 + -(-total_tokens // shard_tokens)):
        name = f"synthetic_{'val' if index == 0 else 'train'}_{index:06d}.bin"
        with open(directory / name, "wb") as f:
            f.write(header)
            f.truncate(HEADER_SIZE + 2 * shard_tokens)  # a hole: no blocks on disk
        shards.append({"file": name, "split": "val" if index == 0 else "train", "num_tokens": shard_tokens,
                       "sha256": file_digest.hexdigest(), "max_token_id": 0,
                       "tokens_sha256": tokens_digest.hexdigest()})
    manifest = {"manifest_version": MANIFEST_VERSION, "settings": {"synthetic": True}, "source": {},
                "shards": shards, "complete": True, "total_tokens": shard_tokens * (len(shards) - 1)}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def run_ranks(package_root: Path, directory: Path, processes: int, timeout: float) -> dict:
    runs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(package_root), str(directory), str(rank),
                              str(processes)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank in range(processes)]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=timeout)
        if run.returncode != 0:
            raise SystemExit(f"a rank failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {key: max(r[key] for r in results) for key in results[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--shard_tokens", type=int, default=100_000_000)
    parser.add_argument("--nanogpt2", default=str(REPO), help="the checkout whose nanogpt2 package is measured")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--scratch", default="/tmp/nanogpt2-loader-startup",
                        help="where the sparse sets go (removed at the end unless --keep)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--output_file", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    scratch = Path(args.scratch)
    rows = []
    try:
        for size in args.sizes:
            directory = scratch / f"{size}-{args.shard_tokens}"
            if not directory.is_dir():
                make_set(directory, SIZES[size], args.shard_tokens)
            for processes in args.processes:
                row = {"label": args.label, "size": size, "processes": processes,
                       **run_ranks(Path(args.nanogpt2), directory, processes, args.timeout)}
                rows.append(row)
                print(f"{args.label}: {size} tokens ({row['shards']} shards), {processes} process(es): first batch "
                      f"{row['seconds']:.2f} s, read {row['read_bytes'] / 2**20:,.1f} MiB, RSS +"
                      f"{row['rss_added'] / 2**20:,.1f} MiB, open files +{row['files_added']}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n| code | tokens | shards | processes | first batch (s) | read per rank (MiB) | RSS added (MiB) "
          "| open files added |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['size']} | {r['shards']} | {r['processes']} | {r['seconds']:.2f} | "
              f"{r['read_bytes'] / 2**20:,.1f} | {r['rss_added'] / 2**20:,.1f} | {r['files_added']} |")
    print()
    for processes in args.processes:
        mine = [r for r in rows if r["processes"] == processes]
        if len(mine) >= 2:
            small, large = mine[0], mine[-1]
            growth = {key: large[key] / max(small[key], 1e-9) for key in ("seconds", "read_bytes", "rss_added",
                                                                          "files_added")}
            print(f"{args.label}, {processes} process(es), {small['size']} -> {large['size']} tokens "
                  f"({SIZES[large['size']] / SIZES[small['size']]:.0f}x the data): first batch "
                  f"{growth['seconds']:.2f}x, bytes read {growth['read_bytes']:.2f}x, RSS added "
                  f"{growth['rss_added']:.2f}x, open files {growth['files_added']:.2f}x")
    if args.output_file:
        Path(args.output_file).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
