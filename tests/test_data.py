"""Data pipeline: prepare_fineweb.py shards, the shard format's checks, the loaders."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanogpt2.data import DataError, TrainLoader, ValidationLoader, open_token_shards, tokenize_files
from nanogpt2.prepare import Source, prepare_shards
from nanogpt2.shards import HEADER_SIZE, open_shard, read_header, write_shard
from nanogpt2.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
MAX_TOKENS = 600_000
SHARD = 150_000


@pytest.fixture(scope="module")
def documents(english_mix_file):
    with open(english_mix_file, encoding="utf-8") as f:  # (str.splitlines would also split at U+2028)
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def expected_stream(documents):
    """The reference token stream: each document = <|endoftext|> + tiktoken's ids."""
    tok = load_tokenizer()
    stream = []
    for ids in tok.encode_ordinary_batch(documents):
        stream += [50256] + ids
        if len(stream) >= MAX_TOKENS:
            break
    return np.array(stream[:MAX_TOKENS])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, english_mix_file):
    out = tmp_path_factory.mktemp("shards")
    manifest = prepare_shards(Source(data_files=[str(english_mix_file)]), out, shard_size=SHARD, num_proc=1,
                              max_tokens=MAX_TOKENS, progress=False)
    return out, manifest


def read_all(directory, manifest):
    return np.concatenate([np.asarray(open_shard(directory / s["file"])) for s in manifest["shards"]])


def test_full_file_token_count(tmp_path, english_mix_file, documents):
    manifest = prepare_shards(Source(data_files=[str(english_mix_file)]), tmp_path, shard_size=2_000_000,
                              num_proc=2, progress=False)
    lengths = load_tokenizer().encode_ordinary_batch(documents)
    assert manifest["total_tokens"] == sum(1 + len(ids) for ids in lengths)
    assert sum(s["num_documents"] for s in manifest["shards"]) == len(documents)
    assert manifest["settings"]["tokenizer"]["name"] == "gpt2" and manifest["complete"]


def test_shards_concatenate_to_the_stream(prepared, expected_stream):
    out, manifest = prepared
    assert [s["file"] for s in manifest["shards"]][:2] == ["shard_val_000000.bin", "shard_train_000001.bin"]
    assert [s["num_tokens"] for s in manifest["shards"]] == [SHARD] * 4
    stream = read_all(out, manifest)
    assert np.array_equal(stream, expected_stream)
    # shard boundaries cut documents: the manifest says where each shard starts
    for shard in manifest["shards"][1:]:
        first = np.asarray(open_shard(out / shard["file"]))
        assert (first[0] == 50256) == (shard["first_document_offset"] == 0)


