"""llm.c / modded-nanogpt .bin and build-nanogpt .npy shards, written here by their published layouts
(llm.c dev/data/data_common.py write_datafile; build-nanogpt fineweb.py write_datafile = np.save of uint16),
are read as they are, validated, and trained on; the Hub shard sets are named correctly."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_training import SMALL, pretrain_in_process, train_losses

from nanogpt2.data import open_token_shards
from nanogpt2.errors import DataError
from nanogpt2.fetch_shards import SHARD_SETS, fetch_shards, shard_filenames
from nanogpt2.shards import TokenShard, open_shard, shard_format
from nanogpt2.tokenizer import load_tokenizer

EOT = 50256


def write_llmc_shard(path, tokens, magic=20240520, version=1, count=None):
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = magic, version, len(tokens) if count is None else count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


def write_npy_shard(path, tokens, dtype=np.uint16):
    np.save(path, np.asarray(tokens).astype(dtype))


@pytest.fixture(scope="module")
def documents(tinyshakespeare_file):
    """GPT-2 ids of Tiny Shakespeare's paragraphs, each after <|endoftext|>, as both tools write them."""
    tokenizer = load_tokenizer()
    paragraphs = tinyshakespeare_file.read_text().split("\n\n")[:600]
    return np.concatenate([[EOT] + tokenizer.encode_ordinary(p) for p in paragraphs]).astype(np.uint16)


def test_both_layouts_read_as_written(documents, tmp_path, capsys):
    write_llmc_shard(tmp_path / "fineweb_val_000000.bin", documents[:5000])
    write_llmc_shard(tmp_path / "fineweb_train_000001.bin", documents[5000:20000])
    write_npy_shard(tmp_path / "fineweb_train_000002.npy", documents[20000:])  # mixed layouts, one name order
    assert shard_format(tmp_path / "fineweb_val_000000.bin") == "llm.c"
    assert shard_format(tmp_path / "fineweb_train_000002.npy") == "npy"
    val = open_token_shards(tmp_path, "val", tokenizer=load_tokenizer())
    train = open_token_shards(tmp_path, "train", tokenizer=load_tokenizer())
    assert len(val) == 1 and np.array_equal(val[0], documents[:5000])
    assert [len(a) for a in train] == [15000, len(documents) - 20000]
    assert np.array_equal(np.concatenate(train), documents[5000:])
    # their headers record no largest id: read in full once on opening, said in one line per split
    assert all(isinstance(a, TokenShard) and a.scanned for a in train + val)
    note = capsys.readouterr().err.splitlines()
    assert len(note) == 2 and "2 of 2 train shards" in note[1] and "(llm.c, npy, e.g. fineweb_train_000001.bin)" \
        in note[1] and "record no largest token id" in note[1]


def test_bad_foreign_shards_are_refused_with_the_file_named(documents, tmp_path):
    tokens = documents[:1000]
    cases = {
        "magic.bin": (lambda p: write_llmc_shard(p, tokens, magic=20240521), "magic.bin is not a nanogpt2 token shard"),
        "version.bin": (lambda p: write_llmc_shard(p, tokens, version=2), "version.bin is an llm.c shard of version 2"),
        "short.bin": (lambda p: write_llmc_shard(p, tokens, count=1001), "short.bin is truncated or corrupt"),
        "ids.bin": (lambda p: write_llmc_shard(p, np.append(tokens, 50300)),
                    "ids.bin holds token id 50300 >= vocabulary size 50257"),
        "ids.npy": (lambda p: write_npy_shard(p, np.append(tokens, 60000)), "ids.npy holds token id 60000"),
        "wide.npy": (lambda p: write_npy_shard(p, tokens, np.int64), "wide.npy holds a int64 array"),
        "pickle.npy": (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
                       "pickle.npy is not a readable .npy array"),
        "cut.npy": (lambda p: p.write_bytes(_npy_bytes(tokens, p)[:-10]), "cut.npy is not a readable .npy array"),
    }
    for name, (write, message) in cases.items():
        write(tmp_path / name)
        with pytest.raises(DataError, match=message):
            open_shard(tmp_path / name)
    write_llmc_shard(tmp_path / "ok.bin", tokens)
    own = type("OwnTokenizer", (), {"vocab_size": 4096, "eot_token_id": 0, "name": "own", "fingerprint": "x"})()
    with pytest.raises(DataError, match="ok.bin is a llm.c shard of GPT-2 token ids, but the tokenizer has 4,096"):
        open_shard(tmp_path / "ok.bin", tokenizer=own)


def _npy_bytes(tokens, path):
    np.save(path, tokens.astype(np.uint16))
    return path.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["llm.c", "build-nanogpt"])
def test_trains_on_foreign_shards(layout, documents, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    if layout == "llm.c":
        write_llmc_shard(data / "fineweb_val_000000.bin", documents[:3000])
        write_llmc_shard(data / "fineweb_train_000001.bin", documents[3000:])
    else:
        write_npy_shard(data / "edufineweb_val_000000.npy", documents[:3000])
        write_npy_shard(data / "edufineweb_train_000001.npy", documents[3000:])
    run = tmp_path / "run"
    code, error = pretrain_in_process(SMALL + ["--data_dir", data, "--skip_hellaswag", "--num_samples", 0,
                                               "--max_steps", 3, "--output_dir", run], capsys)
    assert code == 0, error
    losses, evals = train_losses(run)
    assert len(losses) == 3 and all(np.isfinite(losses)) and evals[-1]["val_loss"] > 0
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(data)


def test_hub_shard_sets_and_offline_message(tmp_path, monkeypatch):
    # names as in modded-nanogpt's data/cached_fineweb10B.py and cached_finewebedu10B.py
    assert shard_filenames("fineweb10B", 2) == ["fineweb_val_000000.bin", "fineweb_train_000001.bin",
                                                "fineweb_train_000002.bin"]
    assert shard_filenames("finewebedu10B")[-1] == "finewebedu_train_000103.bin"
    assert SHARD_SETS["fineweb10B"][0] == "kjj0/fineweb10B-gpt2"
    with pytest.raises(DataError, match="--num_train_shards must be between 1 and 103"):
        shard_filenames("fineweb10B", 104)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="cannot download kjj0/fineweb10B-gpt2 offline"):
        fetch_shards("fineweb10B", tmp_path / "out", 1)
    assert not (tmp_path / "out").exists()


def test_fetch_downloads_each_file_into_output_dir_and_reports_failures_in_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    def fake_download(repo_id, filename, repo_type, local_dir):  # the Hub, replaced: same signature subset
        calls.append((repo_id, filename, repo_type, str(local_dir)))
        if filename.endswith("000002.bin"):
            raise ConnectionError("connection reset")
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        write_llmc_shard(path, np.array([EOT, 1, 2, 3]))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    paths = fetch_shards("finewebedu10B", tmp_path / "edu", 1)
    assert calls == [("kjj0/finewebedu10B-gpt2", name, "dataset", str(tmp_path / "edu"))
                     for name in ("finewebedu_val_000000.bin", "finewebedu_train_000001.bin")]
    assert [len(a) for a in open_token_shards(tmp_path / "edu", "train")] == [4] and len(paths) == 2
    with pytest.raises(DataError, match=r"could not download kjj0/fineweb10B-gpt2/fineweb_train_000002.bin "
                                        r"\(ConnectionError\); check the connection and rerun"):
        fetch_shards("fineweb10B", tmp_path / "web", 2)
