"""prepare_fineweb.py's engine (nanogpt2.prepare) and the shard format (nanogpt2.shards), on english_mix."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanogpt2.data import open_token_shards
from nanogpt2.errors import DataError
from nanogpt2.prepare import MANIFEST, Source, prepare_shards
from nanogpt2.shards import HEADER_SIZE, open_shard, read_header, write_shard
from nanogpt2.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
EOT = 50256
MAX_TOKENS = 600_000
SHARD = 150_000


@pytest.fixture(scope="module")
def documents(english_mix_file):
    with open(english_mix_file, encoding="utf-8") as f:  # (str.splitlines would also split at U+2028)
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def expected_stream(documents):
    """The reference token stream, straight from tiktoken: each document = <|endoftext|> + its ids."""
    stream = []
    for ids in load_tokenizer().encoding.encode_ordinary_batch(documents[:400]):
        stream += [EOT] + ids
    assert len(stream) >= MAX_TOKENS
    return np.array(stream[:MAX_TOKENS])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, english_mix_file):
    out = tmp_path_factory.mktemp("shards")
    manifest = prepare_shards(Source(data_files=[str(english_mix_file)]), out, shard_size=SHARD, num_proc=1,
                              max_tokens=MAX_TOKENS, progress=False)
    return out, manifest


def read_all(directory, manifest):
    return np.concatenate([np.asarray(open_shard(directory / s["file"])) for s in manifest["shards"]])


def shard_bytes(directory, manifest):
    return {s["file"]: (directory / s["file"]).read_bytes() for s in manifest["shards"]}


@pytest.mark.slow  # the whole corpus
def test_whole_file_two_processes_token_and_document_counts(tmp_path, english_mix_file, documents):
    manifest = prepare_shards(Source(data_files=[str(english_mix_file)]), tmp_path, shard_size=2_000_000,
                              num_proc=2, progress=False)
    lengths = [len(ids) for ids in load_tokenizer().encoding.encode_ordinary_batch(documents)]
    assert manifest["total_tokens"] == sum(1 + n for n in lengths)
    assert manifest["total_documents"] == len(documents)
    total = sum(1 + n for n in lengths)
    assert [s["num_tokens"] for s in manifest["shards"]] == [2_000_000, 2_000_000, total - 4_000_000]
    for shard in manifest["shards"]:  # every document starts with the one <|endoftext|>
        assert np.count_nonzero(np.asarray(open_shard(tmp_path / shard["file"])) == EOT) == shard["num_documents"]
    assert manifest["complete"] and manifest["settings"]["tokenizer"] == load_tokenizer().identity
    assert manifest["source"]["data_files"] == [{"path": str(Path(english_mix_file).resolve()),
                                                 "bytes": Path(english_mix_file).stat().st_size}]
    on_disk = json.loads((tmp_path / MANIFEST).read_text())
    assert on_disk == json.loads(json.dumps(manifest))


def test_shards_concatenate_to_the_stream_and_cut_documents(prepared, expected_stream):
    out, manifest = prepared
    assert [s["file"] for s in manifest["shards"]] == ["shard_val_000000.bin"] + [
        f"shard_train_{i:06d}.bin" for i in range(1, 4)]
    assert [s["num_tokens"] for s in manifest["shards"]] == [SHARD] * 4
    assert np.array_equal(read_all(out, manifest), expected_stream)
    # each shard records where it starts: document index and offset into it
    starts = np.flatnonzero(expected_stream == EOT)  # start of every document in the stream
    for i, shard in enumerate(manifest["shards"]):
        position = i * SHARD
        document = int(np.searchsorted(starts, position, side="right")) - 1
        assert shard["first_document"] == document and shard["start"]["global_document"] == document
        assert shard["start"]["offset"] == position - starts[document]
    assert any(s["start"]["offset"] > 0 for s in manifest["shards"])  # documents do cross shards
    assert open_token_shards(out, "val")[0].dtype == np.uint16


@pytest.mark.slow  # the whole corpus
def test_two_processes_and_parquet_give_identical_shards(prepared, tmp_path, documents):
    out, manifest = prepared
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"body": documents}), parquet, row_group_size=100)  # a chunk per row group
    other = prepare_shards(Source(data_files=[str(parquet)], text_column="body"), tmp_path / "out", shard_size=SHARD,
                           num_proc=2, max_tokens=MAX_TOKENS, progress=False)
    assert shard_bytes(tmp_path / "out", other) == shard_bytes(out, manifest)


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_dataset_paths_give_the_same_shards(prepared, tmp_path, documents, monkeypatch, streaming):
    """The Hub path (downloaded: workers read row ranges; streamed: the main process reads), with a local
    `datasets` dataset standing in for FineWeb-Edu."""
    import datasets

    import nanogpt2.prepare

    out, manifest = prepared
    local = datasets.Dataset.from_dict({"text": documents[:400], "score": [1.0] * 400})
    monkeypatch.setattr(nanogpt2.prepare, "resolve_hub_dataset", lambda name, revision: "0123abc")
    monkeypatch.setattr(nanogpt2.prepare, "load_hub_text_dataset", lambda *args, streaming, **kwargs:
                        local.to_iterable_dataset(num_shards=3) if streaming else local)
    source = Source("HuggingFaceFW/fineweb-edu", "sample-10BT", streaming=streaming)
    hub = prepare_shards(source, tmp_path, shard_size=SHARD, num_proc=2, max_tokens=MAX_TOKENS, progress=False)
    assert shard_bytes(tmp_path, hub) == shard_bytes(out, manifest)
    assert hub["source"] == {"dataset_name": "HuggingFaceFW/fineweb-edu", "dataset_config_name": "sample-10BT",
                             "split": "train", "revision": "0123abc"}
    (tmp_path / hub["shards"][1]["file"]).unlink()  # rebuilt from the middle of the data, the same again
    assert prepare_shards(source, tmp_path, shard_size=SHARD, num_proc=2, max_tokens=MAX_TOKENS,
                          progress=False) == hub
    assert shard_bytes(tmp_path, hub) == shard_bytes(out, manifest)


def test_rerun_rebuilds_only_missing_or_damaged_shards(tmp_path, english_mix_file):
    source = Source(data_files=[str(english_mix_file)])
    first = prepare_shards(source, tmp_path, shard_size=SHARD, max_tokens=MAX_TOKENS, progress=False)
    original = shard_bytes(tmp_path, first)
    paths = {s["file"]: tmp_path / s["file"] for s in first["shards"]}
    missing, damaged = first["shards"][2]["file"], first["shards"][0]["file"]
    assert first["shards"][2]["start"]["offset"] > 0  # rebuilt from the middle of a document
    paths[missing].unlink()
    paths[damaged].write_bytes(original[damaged][:-2] + b"\xff\xff")
    before = {name: path.stat().st_mtime_ns for name, path in paths.items() if path.exists()}
    again = prepare_shards(source, tmp_path, shard_size=SHARD, max_tokens=MAX_TOKENS, progress=False)
    assert again == first and shard_bytes(tmp_path, again) == original
    for name, path in paths.items():
        rebuilt = name in (missing, damaged)
        assert rebuilt or path.stat().st_mtime_ns == before[name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*paths, MANIFEST])  # no temporary files left


def test_interrupted_run_continues_to_the_same_shards(tmp_path, english_mix_file):
    source = Source(data_files=[str(english_mix_file)])
    complete = prepare_shards(source, tmp_path, shard_size=SHARD, max_tokens=MAX_TOKENS, progress=False)
    original = shard_bytes(tmp_path, complete)
    # the state after writing two shards: the manifest says where the third starts
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    third = manifest["shards"][2]
    for shard in manifest["shards"][2:]:
        (tmp_path / shard["file"]).unlink()
    manifest.update(shards=manifest["shards"][:2], complete=False, next=third["start"])
    del manifest["total_tokens"], manifest["total_documents"]
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    resumed = prepare_shards(source, tmp_path, shard_size=SHARD, max_tokens=MAX_TOKENS, progress=False)
    assert resumed == complete and shard_bytes(tmp_path, resumed) == original
    with pytest.raises(DataError, match="made with other settings"):
        prepare_shards(source, tmp_path, shard_size=SHARD // 2, max_tokens=MAX_TOKENS, progress=False)


def test_corrupt_truncated_wrong_dtype_and_old_version_shards(prepared, tmp_path):
    out, manifest = prepared
    good = (out / manifest["shards"][1]["file"]).read_bytes()
    cases = {
        "truncated.bin": (good[:-100], "truncated.bin is truncated or corrupt"),
        "garbage.bin": (b"\0" * 1000, "garbage.bin is not a nanogpt2 token shard"),
        "short.bin": (good[:100], "short.bin is not a nanogpt2 token shard"),
        "version.bin": (good[:8] + (2).to_bytes(4, "little") + good[12:], "version.bin has shard format version 2"),
        "wide.bin": (good[:12] + (4).to_bytes(4, "little") + good[16:], "wide.bin stores 4-byte tokens"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=message):
            open_shard(tmp_path / name)
    big_ids = tmp_path / "big_ids.bin"
    write_shard(big_ids, np.array([1, 2, 60000]), load_tokenizer().identity)
    with pytest.raises(DataError, match="big_ids.bin holds token id 60000 >= vocabulary size 50257"):
        open_shard(big_ids)
    (tmp_path / "shard_val_000000.bin").write_bytes(good[:-2])
    with pytest.raises(DataError, match="shard_val_000000.bin is truncated"):
        open_token_shards(tmp_path, "val")
    with pytest.raises(DataError, match="no train shards"):
        open_token_shards(tmp_path, "train")


def test_uint32_shards_for_large_vocabularies(tmp_path):
    identity = {"name": "big", "vocab_size": 100_000, "eot_token_id": 99_999, "fingerprint": "ab" * 32}
    ids = np.array([0, 65_535, 65_536, 99_999])
    write_shard(tmp_path / "big.bin", ids, identity)
    assert read_header(tmp_path / "big.bin")["itemsize"] == 4
    assert (tmp_path / "big.bin").stat().st_size == HEADER_SIZE + 4 * len(ids)
    tokens = open_shard(tmp_path / "big.bin")
    assert tokens.dtype == np.uint32 and tokens.tolist() == ids.tolist()


def tiny_hf_tokenizer(directory: Path, text: str) -> Path:
    """A 300-entry byte-level BPE tokenizer.json with <|endoftext|>, as train_tokenizer.py makes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer)
    directory.mkdir()
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def test_own_tokenizer_is_recorded_and_foreign_shards_are_refused(tmp_path, tinyshakespeare_file):
    text = Path(tinyshakespeare_file).read_text(encoding="utf-8")[:20_000]
    tokenizer_dir = tiny_hf_tokenizer(tmp_path / "tok", text)
    (tmp_path / "plays.txt").write_text(text, encoding="utf-8")
    (tmp_path / "more.txt").write_text(text[::-1], encoding="utf-8")
    manifest = prepare_shards(Source(data_files=[str(tmp_path / "plays.txt"), str(tmp_path / "more.txt")]),
                              tmp_path / "out", tokenizer_name=str(tokenizer_dir), shard_size=2_000, progress=False)
    own = load_tokenizer(tokenizer_dir)
    assert manifest["settings"]["tokenizer"] == own.identity and own.vocab_size == 300
    stream = read_all(tmp_path / "out", manifest)
    expected = [own.eot_token_id] + own.encode_ordinary(text) + [own.eot_token_id] + own.encode_ordinary(text[::-1])
    assert stream.tolist() == expected and manifest["total_documents"] == 2  # a .txt file is one document
    assert len(open_token_shards(tmp_path / "out", "train", tokenizer=own)) == len(manifest["shards"]) - 1
    with pytest.raises(DataError, match="shard_train_000001.bin was made with another tokenizer"):
        open_token_shards(tmp_path / "out", "train", tokenizer=load_tokenizer())
    # the source changed since: a rebuilt shard would differ from the manifest, which is refused
    (tmp_path / "plays.txt").write_text(text.upper(), encoding="utf-8")
    (tmp_path / "out" / "shard_train_000001.bin").unlink()
    with pytest.raises(DataError, match="shard_train_000001.bin differs from manifest.json: the source data changed"):
        prepare_shards(Source(data_files=[str(tmp_path / "plays.txt"), str(tmp_path / "more.txt")]), tmp_path / "out",
                       tokenizer_name=str(tokenizer_dir), shard_size=2_000, progress=False)