def test_two_processes_and_parquet_give_identical_shards(prepared, tmp_path, english_mix_file):
    out, manifest = prepared
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(english_mix_file, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": [r["text"] for r in rows]}), parquet)
    other = prepare_shards(Source(data_files=[str(parquet)]), tmp_path / "out", shard_size=SHARD, num_proc=2,
                           max_tokens=MAX_TOKENS, progress=False)
    assert [s["sha256"] for s in other["shards"]] == [s["sha256"] for s in manifest["shards"]]


def test_rerun_rebuilds_only_the_deleted_shard(tmp_path, english_mix_file):
    source = Source(data_files=[str(english_mix_file)])
    first = prepare_shards(source, tmp_path, shard_size=SHARD, max_tokens=MAX_TOKENS, progress=False)
    files = {s["file"]: tmp_path / s["file"] for s in first["shards"]}
    before = {name: path.stat().st_mtime_ns for name, path in files.items()}
    deleted = first["shards"][2]["file"]
    files[deleted].unlink()
    second = prepare_shards(source, tmp_path, shard_size=SHARD, max_tokens=MAX_TOKENS, progress=False)
    assert [s["sha256"] for s in second["shards"]] == [s["sha256"] for s in first["shards"]]
    for name, path in files.items():
        assert (path.stat().st_mtime_ns == before[name]) == (name != deleted)


def test_corrupt_truncated_and_foreign_shards(prepared, tmp_path):
    out, manifest = prepared
    good = out / manifest["shards"][1]["file"]
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated.bin is truncated or corrupt"):
        open_shard(truncated)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\0" * 1000)
    with pytest.raises(DataError, match="garbage.bin is not a nanogpt2 token shard"):
        open_shard(garbage)
    identity = dict(load_tokenizer().identity)
    big_ids = tmp_path / "big_ids.bin"
    write_shard(big_ids, np.array([1, 2, 60000]), identity)
    with pytest.raises(DataError, match="big_ids.bin holds token id 60000 >= vocabulary size 50257"):
        open_shard(big_ids)
    foreign = tmp_path / "foreign.bin"
    write_shard(foreign, np.array([1, 2, 3]), {**identity, "fingerprint": "0" * 64})
    with pytest.raises(DataError, match="foreign.bin was made with another tokenizer"):
        open_shard(foreign, tokenizer=load_tokenizer())
    assert read_header(foreign)["num_tokens"] == 3 and foreign.stat().st_size == HEADER_SIZE + 6
    with pytest.raises(DataError, match="no val shards"):
        open_token_shards(tmp_path / "nothing_here", "val") if False else open_token_shards(tmp_path, "val")


def test_train_loader_ranks_disjoint_cover_and_resume(prepared):
    out, _ = prepared
    arrays = open_token_shards(out, "train")
    batch, seq = 4, 64
    per_rank = [TrainLoader(arrays, batch, seq, rank=r, world_size=2, seed=7) for r in range(2)]
    windows = {0: [], 1: []}
    steps = per_rank[0].windows_per_epoch // 2
    for rank, loader in enumerate(per_rank):
        for _ in range(steps):
            x, y = loader.next_batch()
            assert x.shape == (batch, seq) and np.array_equal(x[:, 1:], y[:, :-1])
            windows[rank].append(x.numpy().tobytes())
    assert not set(windows[0]) & set(windows[1])
    assert len(set(windows[0]) | set(windows[1])) == 2 * steps  # every window of the epoch, once
    # exact resume: a loader restored from a state gives the very next batch
    loader = TrainLoader(arrays, batch, seq, seed=7)
    for _ in range(5):
        loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))
    expected = loader.next_batch()[0]
    restored = TrainLoader(arrays, batch, seq, seed=7)
    restored.load_state_dict(state)
    assert np.array_equal(restored.next_batch()[0], expected)
    # a new epoch reshuffles shard and document order: its batches come in another order
    a = TrainLoader(arrays, batch, seq, seed=7)
    epochs = [[a.next_batch()[0].numpy().tobytes() for _ in range(a.windows_per_epoch)] for _ in range(2)]
    assert a.epoch == 1 and epochs[0] != epochs[1]
    unshuffled = TrainLoader(arrays, batch, seq, shuffle=False)
    assert np.array_equal(unshuffled.next_batch()[0].flatten(), np.asarray(arrays[0][: batch * seq]))


def test_validation_loader_independent_of_process_count(prepared):
    out, _ = prepared
    arrays = open_token_shards(out, "val")
    single = [x.numpy().tobytes() for x, _ in ValidationLoader(arrays, 2, 32, num_batches=10)]
    split = [x.numpy().tobytes() for r in range(3) for x, _ in ValidationLoader(arrays, 2, 32, 10, r, 3)]
    assert len(single) == 10 and sorted(single) == sorted(split)
    assert single == [x.numpy().tobytes() for x, _ in ValidationLoader(arrays, 2, 32, num_batches=10)]


def test_tokenize_files_formats(tmp_path):
    (tmp_path / "a.txt").write_text("Hello world")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Hello"}) + "\n" + json.dumps({"text": " world"}) + "\n")
    assert tokenize_files(tmp_path / "a.txt", load_tokenizer()).tolist() == [50256, 15496, 995]
    assert tokenize_files(tmp_path / "b.jsonl", load_tokenizer()).tolist() == [50256, 15496, 50256, 995]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(DataError, match="bad.jsonl:2: no 'text' field"):
        tokenize_files(tmp_path / "bad.jsonl", load_tokenizer())


def test_offline_hub_dataset_fails_fast_with_hint(tmp_path):
    result = subprocess.run([sys.executable, "prepare_fineweb.py", "--output_dir", str(tmp_path / "x")], cwd=REPO,
                            capture_output=True, text=True, timeout=60, env={**__import__("os").environ,
                                                                             "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert "--data_files" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_streaming_loader_disjoint_ranks_and_exact_resume(english_mix_file):
    from nanogpt2.data import StreamingTrainLoader, load_local_text_dataset

    def loader(rank=0, world_size=1):
        dataset = load_local_text_dataset([english_mix_file], streaming=True)
        return StreamingTrainLoader(dataset, load_tokenizer(), 2, 32, rank, world_size, seed=3, shuffle_buffer=64)

    ranks = [loader(r, 2) for r in range(2)]
    firsts = [r.next_batch()[0] for r in ranks]
    assert not np.array_equal(firsts[0], firsts[1])
    reference = loader()
    for _ in range(3):
        reference.next_batch()
    state = json.loads(json.dumps(reference.state_dict()))
    expected = [reference.next_batch()[0] for _ in range(3)]
    resumed = loader()
    resumed.load_state_dict(state)
    for batch in expected:
        x, y = resumed.next_batch()
        assert np.array_equal(x, batch) and np.array_equal(x[:, 1:], y[:, :-1])
