"""Reliability round 3 (issue 26): rows without text, a run directory cut by a kill at any byte, the
output-dir lock, damaged checkpoints, signals during a save, secrets, paths from outside, numbers and
train_tokenizer.py's inputs. Each fault is one line naming the file or flag; nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_training import SMALL
from test_user_errors_training import run_in_process
from user_errors import pretrain_main, two_process_launch

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
    stream = np.concatenate([array[0 : len(array)] for array in validation.arrays])
    pieces = np.split(stream, np.flatnonzero(stream == tokenizer.eot_token_id))
    validation_texts = [tokenizer.decode(piece[1:].tolist()) for piece in pieces if len(piece)]
    assert validation_texts == [f"row {i} says hello" for i in range(len(validation_texts) + 1) if i != 1]
    documents = []
    while train.epoch == 0:  # the whole first epoch: all 320 rows fit in the shuffle buffer
        documents.append(train._next_document())
    assert train.skipped_rows == 4  # rows 100 and 300 of epoch 0, and again as epoch 1 fills its buffer
    good = {row["text"] for row in rows if isinstance(row["text"], str) and row["text"]}
    assert sorted(documents[:-1]) == sorted(good - set(validation_texts))


@pytest.mark.slow
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


# -- (b) a run directory cut by a kill at any byte resumes ------------------------------------------
def records_file(path: Path, records: list[dict]) -> bytes:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


METRICS_RECORDS = [{"step": s, "tokens": 256 * s, "train_loss": 11.0 - s / 10, "lr": 0.001} for s in range(1, 7)] + [
    {"step": 4, "tokens": 1024, "val_loss": 10.5, "val_tokens": 128}]
METRICS_RECORDS.sort(key=lambda r: r["step"])


def test_metrics_cut_at_any_byte_resume_keeps_every_record_up_to_the_checkpoint(tmp_path, capsys):
    from nanogpt2.run_dir import MetricsLog, read_metrics

    run, checkpoint = tmp_path / "run", tmp_path / "run" / "checkpoint-4"
    kept = [r for r in METRICS_RECORDS if r["step"] <= 4]
    records_file(checkpoint / "training_state" / "metrics.jsonl", kept)  # the copy saved with checkpoint-4
    data = records_file(run / "metrics.jsonl", METRICS_RECORDS)
    for cut in range(len(data) + 1):
        (run / "metrics.jsonl").write_bytes(data[:cut])
        MetricsLog(run, True, 4, checkpoint=checkpoint)
        assert read_metrics(run) == kept, cut
    broken = data.replace(b'"step": 2', b'"step": 2\x00', 1)  # a line damaged in the middle of the file
    (run / "metrics.jsonl").write_bytes(broken)
    MetricsLog(run, True, 4, checkpoint=checkpoint)
    assert read_metrics(run) == kept
    assert "restored from" in capsys.readouterr().err


def test_config_cut_at_any_byte_keeps_the_resume_history(tmp_path, capsys):
    from nanogpt2.run_dir import read_run_config, resume_history

    run, checkpoint = tmp_path / "run", tmp_path / "run" / "checkpoint-4"
    history = [{"step": 2, "checkpoint": "run/checkpoint-2", "changed": {}}]
    (checkpoint / "training_state").mkdir(parents=True)
    (checkpoint / "training_state" / "trainer_state.json").write_text(json.dumps({"step": 4, "resumes": history}))
    data = json.dumps({"seed": 1, "resumes": history}, indent=2).encode()
    for cut in range(len(data)):
        (run / "config.json").write_bytes(data[:cut])
        with pytest.raises(DataError, match="config.json is not valid JSON"):
            read_run_config(run)
        assert resume_history(run, checkpoint) == history, cut
        assert resume_history(run, None) == []
    assert "config.json is not valid JSON" in capsys.readouterr().err


def test_what_a_kill_left_is_swept_and_a_moved_aside_checkpoint_comes_back(tmp_path):
    import subprocess
    import sys

    from nanogpt2.run_dir import sweep_unfinished_saves

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    run = tmp_path / "run"
    (run / ".tmp-checkpoint-6" / "training_state").mkdir(parents=True)  # a save cut by the kill
    (run / ".tmp-checkpoint-6" / "model.safetensors").write_bytes(b"\x10\x00")
    (run / f".tmp-{dead}-config.json").write_text('{"se')  # config.json being replaced
    (run / f".tmp-{dead}-metrics.jsonl").write_text('{"step": 1}\n')  # metrics.jsonl being rewritten on resume
    (run / f".tmp-{dead}-old-checkpoint-4").mkdir()  # checkpoint-4 moved aside to be replaced by a new save
    (run / f".tmp-{dead}-old-checkpoint-4" / "config.json").write_text("{}")
    (run / "notes.md").write_text("mine")
    sweep_unfinished_saves(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-4", "notes.md"]
    assert (run / "checkpoint-4" / "config.json").read_text() == "{}"


# -- (d) a checkpoint damaged after its save ---------------------------------------------------------
def fake_checkpoint(run: Path, step: int, with_checksums: bool = True) -> Path:
    """A checkpoint directory as run_checkpoints writes it (small files): real safetensors, trainer state."""
    import torch
    from safetensors.torch import save_file

    from nanogpt2.run_dir import write_checksums

    checkpoint = run / f"checkpoint-{step}"
    (checkpoint / "training_state").mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, checkpoint / "model.safetensors")
    save_file({"w": torch.arange(64, dtype=torch.float32)}, checkpoint / "training_state" / "model.safetensors")
    torch.save({"state": {0: torch.ones(8)}}, checkpoint / "training_state" / "optimizer.bin")
    (checkpoint / "training_state" / "trainer_state.json").write_text(json.dumps({"step": step}))
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "nanogpt2"}))
    if with_checksums:
        write_checksums(checkpoint)
    return checkpoint


@pytest.mark.parametrize("name", ["model.safetensors", "training_state/optimizer.bin",
                                  "training_state/model.safetensors"])
def test_a_checkpoint_file_cut_at_any_byte_or_changed_is_found(tmp_path, name):
    from nanogpt2.run_dir import checkpoint_damage

    checkpoint = fake_checkpoint(tmp_path / "run", 4)
    file = checkpoint / name
    data = file.read_bytes()
    assert checkpoint_damage(checkpoint) is None
    for cut in range(0, len(data), 7):
        file.write_bytes(data[:cut])
        assert "cut short" in checkpoint_damage(checkpoint), cut
    changed = bytearray(data)
    changed[len(data) // 2] ^= 1
    file.write_bytes(bytes(changed))
    assert checkpoint_damage(checkpoint) == f"{name} changed since it was saved (sha256 differs)"
    file.unlink()
    assert checkpoint_damage(checkpoint) == f"{name} is missing"


def test_a_checkpoint_without_checksums_cut_at_any_byte_is_found(tmp_path):
    from nanogpt2.run_dir import checkpoint_damage

    checkpoint = fake_checkpoint(tmp_path / "run", 4, with_checksums=False)
    data = (checkpoint / "model.safetensors").read_bytes()
    assert checkpoint_damage(checkpoint) is None
    for cut in range(len(data)):
        (checkpoint / "model.safetensors").write_bytes(data[:cut])
        assert checkpoint_damage(checkpoint).startswith("model.safetensors "), cut


def test_resume_latest_skips_a_damaged_checkpoint_and_a_named_one_is_refused(tmp_path, capsys):
    from nanogpt2.errors import PreflightError
    from nanogpt2.run_dir import resume_target

    run = tmp_path / "run"
    for step in (2, 4, 6):
        fake_checkpoint(run, step)
    for step in (4, 6):
        with open(run / f"checkpoint-{step}" / "model.safetensors", "r+b") as f:
            f.truncate(100)
    assert resume_target("latest", run) == run / "checkpoint-2"
    warning = capsys.readouterr().err
    assert "checkpoint-6 is damaged (model.safetensors has 100 bytes" in warning
    assert f"resuming from {run / 'checkpoint-2'}, the newest intact checkpoint" in warning
    with pytest.raises(PreflightError, match=f"resume from {run / 'checkpoint-2'}, the previous intact checkpoint"):
        resume_target(str(run / "checkpoint-6"), run)
    with open(run / "checkpoint-2" / "training_state" / "optimizer.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(PreflightError, match="every checkpoint of .* is damaged"):
        resume_target("latest", run)


# -- (c) one run per output directory ---------------------------------------------------------------
def test_a_second_run_into_a_locked_output_dir_is_refused_at_start(tmp_path, capsys, tinyshakespeare_file):
    from user_errors import assert_user_error, snapshot

    from nanogpt2.run_dir import OutputDirLock

    run = tmp_path / "run"
    holder = OutputDirLock(run).acquire()  # the first run, still writing
    try:
        (run / "metrics.jsonl").write_text('{"step": 1}\n')
        before = snapshot(run)
        for extra in ([], ["--resume_from_checkpoint", "latest"], ["--overwrite_output_dir"]):
            result = run_in_process(TINY + ["--train_file", tinyshakespeare_file, "--max_steps", "1",
                                            "--output_dir", run, *extra], capsys)
            line = assert_user_error(result, f"--output_dir {run} is in use by another run",
                                     f"process {__import__('os').getpid()}", before=before, roots=[run])
            assert "pass another --output_dir" in line
    finally:
        holder.release()
    assert not (run / ".nanogpt2.lock").exists()


def test_a_loop_driven_step_by_step_holds_the_output_dir_until_closed(tmp_path, tinyshakespeare_file):
    """PretrainingLoop used without train() (a notebook, a benchmark): the lock is held from construction
    until close() or the end of its `with` block, and then another run can use the directory."""
    from nanogpt2.errors import PreflightError
    from nanogpt2.run_config import resolve_config
    from nanogpt2.training import PretrainingLoop

    config = resolve_config([str(a) for a in TINY + ["--train_file", tinyshakespeare_file, "--max_steps", "1",
                                                      "--output_dir", tmp_path / "run"]])
    with PretrainingLoop(config) as loop:
        loop.train_step()
        with pytest.raises(PreflightError, match="in use by another run"):
            PretrainingLoop(config)
    assert not (tmp_path / "run" / ".nanogpt2.lock").exists()
    loop.close()  # a second close does nothing
    with PretrainingLoop(config) as again:
        assert again.step == 0


def test_a_killed_runs_lock_is_not_stuck(tmp_path):
    import os
    import signal
    import time

    from nanogpt2.run_dir import OutputDirLock

    run = tmp_path / "run"
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:  # the run that gets killed, holding the lock
        try:
            OutputDirLock(run).acquire()
            os.write(ready_write, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.read(ready_read, 1)
    with pytest.raises(Exception, match="in use by another run"):
        OutputDirLock(run).acquire()
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert (run / ".nanogpt2.lock").exists()  # left by the kill, but not held: the OS released the flock
    lock = OutputDirLock(run).acquire()
    lock.release()
    assert not (run / ".nanogpt2.lock").exists() and run.is_dir()


def test_a_run_refused_at_start_leaves_no_lock_and_no_directory(tmp_path, capsys, tinyshakespeare_file):
    result = run_in_process(TINY + ["--train_file", tinyshakespeare_file, "--output_dir", tmp_path / "new",
                                    "--resume_from_checkpoint", "latest"], capsys)
    assert result.returncode == 1 and "holds no checkpoint" in result.stderr
    assert not (tmp_path / "new").exists()


# -- end to end: resume after a kill, a damaged checkpoint, signals during a save ---------------------
RUN = TINY + ["--total_batch_size", "128", "--max_steps", "4", "--save_steps", "2"]


def train_records(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["train_loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "train_loss" in r]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tinyshakespeare_file):
    """4 uninterrupted steps, checkpoints 2 and 4: what every resumed run must reproduce bit for bit."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert pretrain_main(RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run]) == 0
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    return run


