"""Reliability round 3 (issue 26): rows without text, a run directory cut by a kill at any byte, the
output-dir lock, damaged checkpoints, signals during a save, secrets, paths from outside, numbers and
train_tokenizer.py's inputs. Each fault is one line naming the file or flag; nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_pretrain import SMALL
from test_user_errors_training import run_in_process

from nanogpt2.data import StreamingTrainLoader
from nanogpt2.documents import tokenize_documents, tokenize_files
from nanogpt2.errors import DataError
from nanogpt2.sources import load_hub_text_dataset
from nanogpt2.tokenizer import load_tokenizer

TINY = SMALL + ["--skip_hellaswag", "--num_samples", "0", "--eval_steps", "100", "--save_steps", "100"]
BAD_VALUES = {"null": None, "empty": "", "number": 7, "list": ["not", "text"]}


def rows_file(path: Path, count: int, bad: dict[int, object]) -> tuple[Path, list[str]]:
    """`count` short documents as .jsonl, the rows of `bad` ({index: value}) without text; returns the good texts."""
    texts, lines = [], []
    for i in range(count):
        text = bad[i] if i in bad else f"row {i} says hello"
        if i not in bad:
            texts.append(text)
        lines.append(json.dumps({"id": i, "source": "test", "text": text}))
    path.write_text("\n".join(lines) + "\n")
    return path, texts


# -- (a) rows without text: skipped and counted, never fatal ---------------------------------------
@pytest.mark.parametrize("kind", list(BAD_VALUES))
@pytest.mark.parametrize("where", [3, 20], ids=["inside-shuffle-buffer", "past-shuffle-buffer"])
def test_streamed_row_without_text_is_skipped_and_counted(tmp_path, kind, where):
    path, texts = rows_file(tmp_path / "rows.jsonl", 30, {where: BAD_VALUES[kind]})
    stream = load_hub_text_dataset(None, data_files=[str(path)], streaming=True)
    loader = StreamingTrainLoader(stream, load_tokenizer(), 2, 16, seed=3, shuffle_buffer=8)
    documents = [loader._next_document() for _ in range(len(texts))]  # one epoch
    assert sorted(documents) == sorted(texts) and loader.skipped_rows == 1
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["skipped_rows"] == 1
    resumed = StreamingTrainLoader(load_hub_text_dataset(None, data_files=[str(path)], streaming=True),
                                   load_tokenizer(), 2, 16, seed=3, shuffle_buffer=8)
    resumed.load_state_dict(state)
    assert resumed.skipped_rows == 1 and resumed._next_document() in texts


def test_streamed_rows_of_the_wrong_column_name_the_columns(tmp_path):
    path, _ = rows_file(tmp_path / "rows.jsonl", 4, {})
    loader = StreamingTrainLoader(load_hub_text_dataset(None, data_files=[str(path)], streaming=True),
                                  load_tokenizer(), 2, 16, text_column="body")
    with pytest.raises(DataError, match=r"no 'body' column \(columns: \['id', 'source', 'text'\]\); set --text_column"):
        loader.next_batch()


def test_non_streamed_rows_without_text_are_skipped_and_counted(tmp_path):
    tokenizer = load_tokenizer()
    path, texts = rows_file(tmp_path / "rows.jsonl", 12, {i: v for i, v in zip((0, 4, 7, 11), BAD_VALUES.values())})
    skipped = []
    assert np.array_equal(tokenize_files(path, tokenizer, skipped=skipped), tokenize_documents(texts, tokenizer))
    assert sum(skipped) == 4
    path, _ = rows_file(tmp_path / "numbers.jsonl", 3, {0: 1, 1: 2, 2: 3})
    with pytest.raises(DataError, match="its 3 rows have a null, empty or non-text 'text'; set --text_column"):
        tokenize_files(path, tokenizer)


def hub_stand_in(monkeypatch, rows: list[dict]) -> None:
    """`datasets.load_dataset` of a Hub id, offline: the id resolves to a made-up commit, the data set is
    `rows` as a streaming IterableDataset (what the Hub's parquet files stream as)."""
    import datasets

    import nanogpt2.sources as sources

    def load_dataset(path, **kwargs):
        assert path == "someone/docs" and kwargs["streaming"] and kwargs["revision"] == "0" * 40

        def generate():
            yield from rows

        return datasets.IterableDataset.from_generator(generate)

    monkeypatch.setattr(sources, "resolve_hub_dataset", lambda name, revision=None: "0" * 40)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


@pytest.mark.parametrize("kind", ["null", "empty", "number"])
def test_hub_streamed_rows_without_text_are_skipped_in_validation_and_training(tmp_path, monkeypatch, kind):
    from nanogpt2.run_config import resolve_config
    from nanogpt2.run_setup import build_loaders

    bad = {1: BAD_VALUES[kind], 100: BAD_VALUES[kind], 300: BAD_VALUES[kind]}  # validation, buffer, past the buffer
    rows = [{"id": i, "text": bad.get(i, f"row {i} says hello")} for i in range(320)]
    hub_stand_in(monkeypatch, rows)
    config = resolve_config(SMALL + ["--dataset_name", "someone/docs", "--eval_tokens", "160", "--output_dir",
                                     str(tmp_path / "run")])
    tokenizer = load_tokenizer()
    train, validation = build_loaders(config, tokenizer)
    pieces = np.split(validation.stream, np.flatnonzero(validation.stream == tokenizer.eot_token_id))
    validation_texts = [tokenizer.decode(piece[1:].tolist()) for piece in pieces if len(piece)]
    assert validation_texts == [f"row {i} says hello" for i in range(len(validation_texts) + 1) if i != 1]
    documents = []
    while train.epoch == 0:  # the whole first epoch: all 320 rows fit in the shuffle buffer
        documents.append(train._next_document())
    assert train.skipped_rows == 4  # rows 100 and 300 of epoch 0, and again as epoch 1 fills its buffer
    good = {row["text"] for row in rows if isinstance(row["text"], str) and row["text"]}
    assert sorted(documents[:-1]) == sorted(good - set(validation_texts))


def test_streamed_run_with_rows_without_text_completes(tmp_path, capsys):
    """The issue's case, small: a streamed local file whose rows 5 (taken for validation), 400 (in the shuffle
    buffer) and 1,005 (read past the 1,000 rows of the buffer) have no text trains to its last step and
    counts the two rows training met."""
    path, _ = rows_file(tmp_path / "rows.jsonl", 1010, {5: None, 400: "", 1005: None})
    result = run_in_process(TINY + ["--streaming", "--train_file", path, "--max_steps", "2", "--total_batch_size",
                                    "128", "--eval_tokens", "128", "--output_dir", tmp_path / "run"], capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2]
    assert records[-2]["skipped_rows"] == 2  # the last train record (the last line is the evaluation)
    assert sum("warning: skipping streamed rows" in line for line in result.stderr.splitlines()) == 1
