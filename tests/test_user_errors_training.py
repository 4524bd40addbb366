"""run_pretrain.py's bad inputs and faults (issue 13): each case checks the exit code, one `error:` line
naming the flag or file, and that nothing the user already had changed (sha256 before and after).
Set-up failures run in this process (no interpreter start-up); real multi-step faults (SIGTERM, NaN,
a tampered shard) run as real processes and are marked slow."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import REPO, SMALL, train_losses
from user_errors import assert_user_error, pretrain_main, snapshot, two_process_launch

TINY = SMALL + ["--skip_hellaswag", "--num_samples", "0", "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2"]


def run_in_process(args, capsys, monkeypatch=None) -> subprocess.CompletedProcess:
    """run_pretrain.main(args) here, as a CompletedProcess (exit code, stdout, stderr) for user_errors' checks."""
    capsys.readouterr()
    code = pretrain_main(args)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tinyshakespeare_file):
    """A 2-step run with checkpoint-2, made once; cases copy it."""
    from nanogpt2.run_config import resolve_config
    from nanogpt2.training import PretrainingLoop

    run = tmp_path_factory.mktemp("finished") / "run"
    config = resolve_config(TINY + ["--train_file", str(tinyshakespeare_file), "--output_dir", str(run)])
    PretrainingLoop(config).train()
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


def bad_hellaswag(tmp_path, hellaswag_file) -> Path:
    lines = Path(hellaswag_file).read_text().splitlines()[:3]
    path = tmp_path / "hs.jsonl"
    path.write_text("\n".join(lines[:2] + ['{"ctx": "broken']) + "\n")
    return path


# (case id, extra args (TMP: the test's directory), what the one error line must name, needs the finished run)
CASES = [
    ("fresh-run-over-existing-run", [], ["--resume_from_checkpoint latest", "--overwrite_output_dir"], True),
    ("resume-latest-without-checkpoint", ["--resume_from_checkpoint", "latest", "--output_dir", "TMP/empty"],
     ["--resume_from_checkpoint latest", "holds no checkpoint"], False),
    ("resume-different-micro-batch", ["--resume_from_checkpoint", "latest", "--micro_batch_size", "8"],
     ["--per_device_train_batch_size was 4, now 8"], True),
    ("resume-different-sequence-length", ["--resume_from_checkpoint", "latest", "--sequence_length", "64",
                                          "--total_batch_size", "512"], ["--block_size was 32, now 64"], True),
    ("resume-different-total-batch", ["--resume_from_checkpoint", "latest", "--total_batch_size", "512"],
     ["--total_batch_size was 256, now 512"], True),
    ("resume-different-model-shape", ["--resume_from_checkpoint", "latest", "--n_layer", "3"],
     ["another model shape", "n_layer was 2, now 3"], True),
    ("resume-different-data", ["--resume_from_checkpoint", "latest", "--train_file", "TMP/moved.txt"],
     ["--train_file was"], True),
    ("resume-different-seed", ["--resume_from_checkpoint", "latest", "--seed", "7"], ["--seed was 1337, now 7"], True),
    ("save-total-limit-zero", ["--save_total_limit", "0"], ["--save_total_limit"], False),
    ("output-dir-is-a-file", ["--output_dir", "TMP/file.txt"], ["--output_dir", "is a file"], False),
    ("output-dir-under-a-file", ["--output_dir", "TMP/file.txt/run"], ["--output_dir", "file.txt is a file"], False),
    ("hellaswag-file-missing", ["--hellaswag_file", "TMP/nope.jsonl"], ["--hellaswag_file", "nope.jsonl"], False),
    ("hellaswag-line-malformed", ["--hellaswag_file", "TMP/hs.jsonl"], ["hs.jsonl:3"], False),
    ("hellaswag-offline-not-cached", [], ["--hellaswag_file"], False),
    ("push-to-hub-offline", ["--push_to_hub", "--hub_model_id", "someone/tiny"], ["HF_HUB_OFFLINE"], False),
    ("total-batch-not-divisible", ["--total_batch_size", "300"], ["--total_batch_size 300"], False),
    ("validation-split-empty", ["--validation_split_percentage", "0"], ["--validation_split_percentage", "above 0"],
     False),
    ("train-file-too-small", ["--train_file", "TMP/file.txt"], ["--train_file", "file.txt", "too few"], False),
    ("resume-path-not-a-checkpoint", ["--resume_from_checkpoint", "TMP"],
     ["--resume_from_checkpoint", "not a checkpoint"], False),
]