def copy_run(reference: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(reference, tmp_path / "run")
    return tmp_path / "run"


def cut(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(at)


@pytest.mark.slow
def test_a_run_killed_while_writing_any_file_resumes_exactly(reference_run, tmp_path, capsys, tinyshakespeare_file):
    """The kill came while checkpoint-4 was being written (its model.safetensors cut), with metrics.jsonl and
    config.json cut short too (at bytes inside the first record and the middle): `latest` resumes checkpoint-2
    and the run reproduces the uninterrupted one bit for bit, its metrics of steps 1-2 restored."""
    import os
    import subprocess
    import sys

    from nanogpt2.run_dir import checkpoint_damage

    run = copy_run(reference_run, tmp_path)
    os.replace(run / "checkpoint-4", run / ".tmp-checkpoint-4")
    cut(run / ".tmp-checkpoint-4" / "model.safetensors", 1234)
    cut(run / "metrics.jsonl", 40)
    cut(run / "config.json", (run / "config.json").stat().st_size // 2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (run / f".tmp-{dead}-metrics.jsonl").write_text("{")
    capsys.readouterr()
    code = pretrain_main(RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run,
                                "--resume_from_checkpoint", "latest"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert train_records(run) == train_records(reference_run)
    assert "config.json is not valid JSON" in err and "restored from" in err
    assert json.loads((run / "config.json").read_text())["resumes"][0]["step"] == 2
    assert not list(run.glob(".tmp-*")) and checkpoint_damage(run / "checkpoint-4") is None


@pytest.mark.slow
def test_a_damaged_checkpoint_is_skipped_by_latest_and_refused_by_name(reference_run, tmp_path, capsys,
                                                                       tinyshakespeare_file, hellaswag_file):
    from user_errors import assert_user_error, snapshot
    from user_errors import run_in_process as run_cli_in_process

    run = copy_run(reference_run, tmp_path)
    optimizer = run / "checkpoint-4" / "training_state" / "optimizer.bin"
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2] ^= 0x40  # a flipped bit: still a loadable file, only the checksum can tell
    optimizer.write_bytes(bytes(data))
    args = RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run]
    before = snapshot(run)
    result = run_in_process(args + ["--resume_from_checkpoint", run / "checkpoint-4"], capsys)
    assert_user_error(result, f"--resume_from_checkpoint {run / 'checkpoint-4'} is damaged",
                      "training_state/optimizer.bin changed since it was saved",
                      f"resume from {run / 'checkpoint-2'}, the previous intact checkpoint", before=before,
                      roots=[run])
    model = run / "checkpoint-4" / "model.safetensors"
    weights = bytearray(model.read_bytes())
    weights[-3] ^= 0x01
    model.write_bytes(bytes(weights))
    for command in (["eval_hellaswag.py", "--model", run / "checkpoint-4", "--data_file", hellaswag_file, "--limit",
                     "2"],
                    ["-m", "nanogpt2.convert", "to-gpt2", run / "checkpoint-4", tmp_path / "converted"]):
        result = run_cli_in_process(command)
        assert_user_error(result, "model.safetensors changed since it was saved", str(run / "checkpoint-2"))
    assert not (tmp_path / "converted").exists()

    capsys.readouterr()
    assert pretrain_main(args + ["--resume_from_checkpoint", "latest"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint-4 is damaged (model.safetensors changed since it was saved" in err
    assert f"resuming from {run / 'checkpoint-2'}, the newest intact checkpoint" in err
    assert train_records(run) == train_records(reference_run)  # and checkpoint-4 is written again, whole
    from nanogpt2.run_dir import checkpoint_damage

    assert checkpoint_damage(run / "checkpoint-4") is None


def signal_during_saves(monkeypatch, signals: list[int], after_step: int | None = None, first: int | None = None):
    """Each checkpoint write sends itself the next of `signals` (while its model files are written); with
    `after_step`, `first` is sent as that step is logged."""
    import os

    import nanogpt2.run_checkpoints as run_checkpoints
    from nanogpt2.training import PretrainingLoop

    write = run_checkpoints.write_model_files

    def write_and_signal(*args, **kwargs):
        if signals:
            os.kill(os.getpid(), signals.pop(0))
        return write(*args, **kwargs)

    monkeypatch.setattr(run_checkpoints, "write_model_files", write_and_signal)
    if after_step is not None:
        log_step = PretrainingLoop.log_step

        def log_and_signal(self, *args):
            log_step(self, *args)
            if self.step == after_step:
                os.kill(os.getpid(), first)

        monkeypatch.setattr(PretrainingLoop, "log_step", log_and_signal)


@pytest.mark.slow
def test_sigterm_during_a_checkpoint_write_stops_after_it_and_resumes_exactly(reference_run, tmp_path, capsys,
                                                                              monkeypatch, tinyshakespeare_file):
    import signal

    from nanogpt2.run_dir import checkpoint_damage

    run = tmp_path / "run"
    args = RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run]
    signal_during_saves(monkeypatch, [signal.SIGTERM])
    result = run_in_process(args, capsys)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    stopped = [line for line in result.stderr.splitlines() if line.startswith("stopped:")]
    assert stopped == [f"stopped: SIGTERM after step 2: saved {run / 'checkpoint-2'}; resume with the same command "
                       "plus --resume_from_checkpoint latest"]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]  # no step 3 after the signal
    assert checkpoint_damage(run / "checkpoint-2") is None and not (run / ".nanogpt2.lock").exists()
    monkeypatch.undo()
    assert pretrain_main(args + ["--resume_from_checkpoint", "latest"]) == 0
    assert train_records(run) == train_records(reference_run)


def test_a_second_sigterm_during_the_emergency_save_changes_nothing(tmp_path, capsys, monkeypatch,
                                                                    tinyshakespeare_file):
    import signal

    from nanogpt2.run_dir import checkpoint_damage

    run = tmp_path / "run"
    signal_during_saves(monkeypatch, [signal.SIGTERM], after_step=1, first=signal.SIGTERM)
    result = run_in_process(RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run], capsys)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "SIGTERM again: still saving" in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("stopped:")] == [
        f"stopped: SIGTERM after step 1: saved {run / 'checkpoint-1'}; resume with the same command plus "
        "--resume_from_checkpoint latest"]
    assert checkpoint_damage(run / "checkpoint-1") is None


@pytest.mark.slow
def test_ctrl_c_twice_during_the_emergency_save_keeps_the_last_complete_checkpoint(tmp_path, capsys, monkeypatch,
                                                                                   tinyshakespeare_file):
    import signal

    from nanogpt2.run_dir import checkpoint_damage

    run = tmp_path / "run"
    args = RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run, "--save_steps", "1"]
    signal_during_saves(monkeypatch, [0, signal.SIGINT], after_step=2, first=signal.SIGINT)  # 0: no signal
    result = run_in_process(args, capsys)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("stopped:")] == [
        f"stopped: SIGINT twice at step 2: stopped without saving; the last complete checkpoint is "
        f"{run / 'checkpoint-1'}; resume with the same command plus --resume_from_checkpoint latest"]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    assert checkpoint_damage(run / "checkpoint-1") is None and not (run / ".nanogpt2.lock").exists()