def test_offline_hub_dataset_fails_fast_with_a_one_line_hint(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO))
    import prepare_fineweb

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert prepare_fineweb.main(["--output_dir", str(tmp_path / "x")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--data_files" in error and "offline" in error
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_throughput_benchmark_runs_and_counts_the_same_tokens(tmp_path, english_mix_file):
    with open(english_mix_file, encoding="utf-8") as f:
        (tmp_path / "docs.jsonl").write_text("".join(line for _, line in zip(range(60), f)), encoding="utf-8")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "prepare_throughput.py"), "--data_file",
                             str(tmp_path / "docs.jsonl"), "--rounds", "1", "--repeat", "1", "--shard_size", "100000"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pipeline, 1 process vs raw tiktoken" in result.stdout and "saturated at" in result.stdout


def write_formats(directory: Path, documents: list, rows_per_file: int) -> dict:
    """The same documents as .jsonl, .jsonl.gz, .jsonl.zst and parquet (several files of each, in a folder)."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [documents[i : i + rows_per_file] for i in range(0, len(documents), rows_per_file)]
    formats = {}
    for name in ("jsonl", "jsonl.gz", "jsonl.zst", "parquet"):
        folder = directory / name.replace(".", "_")
        folder.mkdir()
        for i, part in enumerate(parts):
            path = folder / f"part-{i:03d}.{name}"
            lines = "".join(json.dumps({"id": n, "text": t}) + "\n" for n, t in enumerate(part)).encode()
            if name == "jsonl":
                path.write_bytes(lines)
            elif name == "jsonl.gz":
                path.write_bytes(gzip.compress(lines))
            elif name == "jsonl.zst":
                with pa.CompressedOutputStream(str(path), "zstd") as f:
                    f.write(lines)
            else:
                pq.write_table(pa.table({"id": list(range(len(part))), "text": part}), path, row_group_size=50)
        formats[name] = folder
    return formats


def test_every_input_format_gives_byte_identical_shards(prepared, tmp_path, documents, monkeypatch):
    """english_mix as .jsonl, .jsonl.gz, .jsonl.zst and parquet files: a folder, a glob and a list of files
    give the shards that the one original .jsonl gave. Compressed files are cut into small chunks here, so
    chunks end mid-file and several are in flight at once."""
    import nanogpt2.documents

    out, manifest = prepared
    monkeypatch.setitem(nanogpt2.documents.CHUNKING, "jsonl_bytes", 64 * 1024)
    formats = write_formats(tmp_path, documents[:400], rows_per_file=150)
    inputs = {"jsonl": [str(formats["jsonl"])], "jsonl.gz": [str(formats["jsonl.gz"] / "*.jsonl.gz")],
              "jsonl.zst": sorted(str(p) for p in formats["jsonl.zst"].iterdir()), "parquet": [str(formats["parquet"])]}
    for name, data_files in inputs.items():
        made = prepare_shards(Source(data_files=data_files), tmp_path / f"out_{name}", shard_size=SHARD,
                              num_proc=2 if name == "jsonl.gz" else 1, max_tokens=MAX_TOKENS, progress=False)
        assert shard_bytes(tmp_path / f"out_{name}", made) == shard_bytes(out, manifest), name
        assert [f["path"] for f in made["source"]["data_files"]] == [
            str(p.resolve()) for p in sorted(formats[name].iterdir())]
    # a damaged compressed shard is rebuilt from where it started, in the middle of the compressed stream
    name = "jsonl.zst"
    again = prepare_shards(Source(data_files=inputs[name]), tmp_path / f"out_{name}", shard_size=SHARD,
                           max_tokens=MAX_TOKENS, progress=False)
    (tmp_path / f"out_{name}" / again["shards"][2]["file"]).unlink()
    assert again["shards"][2]["start"]["chunk"] > 0
    assert prepare_shards(Source(data_files=inputs[name]), tmp_path / f"out_{name}", shard_size=SHARD,
                          max_tokens=MAX_TOKENS, progress=False) == again
    assert shard_bytes(tmp_path / f"out_{name}", again) == shard_bytes(out, manifest)


def test_a_row_without_the_text_field_names_the_file_and_row_and_other_types_are_skipped(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": "one"}, {"text": "two"}, {"text": None}, {"text": ""}, {"text": "five"}]
    cases = {}
    for name, bad_row, line, problem in (("missing.jsonl.gz", {"body": "x"}, 3, "no 'text' field"),
                                         ("missing.jsonl.zst", {"id": 1}, 6, "no 'text' field")):
        lines = [json.dumps(r) for r in rows]
        lines.insert(line - 1, json.dumps(bad_row))
        data = ("\n".join(lines) + "\n").encode()
        path = tmp_path / name
        if name.endswith(".gz"):
            data = gzip.compress(data)
        if name.endswith(".zst"):
            with pa.CompressedOutputStream(str(path), "zstd") as f:
                f.write(data)
        else:
            path.write_bytes(data)
        cases[name] = f"{path}:{line}: {problem}"
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "ints.parquet")
    cases["ints.parquet"] = f"{tmp_path / 'ints.parquet'}, row 0: column 'text' holds int64, not text (the whole column"
    (tmp_path / "notes.csv").write_text("a,b\n")
    cases["notes.csv"] = f"{tmp_path / 'notes.csv'}: unsupported file type (.csv)"
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n' * 1000)[:-20])
    cases["cut.jsonl.gz"] = f"{tmp_path / 'cut.jsonl.gz'}: cannot decompress it past line"
    for name, message in cases.items():
        with pytest.raises(DataError) as caught:
            prepare_shards(Source(data_files=[str(tmp_path / name)]), tmp_path / f"out_{name}", shard_size=4,
                           progress=False)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)
        assert not (tmp_path / f"out_{name}").exists()
    with pytest.raises(DataError, match="pattern 'nothing/\\*.parquet' matches no file"):
        prepare_shards(Source(data_files=["nothing/*.parquet"]), tmp_path / "out", progress=False)
    # null, empty and non-text rows are skipped and counted (issue 26: never fatal); only a missing field stops
    mixed = [*rows, {"text": 7}, {"text": ["a"]}]
    (tmp_path / "nulls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    made = prepare_shards(Source(data_files=[str(tmp_path / "nulls.jsonl")]), tmp_path / "nulls", shard_size=4,
                          progress=False)
    assert made["skipped_documents"] == 4 and made["total_documents"] == 3


def test_the_first_row_without_text_of_each_file_is_named_by_file_and_row(tmp_path, capsys, monkeypatch):
    """Skipped rows are counted, and the first one of each file is named in a warning (issue 25, item 4), also
    past a chunk boundary and after blank lines, for every input format."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from nanogpt2 import documents

    monkeypatch.setitem(documents.CHUNKING, "jsonl_bytes", 64)  # several chunks per file
    rows = [{"text": f"document number {i}"} for i in range(12)]
    rows[7] = {"text": 42}
    rows[9] = {"text": None}
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "")  # a blank line is no row, but it is a line
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    pq.write_table(pa.table({"text": [r["text"] if isinstance(r["text"], str) else None for r in rows]}),
                   tmp_path / "c.parquet", row_group_size=5)
    made = prepare_shards(Source(data_files=[str(tmp_path / n) for n in ("a.jsonl", "b.jsonl.gz", "c.parquet")]),
                          tmp_path / "out", shard_size=8, progress=False)
    assert made["skipped_documents"] == 6 and made["total_documents"] == 30
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {tmp_path / 'a.jsonl'}:9: 'text' holds int '42', not text; the row is skipped, as are any "
        "others without text (they are counted)",
        f"warning: {tmp_path / 'b.jsonl.gz'}:9: 'text' holds int '42', not text; the row is skipped, as are any "
        "others without text (they are counted)",
        f"warning: {tmp_path / 'c.parquet'}, row 7: 'text' is null; the row is skipped, as are any others "
        "without text (they are counted)"]