@pytest.mark.parametrize("case,extra,names,with_run", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, extra, names, with_run, request, tmp_path, capsys,
                                                    monkeypatch, tinyshakespeare_file, hellaswag_file):
    run = request.getfixturevalue("run_copy") if with_run else tmp_path / "run"
    (tmp_path / "file.txt").write_text("notes\n")
    bad_hellaswag(tmp_path, hellaswag_file)
    monkeypatch.setenv("NANOGPT2_CACHE", str(tmp_path / "cache"))  # HellaSwag not cached, offline
    args = [a.replace("TMP", str(tmp_path)) for a in extra]
    shutil.copy(tinyshakespeare_file, tmp_path / "moved.txt")
    base = [a for a in TINY if a != "--skip_hellaswag"] if case.startswith("hellaswag") else TINY
    before = snapshot(tmp_path)
    # later flags win
    result = run_in_process(base + ["--train_file", tinyshakespeare_file, "--output_dir", run] + args, capsys)
    line = assert_user_error(result, *names, before=before, roots=[tmp_path])
    assert "--data_file" not in line
    assert result.returncode == 1


def test_overwrite_output_dir_starts_over_and_keeps_other_files(run_copy, capsys, tinyshakespeare_file):
    (run_copy / "notes.md").write_text("my notes\n")
    result = run_in_process(TINY + ["--train_file", tinyshakespeare_file, "--output_dir", run_copy, "--max_steps", "1",
                                    "--save_steps", "1", "--overwrite_output_dir"], capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in run_copy.glob("checkpoint-*")) == ["checkpoint-1"]  # the old checkpoint-2 went
    assert len(train_losses(run_copy)[0]) == 1 and (run_copy / "notes.md").read_text() == "my notes\n"