# -- numbers ------------------------------------------------------------------------------------------
NUMBER_CASES = [
    ("learning-rate-zero", ["--learning_rate", "0"], ["--learning_rate must be above 0"]),
    ("learning-rate-negative", ["--learning_rate=-1e-3"], ["--learning_rate must be above 0"]),
    ("learning-rate-nan", ["--learning_rate", "nan"], ["--learning_rate is nan; pass a finite number"]),
    ("learning-rate-inf", ["--learning_rate", "inf"], ["--learning_rate is inf; pass a finite number"]),
    ("grad-clip-nan", ["--max_grad_norm", "nan"], ["--max_grad_norm is nan"]),
    ("max-steps-zero", ["--max_steps", "0"], ["--max_steps must be at least 1"]),
    ("batch-not-divisible", ["--total_batch_size", "200"], ["--total_batch_size 200 is not divisible"]),
    ("sequence-above-context", ["--sequence_length", "2048", "--total_batch_size", "8192"],
     ["--block_size 2048 exceeds the model's context"]),
]


@pytest.mark.parametrize("case,extra,names", NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_numbers_out_of_range_are_one_line_before_anything_is_written(case, extra, names, tmp_path, capsys,
                                                                      tinyshakespeare_file):
    from user_errors import assert_user_error

    run = tmp_path / "run"
    result = run_in_process(TINY + ["--train_file", tinyshakespeare_file, "--output_dir", run, *extra], capsys)
    assert_user_error(result, *names)
    assert result.returncode == 1 and not run.exists()


def test_a_warmup_longer_than_the_run_is_one_warning(capsys):
    from nanogpt2.preflight import check_numbers
    from nanogpt2.run_config import resolve_config

    check_numbers(resolve_config(["--preset", "tiny", "--warmup_steps", "50", "--max_steps", "10"]))
    assert capsys.readouterr().err.strip() == ("warning: --warmup_steps 50 is longer than the run (--max_steps 10): "
                                               "the learning rate never reaches --learning_rate 0.002; pass "
                                               "--warmup_steps 10 or less")


def nan_loss_at(monkeypatch, steps: set[int]) -> None:
    """The loss of every micro-batch of the given (1-based) steps is NaN, as after a blow-up."""
    from nanogpt2.training import PretrainingLoop

    micro_step_loss = PretrainingLoop.micro_step_loss

    def poisoned(self, x, y):
        loss = micro_step_loss(self, x, y)
        return loss * float("nan") if self.step + 1 in steps else loss

    monkeypatch.setattr(PretrainingLoop, "micro_step_loss", poisoned)


@pytest.mark.slow
def test_a_nan_loss_stops_with_the_last_finite_state_saved(tmp_path, capsys, monkeypatch, tinyshakespeare_file):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    nan_loss_at(monkeypatch, {2})
    result = run_in_process(RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run, "--save_steps", "10",
                                   "--max_steps", "2"], capsys)
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and line == (
        f"error: step 2: the training loss is nan; stopped before updating the weights, the last finite state "
        f"(step 1) is {run / 'checkpoint-1'}. Lower --learning_rate or check the data, then --resume_from_checkpoint "
        "latest; or pass --on_nonfinite_loss skip to skip such steps")
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    weights = load_file(run / "checkpoint-1" / "model.safetensors")
    assert all(t.isfinite().all() for t in weights.values())
    state = json.loads((run / "checkpoint-1" / "training_state" / "data_rank0.json").read_text())
    assert state["step_in_epoch"] == 1  # the position after step 1: step 2's batch is read again on resume


