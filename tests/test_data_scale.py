"""Data at FineWeb scale: start-up from shard headers (O(shards), not O(tokens)), corruption still caught
before training reads it, older/foreign shards scanned with a note, and a bounded number of open files."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import nanogpt2.shards
from nanogpt2.data import TrainLoader, ValidationLoader, open_token_shards
from nanogpt2.errors import DataError
from nanogpt2.prepare import MANIFEST, Source, prepare_shards, verify_prepared
from nanogpt2.shards import HEADER_SIZE, TokenShard, read_header, token_statistics, write_shard
from nanogpt2.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
EOT = 50256


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, english_mix_file):
    out = tmp_path_factory.mktemp("shards")
    manifest = prepare_shards(Source(data_files=[str(english_mix_file)]), out, shard_size=60_000, num_proc=1,
                              max_tokens=300_000, progress=False)
    return out, manifest


@pytest.fixture
def copy_of(prepared, tmp_path):
    """A copy of the prepared directory that a test may damage."""
    out, _ = prepared
    for file in out.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    return tmp_path, json.loads((tmp_path / MANIFEST).read_text())


def test_header_and_manifest_record_count_largest_id_documents_and_checksum(prepared):
    out, manifest = prepared
    for entry in manifest["shards"]:
        header = read_header(out / entry["file"])
        tokens = np.fromfile(out / entry["file"], dtype="<u2", offset=HEADER_SIZE)
        stats = token_statistics(tokens, EOT)
        assert (header["num_tokens"], header["max_token_id"], header["documents"], header["tokens_sha256"]) == (
            len(tokens), int(tokens.max()), stats["documents"], stats["tokens_sha256"])
        starts_inside = entry["start"]["offset"] > 0  # the loader counts the piece of a document at the start too
        assert header["documents"] == entry["num_documents"] + starts_inside
        assert (entry["max_token_id"], entry["tokens_sha256"]) == (header["max_token_id"], header["tokens_sha256"])
    assert manifest["manifest_version"] == 2


def test_start_up_reads_headers_only_and_the_first_batch_one_shard(prepared, monkeypatch):
    scans = []
    original = TokenShard.scan

    def counted(self, *args, **kwargs):
        scans.append(self.path.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TokenShard, "scan", counted)
    train = open_token_shards(prepared[0], "train", tokenizer=load_tokenizer())
    loader = TrainLoader(train, 4, 64, seed=5)
    ValidationLoader(open_token_shards(prepared[0], "val"), 4, 64, num_batches=2)
    assert scans == [] and len(train) == 4 and loader.total_tokens == 240_000
    loader.next_batch()
    assert len(scans) == 1  # the shard the first window lies in: located and checked, nothing else


def test_tampered_tokens_are_caught_with_the_shard_named_before_training_reads_them(copy_of):
    data, manifest = copy_of
    victim = data / "shard_train_000002.bin"
    raw = bytearray(victim.read_bytes())
    raw[HEADER_SIZE + 2 * 1000 : HEADER_SIZE + 2 * 1001] = (60000).to_bytes(2, "little")  # an id no model has
    victim.write_bytes(bytes(raw))
    train = open_token_shards(data, "train")  # headers only: start-up does not read the tokens
    loader = TrainLoader(train, 4, 64, seed=5)
    with pytest.raises(DataError) as caught:
        for _ in range(loader.windows_per_epoch):
            x, y = loader.next_batch()
            assert int(x.max()) < 50257 and int(y.max()) < 50257
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{victim}: its tokens do not match the sha256 in its header")
    with pytest.raises(DataError, match="shard_train_000002.bin no longer matches its sha256"):
        verify_prepared(data)  # the full check (prepare_fineweb.py --verify, the background pass) names it too


def test_header_that_disagrees_with_the_manifest_is_refused_at_start_up(copy_of):
    data, manifest = copy_of
    manifest["shards"][3]["max_token_id"] -= 1
    (data / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"shard .*shard_train_000003.bin: its header says max_token_id \d+, "
                                        r"manifest.json says \d+: changed after prepare"):
        open_token_shards(data, "train")
    header = bytearray((data / "shard_train_000001.bin").read_bytes()[:HEADER_SIZE])
    header[200] = 1  # padding that must stay zero
    path = data / "shard_train_000001.bin"
    path.write_bytes(bytes(header) + path.read_bytes()[HEADER_SIZE:])
    with pytest.raises(DataError, match="shard_train_000001.bin has a damaged header"):
        read_header(path)


def test_older_shards_without_statistics_are_scanned_once_with_a_note(prepared, copy_of, capsys):
    data, manifest = copy_of
    for entry in manifest["shards"][1:3]:  # as written before the header had statistics: zeros there
        path = data / entry["file"]
        raw = bytearray(path.read_bytes())
        raw[96:HEADER_SIZE] = bytes(HEADER_SIZE - 96)
        path.write_bytes(bytes(raw))
    old = open_token_shards(data, "train")
    note = capsys.readouterr().err.strip().splitlines()
    assert [s.scanned for s in old] == [True, True, False, False]
    assert len(note) == 1 and "2 of 4 train shards" in note[0] and "older nanogpt2" in note[0]
    assert [s.max_token_id for s in old] == [s.max_token_id for s in open_token_shards(prepared[0], "train")]
    new, before = TrainLoader(open_token_shards(prepared[0], "train"), 4, 64, seed=9), TrainLoader(old, 4, 64, seed=9)
    for _ in range(8):
        assert np.array_equal(new.next_batch()[0], before.next_batch()[0])
    raw = bytearray((data / "shard_train_000001.bin").read_bytes())
    raw[HEADER_SIZE : HEADER_SIZE + 2] = (60000).to_bytes(2, "little")
    (data / "shard_train_000001.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="shard_train_000001.bin holds token id 60000 >= vocabulary size 50257"):
        open_token_shards(data, "train")  # no statistics: the scan on opening still catches bad ids


def test_slices_come_from_a_bounded_set_of_memory_maps(prepared, monkeypatch):
    monkeypatch.setattr(nanogpt2.shards._OPEN_MAPS, "capacity", 2)
    nanogpt2.shards._OPEN_MAPS.clear()
    shards = open_token_shards(prepared[0], "train")
    assert len(nanogpt2.shards._OPEN_MAPS) == 0
    whole = [np.fromfile(s.path, dtype="<u2", offset=HEADER_SIZE) for s in shards]
    for _ in range(2):
        for shard, tokens in zip(shards, whole):
            assert np.array_equal(shard[100:5000], tokens[100:5000]) and np.array_equal(np.asarray(shard), tokens)
            assert len(nanogpt2.shards._OPEN_MAPS) <= 2


FD_LIMIT_SCRIPT = textwrap.dedent("""
    import os, sys
    from nanogpt2.data import TrainLoader, ValidationLoader, open_token_shards
    data = sys.argv[1]
    for rank in range(2):  # two processes (forked after the imports), each under the limit
        if os.fork() == 0:
            train = open_token_shards(data, "train")
            loader = TrainLoader(train, 4, 32, rank=rank, world_size=2, seed=1)
            for _ in range(loader.windows_per_epoch // 2 + 5):  # every shard, into the next epoch
                loader.next_batch()
            batches = sum(1 for _ in ValidationLoader(open_token_shards(data, "val"), 4, 32, 10, rank, 2))
            print(rank, len(train), loader.epoch, batches, len(os.listdir("/proc/self/fd")), flush=True)
            os._exit(0)
    assert all(os.wait()[1] == 0 for _ in range(2))
""")


@pytest.mark.slow
def test_1100_shards_train_under_ulimit_n_1024_in_two_processes(tmp_path):
    identity = load_tokenizer().identity
    rng = np.random.default_rng(0)
    for i in range(1101):  # 1 val + 1,100 train shards of 4 documents of 50 tokens (the val shard: 1 batch)
        tokens = rng.integers(0, EOT, 200)
        tokens[::50] = EOT
        write_shard(tmp_path / f"tiny_{'val' if i == 0 else 'train'}_{i:06d}.bin", tokens, identity, fsync=False)
    script = tmp_path / "ranks.py"
    script.write_text(FD_LIMIT_SCRIPT)
    run = subprocess.run(["bash", "-c", f'ulimit -n 1024 && exec "{sys.executable}" "{script}" "{tmp_path}"'],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ranks = sorted(tuple(map(int, line.split())) for line in run.stdout.splitlines())
    assert [r[:4] for r in ranks] == [(0, 1100, 1, 1), (1, 1100, 1, 0)]
    assert all(r[4] < 64 for r in ranks)  # open files per process: a few, not one per shard