def test_resume_records_changed_settings_and_save_total_limit_keeps_the_newest(run_copy, capsys, tinyshakespeare_file):
    result = run_in_process(TINY + ["--train_file", tinyshakespeare_file, "--output_dir", run_copy, "--max_steps", "4",
                                    "--save_steps", "1", "--save_total_limit", "1", "--learning_rate", "1e-3",
                                    "--resume_from_checkpoint", "latest"], capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "learning_rate 0.003 -> 0.001" in result.stderr
    resumes = json.loads((run_copy / "config.json").read_text())["resumes"]
    assert len(resumes) == 1 and resumes[0]["step"] == 2 and resumes[0]["checkpoint"] == str(run_copy / "checkpoint-2")
    assert resumes[0]["changed"] == {  # the run directory was copied: output_dir changed too
        "learning_rate": {"was": 0.003, "now": 0.001}, "max_steps": {"was": 2, "now": 4},
        "save_steps": {"was": 2, "now": 1}, "save_total_limit": {"was": None, "now": 1},
        "output_dir": {"was": resumes[0]["changed"]["output_dir"]["was"], "now": str(run_copy)}}
    # limit 1: checkpoint-3 went; checkpoint-2 (resumed from) and checkpoint-4 (just saved) stay
    assert sorted(p.name for p in run_copy.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_full_disk_at_save_keeps_the_previous_checkpoint(run_copy, capsys, monkeypatch, tinyshakespeare_file):
    import nanogpt2.run_checkpoints as run_checkpoints

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run_checkpoints, "write_model_files", no_space)  # the disk fills while writing checkpoint-4
    before = snapshot(run_copy / "checkpoint-2")
    result = run_in_process(TINY + ["--train_file", tinyshakespeare_file, "--output_dir", run_copy, "--max_steps", "4",
                                    "--resume_from_checkpoint", "latest"], capsys)
    line = assert_user_error(result, "checkpoint-4", "No space left", "checkpoint-2 is kept",
                             before=before, roots=[run_copy / "checkpoint-2"])
    assert "--resume_from_checkpoint latest" in line
    assert not list(run_copy.glob(".tmp-*")) and not (run_copy / "checkpoint-4").exists()


def test_tampered_or_unfinished_shards_are_refused_before_any_checkpoint(tmp_path, capsys, english_mix_file):
    from nanogpt2.prepare import MANIFEST, Source, prepare_shards

    data = tmp_path / "data"
    prepare_shards(Source(data_files=[str(english_mix_file)]), data, shard_size=20_000, max_tokens=60_000,
                   progress=False)
    shard = data / "shard_train_000002.bin"
    tampered = bytearray(shard.read_bytes())
    tampered[-1] ^= 1  # a valid token still: only the sha256 can tell
    shard.write_bytes(bytes(tampered))
    args = TINY + ["--data_dir", data, "--output_dir", tmp_path / "run", "--max_steps", "1", "--save_steps", "1"]
    before = snapshot(data)
    result = run_in_process(args, capsys)
    assert_user_error(result, "shard_train_000002.bin", "sha256", before=before, roots=[data])
    assert not list((tmp_path / "run").glob("checkpoint-*")) and "loss=" not in result.stderr  # before step 1

    manifest = json.loads((data / MANIFEST).read_text())
    (data / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    assert_user_error(run_in_process(args, capsys), "manifest.json", "did not finish", "prepare_fineweb.py")


def test_failed_intermediate_push_is_retried_reported_and_training_goes_on(tmp_path, capsys, monkeypatch,
                                                                           tinyshakespeare_file):
    import nanogpt2.publish as publish
    from nanogpt2.run_checkpoints import RunCheckpoints

    pushes = []

    def flaky_push(checkpoint, repo_id, **kwargs):
        pushes.append(Path(checkpoint).name)
        if len(pushes) <= 3:
            raise publish.PublishError(f"pushing {checkpoint} to {repo_id} failed (503 Service Unavailable)")

    monkeypatch.setattr(publish, "check_hub_access", lambda *args, **kwargs: None)
    monkeypatch.setattr(publish, "push_checkpoint", flaky_push)
    monkeypatch.setattr(RunCheckpoints, "PUSH_RETRY_SECONDS", 0.0)
    result = run_in_process(TINY + ["--train_file", tinyshakespeare_file, "--output_dir", tmp_path / "run",
                                    "--save_steps", "1", "--push_to_hub", "--hub_model_id", "someone/tiny",
                                    "--hub_strategy", "every_save"], capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert pushes == ["checkpoint-1"] * 3 + ["checkpoint-2"]  # the final checkpoint is not pushed twice
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "checkpoint-1" in warnings[0] and "after 3 attempts" in warnings[0]
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


# -- real processes ---------------------------------------------------------------------------------
def launch(args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "run_pretrain.py", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_sigterm_saves_and_resume_is_bit_identical(tmp_path, tinyshakespeare_file):
    args = SMALL + ["--train_file", tinyshakespeare_file, "--skip_hellaswag", "--num_samples", "0", "--max_steps", 8,
                    "--eval_steps", 100, "--save_steps", 100]
    reference = launch(args + ["--output_dir", tmp_path / "reference"])
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:]

    run = tmp_path / "run"
    process = launch(args + ["--output_dir", run])
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM
    stderr = process.stderr.read()
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "SIGTERM" in stopped[0] and "--resume_from_checkpoint latest" in stopped[0], stderr
    (checkpoint,) = run.glob("checkpoint-*")
    assert str(checkpoint) in stopped[0] and 2 <= int(checkpoint.name.split("-")[1]) < 8

    resumed = launch(args + ["--output_dir", run, "--resume_from_checkpoint", "latest"])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    assert train_losses(run)[0] == train_losses(tmp_path / "reference")[0]  # bit for bit


@pytest.mark.slow
def test_diverging_run_stops_and_keeps_only_finite_checkpoints(tmp_path, tinyshakespeare_file):
    result = subprocess.run([sys.executable, "run_pretrain.py", *map(str, SMALL + [
        "--train_file", tinyshakespeare_file, "--skip_hellaswag", "--num_samples", "0", "--max_steps", 40,
        "--save_steps", 1, "--eval_steps", 100, "--learning_rate", "1e9", "--warmup_steps", "1",
        "--max_grad_norm", "1e9", "--output_dir", tmp_path])], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "training loss is nan" in line or "training loss is inf" in line
    checkpoints = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints and not list(tmp_path.glob(".tmp-*"))
    diverged_step = int(line.split("step ")[1].split(":")[0])
    assert int(checkpoints[-1].name.split("-")[1]) == diverged_step - 1  # the last finite step, not the NaN one
    weights = load_file(checkpoints[-1] / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def launch_two_processes(args) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.Popen([*two_process_launch(), "run_pretrain.py", *map(str, args)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_no_traceback_of_ours(stderr: str) -> None:
    """torch's elastic agent (inside `accelerate launch`) prints its own traceback whenever a process exits
    non-zero; none may come from run_pretrain.py or nanogpt2."""
    assert "nanogpt2/" not in stderr and 'run_pretrain.py", line' not in stderr, stderr[-4000:]


@pytest.mark.slow
@pytest.mark.two_processes
def test_two_processes_print_a_user_error_once(run_copy, tinyshakespeare_file):
    before = snapshot(run_copy)
    process = launch_two_processes(TINY + ["--train_file", tinyshakespeare_file, "--output_dir", run_copy])
    assert process.wait(timeout=600) != 0
    stderr = process.stderr.read()
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--overwrite_output_dir" in errors[0], stderr[-4000:]
    assert_no_traceback_of_ours(stderr)
    assert snapshot(run_copy) == before


@pytest.mark.slow
@pytest.mark.two_processes
def test_two_processes_agree_to_save_on_sigterm(tmp_path, tinyshakespeare_file):
    run = tmp_path / "run"
    process = launch_two_processes(SMALL + ["--train_file", tinyshakespeare_file, "--skip_hellaswag", "--num_samples",
                                            0, "--max_steps", 50, "--eval_steps", 100, "--save_steps", 100,
                                            "--output_dir", run])
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # to the launcher, which forwards it to both processes
    assert process.wait(timeout=300) != 0
    stderr = process.stderr.read()
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "SIGTERM after step" in stopped[0], stderr[-4000:]
    assert_no_traceback_of_ours(stderr)
    (checkpoint,) = run.glob("checkpoint-*")
    assert str(checkpoint) in stopped[0]
    assert sorted(p.name for p in (checkpoint / "training_state").glob("data_rank*.json")) == [
        "data_rank0.json", "data_rank1.json"]  # both ranks saved at the same step