@pytest.mark.slow
def test_a_nan_loss_is_skipped_and_counted_when_asked(tmp_path, capsys, monkeypatch, tinyshakespeare_file):
    run = tmp_path / "run"
    nan_loss_at(monkeypatch, {2})
    result = run_in_process(RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run, "--save_steps", "10",
                                   "--max_steps", "3", "--on_nonfinite_loss", "skip"], capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split("\r")[-1] for line in result.stderr.splitlines()]  # the progress bar's redraws cut off
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == ["warning: step 2: the training loss is nan; its update is skipped (1 so far, "
                        "--on_nonfinite_loss skip)"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped_steps", 0) for r in records if "train_loss" in r] == [0, 1, 1]
    assert records[-1]["val_loss"] < 20  # finite weights at the end


# -- secrets ------------------------------------------------------------------------------------------
SECRET = "hf_NanoGPT2TestSecretTokenDoNotWrite0123456789"


@pytest.mark.slow
def test_hf_token_is_in_no_file_the_project_writes(tmp_path, capsys, monkeypatch, tinyshakespeare_file):
    """With HF_TOKEN set: a run with TensorBoard and (mocked) pushes, whose checkpoint has a model card and
    tokenizer files, and a trained tokenizer; no file under the test's directory, and no output, holds it."""
    import nanogpt2.publish as publish
    import train_tokenizer

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(publish, "check_hub_access", lambda *args, **kwargs: None)
    monkeypatch.setattr(publish, "push_checkpoint", lambda *args, **kwargs: None)
    result = run_in_process(RUN + ["--train_file", tinyshakespeare_file, "--output_dir", tmp_path / "run",
                                   "--max_steps", "1", "--report_to", "tensorboard", "--push_to_hub",
                                   "--hub_model_id", "someone/tiny", "--hub_strategy", "every_save"], capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog " * 50)
    assert train_tokenizer.main(["--files", str(tmp_path / "corpus.txt"), "--vocab_size", "300", "--output_dir",
                                 str(tmp_path / "tokenizer")]) == 0
    output = result.stdout + result.stderr + "".join(capsys.readouterr())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    kinds = {p.name.split(".")[0] for p in written}
    assert {"config", "metrics", "README", "tokenizer", "tokenizer_config", "events", "trainer_state",
            "optimizer"} <= kinds  # the run's files, its card, TensorBoard's events, the tokenizers
    assert [p for p in written if SECRET.encode() in p.read_bytes()] == [] and SECRET not in output


# -- paths from outside -------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["../outside.bin", "/ABSOLUTE/outside.bin", "sub/../../outside.bin"])
def test_a_manifest_entry_outside_the_directory_is_refused(tmp_path, capsys, entry):
    from user_errors import assert_user_error, snapshot

    from nanogpt2.prepare import MANIFEST, Source, prepare_shards, verify_prepared

    path, _ = rows_file(tmp_path / "docs.jsonl", 300, {})
    data = tmp_path / "data"
    source = Source(data_files=[str(path)])
    prepare_shards(source, data, shard_size=500, progress=False)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"mine")
    entry = entry.replace("/ABSOLUTE", str(tmp_path))
    manifest = json.loads((data / MANIFEST).read_text())
    manifest["shards"][1]["file"] = entry
    (data / MANIFEST).write_text(json.dumps(manifest))
    before = snapshot(data, outside)
    for attempt in (lambda: verify_prepared(data), lambda: prepare_shards(source, data, shard_size=500,
                                                                          progress=False)):
        with pytest.raises(DataError, match=f"manifest.json: shard '{entry}' is not a relative path inside"):
            attempt()
    result = run_in_process(TINY + ["--data_dir", data, "--output_dir", tmp_path / "run", "--max_steps", "1"], capsys)
    assert_user_error(result, MANIFEST, entry, before=before, roots=[data, outside])
    assert not list((tmp_path / "run").glob("checkpoint-*"))


@pytest.mark.parametrize("name", ["../evil.bin", "/tmp/evil.bin", "a/../../evil.bin"])
def test_a_hub_file_name_outside_the_directory_is_refused(tmp_path, name):
    from nanogpt2.sources import download_hub_files

    with pytest.raises(DataError, match="is not a relative path inside"):
        download_hub_files("someone/shards", ["ok.bin", name], tmp_path / "shards")
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize("repo_id", ["../../evil", "/tmp/evil", "someone/../evil"])
def test_a_hub_model_id_with_a_path_is_refused_before_anything_is_written(tmp_path, capsys, repo_id,
                                                                          tinyshakespeare_file):
    from user_errors import assert_user_error

    result = run_in_process(TINY + ["--train_file", tinyshakespeare_file, "--output_dir", tmp_path / "run",
                                    "--push_to_hub", "--hub_model_id", repo_id], capsys)
    assert_user_error(result, f"--hub_model_id {repo_id!r} is not a valid repository id")
    assert list(tmp_path.iterdir()) == []


# -- train_tokenizer.py ---------------------------------------------------------------------------------
TOKENIZER_CASES = [
    ("empty-corpus", "", [], ["corpus holds no text"]),
    ("null-rows-only", "NULLS", [], ["corpus holds no text"]),
    ("one-character", "a" * 200, [], ["one distinct character only ('a')"]),
    ("vocabulary-too-small", "some real text here", ["--vocab_size", "256"], ["--vocab_size 256 is too small"]),
    ("output-dir-exists", "some real text here", ["--output_dir", "TMP/existing"],
     ["--output_dir", "existing already exists and is not empty", "--overwrite_output_dir"]),
    ("output-dir-is-a-file", "some real text here", ["--output_dir", "TMP/file.txt"], ["file.txt is a file"]),
]


@pytest.mark.parametrize("case,text,extra,names", TOKENIZER_CASES, ids=[c[0] for c in TOKENIZER_CASES])
def test_train_tokenizer_bad_inputs_are_one_line_and_change_nothing(case, text, extra, names, tmp_path):
    from user_errors import assert_user_error, snapshot
    from user_errors import run_in_process as run_cli_in_process

    corpus = tmp_path / ("corpus.jsonl" if text == "NULLS" else "corpus.txt")
    corpus.write_text('{"text": null}\n{"text": ""}\n' if text == "NULLS" else text)
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.md").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    before = snapshot(tmp_path)
    args = ["--files", corpus, "--vocab_size", "300", "--output_dir", tmp_path / "tokenizer"]
    result = run_cli_in_process(["train_tokenizer.py", *args, *[a.replace("TMP", str(tmp_path)) for a in extra]])
    assert_user_error(result, *names, before=before, roots=[tmp_path])
    assert not (tmp_path / "tokenizer").exists()


def test_train_tokenizer_overwrite_keeps_other_files(tmp_path):
    from user_errors import run_in_process as run_cli_in_process

    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog " * 20)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "notes.md").write_text("mine")
    result = run_cli_in_process(["train_tokenizer.py", "--files", tmp_path / "corpus.txt", "--vocab_size", "280",
                                 "--output_dir", tmp_path / "tok", "--overwrite_output_dir"])
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["notes.md", "tokenizer.json",
                                                                   "tokenizer_config.json"]


# -- a process of a launch killed ---------------------------------------------------------------------
def process_of_rank(marker: str, rank: int) -> int | None:
    """The pid of the launched process of `rank` whose environment holds NANOGPT2_TEST_MARKER=marker."""
    import os

    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"NANOGPT2_TEST_MARKER={marker}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.slow
@pytest.mark.two_processes
def test_a_killed_rank_stops_the_launch_in_bounded_time_and_the_run_resumes(tmp_path, capsys, tinyshakespeare_file):
    import os
    import signal
    import subprocess
    import time

    from test_training import REPO

    from nanogpt2.run_dir import checkpoint_damage, list_checkpoints

    run = tmp_path / "run"
    args = RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run, "--max_steps", "40", "--total_batch_size",
                  "256"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NANOGPT2_TEST_MARKER": str(tmp_path)}
    launch = subprocess.Popen([*two_process_launch(), "run_pretrain.py", *map(str, args)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list_checkpoints(run) and time.time() < deadline and launch.poll() is None:
            time.sleep(0.2)
        assert list_checkpoints(run), launch.stderr.read()[-3000:] if launch.poll() is not None else "no checkpoint"
        os.kill(process_of_rank(str(tmp_path), 1), signal.SIGKILL)
        killed = time.time()
        launch.communicate(timeout=120)
        assert launch.returncode != 0 and time.time() - killed < 60  # not the 30-minute collective timeout
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
    step, checkpoint = list_checkpoints(run)[-1]  # the lock file may stay: the OS released its lock
    assert checkpoint_damage(checkpoint) is None and 2 <= step < 40
    capsys.readouterr()
    assert pretrain_main(args + ["--max_steps", str(step + 1), "--resume_from_checkpoint", "latest"]) == 0
    assert f"resuming {checkpoint} (saved by 2 process(es)) on 1" in capsys.readouterr().err
    assert [s for s, _ in train_records(run)][-1] == step + 1