def test_hub_parquet_files_are_read_at_a_pinned_commit(prepared, tmp_path, documents, monkeypatch):
    """--data_files hf://datasets/<owner>/<name>/<glob>: the Hub's listing and download replaced by local parquet
    files; the shards are those of the local .jsonl, the manifest names each file at the commit read."""
    import huggingface_hub

    import nanogpt2.sources

    out, manifest = prepared
    parquet = write_formats(tmp_path, documents[:400], rows_per_file=150)["parquet"]
    calls = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(nanogpt2.sources, "resolve_hub_dataset", lambda name, revision: "c0ffee" * 6 + "0000")
    sha = "c0ffee" * 6 + "0000"
    monkeypatch.setattr(huggingface_hub.HfFileSystem, "glob", lambda self, path: [
        f"datasets/HuggingFaceFW/fineweb-edu@{sha}/sample/10BT/{p.name}" for p in reversed(sorted(parquet.iterdir()))
        if path == f"datasets/HuggingFaceFW/fineweb-edu@{sha}/sample/10BT/*.parquet"])

    def download(repo_id, filename, repo_type, revision):
        calls.append((repo_id, filename, repo_type, revision))
        return str(parquet / Path(filename).name)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    source = Source(data_files=["hf://datasets/HuggingFaceFW/fineweb-edu/sample/10BT/*.parquet"])
    hub = prepare_shards(source, tmp_path / "hub", shard_size=SHARD, max_tokens=MAX_TOKENS, progress=False)
    assert shard_bytes(tmp_path / "hub", hub) == shard_bytes(out, manifest)
    pinned = [f"hf://datasets/HuggingFaceFW/fineweb-edu@{sha}/sample/10BT/part-{i:03d}.parquet" for i in range(3)]
    assert hub["settings"]["source"]["data_files"] == pinned
    # a file is downloaded when the work reaches it: the first one held the --max_tokens asked for
    assert calls == [("HuggingFaceFW/fineweb-edu", "sample/10BT/part-000.parquet", "dataset", sha)]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.undo()
    with pytest.raises(DataError, match="HuggingFaceFW/fineweb-edu cannot be loaded offline.*--data_files"):
        prepare_shards(source, tmp_path / "offline", progress=False)
