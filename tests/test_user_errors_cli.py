"""Bad inputs and faults, tried as a user would, on every command but run_pretrain.py's training run:
`python -m nanogpt2.convert`, `prepare_fineweb.py`, `eval_hellaswag.py`, `python -m nanogpt2.publish`,
`python -m nanogpt2.plot` and `train_tokenizer.py` (docs/reliability.md lists every case).

Each case runs the command as a real process and asserts (tests/user_errors.py): the exit code is not 0,
stderr has exactly one `error:` line, no traceback, the line names the flag or file, and every file that
existed before has the same sha256 afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from user_errors import (
    REPO,
    assert_user_error,
    error_line,
    run_cli,
    run_in_process,
    snapshot,
)

from nanogpt2.convert import convert_from_gpt2
from nanogpt2.prepare import MANIFEST, Source, prepare_shards

CONVERT = ["-m", "nanogpt2.convert"]
PUBLISH = ["-m", "nanogpt2.publish"]
PLOT = ["-m", "nanogpt2.plot"]
PREPARE = [REPO / "prepare_fineweb.py"]
EVAL = [REPO / "eval_hellaswag.py"]
TOKENIZER = [REPO / "train_tokenizer.py"]
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def full_disk(module_or_script, *args) -> list:
    """`python -c ...` that runs the command with every fsync failing with ENOSPC, as a full disk does
    (fsync is where a delayed write error surfaces: the commit step of every atomic directory write)."""
    code = ("import errno, os, runpy, sys\n"
            "def full(fd): raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "os.fsync = full\n"
            f"sys.argv = ['cmd', *{[str(a) for a in args]!r}]\n")
    if str(module_or_script).endswith(".py"):
        code += f"runpy.run_path({str(module_or_script)!r}, run_name='__main__')\n"
    else:
        code += f"runpy.run_module({module_or_script!r}, run_name='__main__', alter_sys=True)\n"
    return ["-c", code]


# -- inputs shared by the cases ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory, hf_gpt2_fixture_dir, english_mix_file, hellaswag_file):
    """Read-only inputs the cases start from: a nanogpt2 checkpoint, small corpora, a prepared directory,
    a small HellaSwag file, a run directory."""
    root = tmp_path_factory.mktemp("inputs")
    ours = root / "nanogpt2-checkpoint"
    convert_from_gpt2(str(hf_gpt2_fixture_dir), str(ours))
    with open(english_mix_file, encoding="utf-8") as f:
        lines = [next(f) for _ in range(40)]
    corpus = root / "docs.jsonl"
    corpus.write_text("".join(lines), encoding="utf-8")
    prepared = root / "prepared"
    prepare_shards(Source(data_files=[str(corpus)]), prepared, shard_size=20_000, progress=False)
    hellaswag = root / "hellaswag_small.jsonl"
    with open(hellaswag_file, encoding="utf-8") as f:
        hellaswag.write_text("".join(next(f) for _ in range(4)), encoding="utf-8")
    run = root / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "tokens": 10, "train_loss": 5.0}\n')
    return {"hf": Path(hf_gpt2_fixture_dir), "ours": ours, "corpus": corpus, "prepared": prepared,
            "hellaswag": hellaswag, "run": run}


def existing_run(tmp_path: Path) -> Path:
    """A directory a user cares about: a training run's notes, metrics and checkpoint."""
    run = tmp_path / "runs" / "mine"
    (run / "checkpoint-100").mkdir(parents=True)
    (run / "checkpoint-100" / "model.safetensors").write_bytes(b"weights of a long run")
    (run / "metrics.jsonl").write_text('{"step": 100, "train_loss": 3.1}\n')
    (run / "notes.txt").write_text("lr sweep, keep\n")
    return run


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for file in src.iterdir():
        if file.is_file():
            (dst / file.name).write_bytes(file.read_bytes())
    return dst


# -- the cases: each returns (command args, names the error line must contain, roots to snapshot) -----
CASES = {}


def case(name):
    def register(function):
        CASES[name] = function
        return function
    return register


@case("convert_from_gpt2_into_an_existing_run_dir")
def _(t, i):
    run = existing_run(t)
    return [*CONVERT, "from-gpt2", i["hf"], run], [str(run), "--overwrite_output_dir"], [run]


@case("convert_to_gpt2_into_an_existing_run_dir")
def _(t, i):
    run = existing_run(t)
    return [*CONVERT, "to-gpt2", i["ours"], run], [str(run), "--overwrite_output_dir"], [run]


@case("convert_output_dir_is_a_file")
def _(t, i):
    (t / "out").write_text("a file")
    return [*CONVERT, "from-gpt2", i["hf"], t / "out"], [str(t / "out"), "is a file"], [t]


@case("convert_output_dir_under_a_file")
def _(t, i):
    (t / "afile").write_text("a file")
    return [*CONVERT, "from-gpt2", i["hf"], t / "afile" / "out"], [str(t / "afile")], [t]


@case("convert_output_dir_not_writable")
def _(t, i):
    if ROOT:
        pytest.skip("root writes anywhere")
    (t / "ro").mkdir()
    (t / "ro").chmod(0o555)
    return [*CONVERT, "from-gpt2", i["hf"], t / "ro" / "out"], ["not writable"], [t]


@case("convert_missing_source")
def _(t, i):
    return [*CONVERT, "from-gpt2", t / "nope", t / "out"], [str(t / "nope")], [t]


@case("convert_pickle_only_checkpoint_is_unsafe")
def _(t, i):
    src = t / "pickle_only"
    src.mkdir()
    (src / "config.json").write_bytes((i["hf"] / "config.json").read_bytes())
    torch.save({"wte.weight": torch.zeros(2, 2)}, src / "pytorch_model.bin")
    return [*CONVERT, "from-gpt2", src, t / "out"], ["pytorch_model.bin", "unsafe"], [t]


@case("convert_truncated_safetensors")
def _(t, i):
    src = copy_checkpoint(i["hf"], t / "truncated")
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    return [*CONVERT, "from-gpt2", src, t / "out"], [str(src / "model.safetensors"), "refused"], [t]


@case("convert_tampered_safetensors_header")
def _(t, i):
    src = copy_checkpoint(i["hf"], t / "tampered")
    data = bytearray((src / "model.safetensors").read_bytes())
    data[8:16] = b'{"x":{"d'  # the JSON header no longer parses
    (src / "model.safetensors").write_bytes(bytes(data))
    return [*CONVERT, "from-gpt2", src, t / "out"], [str(src / "model.safetensors"), "refused"], [t]


@case("convert_weights_do_not_match_config")
def _(t, i):
    src = copy_checkpoint(i["hf"], t / "reshaped")
    config = json.loads((src / "config.json").read_text())
    config["n_positions"] = config.get("n_positions", 1024) * 2
    (src / "config.json").write_text(json.dumps(config))
    return [*CONVERT, "from-gpt2", src, t / "out"], ["wpe.weight", "shape"], [t]


@case("convert_config_json_broken")
def _(t, i):
    src = copy_checkpoint(i["hf"], t / "broken")
    (src / "config.json").write_text('{"model_type": "gpt2",')
    return [*CONVERT, "from-gpt2", src, t / "out"], [str(src / "config.json")], [t]


@case("convert_to_gpt2_of_a_gpt2_checkpoint")
def _(t, i):
    return [*CONVERT, "to-gpt2", i["hf"], t / "out"], ["expected 'nanogpt2'"], [t]


@case("convert_pad_vocab_multiple_zero")
def _(t, i):
    return [*CONVERT, "from-gpt2", i["hf"], t / "out", "--pad_vocab_multiple", "0"], ["--pad_vocab_multiple"], [t]


@case("convert_output_dir_is_the_source")
def _(t, i):
    src = copy_checkpoint(i["ours"], t / "ckpt")
    return [*CONVERT, "to-gpt2", src, src, "--overwrite_output_dir"], [str(src), "source"], [t]


@case("convert_full_disk_keeps_the_existing_dir")
def _(t, i):
    run = existing_run(t)
    return full_disk("nanogpt2.convert", "from-gpt2", i["hf"], run, "--overwrite_output_dir"), \
        ["no space left", str(run)], [run]


@case("eval_limit_zero")
def _(t, i):
    return [*EVAL, "--model", i["ours"], "--data_file", i["hellaswag"], "--limit", "0"], ["--limit"], [t]


@case("eval_batch_size_zero")
def _(t, i):
    return [*EVAL, "--model", i["ours"], "--data_file", i["hellaswag"], "--batch_size", "0"], ["--batch_size"], [t]


@case("eval_max_length_one")
def _(t, i):
    return [*EVAL, "--model", i["ours"], "--data_file", i["hellaswag"], "--max_length", "1"], ["--max_length"], [t]


@case("eval_device_cuda_without_cuda")
def _(t, i):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return [*EVAL, "--model", i["ours"], "--data_file", i["hellaswag"], "--device", "cuda"], ["--device cuda"], [t]


@case("eval_device_unknown")
def _(t, i):
    return [*EVAL, "--model", i["ours"], "--data_file", i["hellaswag"], "--device", "gpu0"], ["--device"], [t]


@case("eval_output_file_is_a_directory")
def _(t, i):
    (t / "results").mkdir()
    (t / "results" / "old.json").write_text("{}")
    return [*EVAL, "--model", i["ours"], "--data_file", i["hellaswag"], "--output_file", t / "results"], \
        ["--output_file", "is a directory"], [t]


@case("eval_predictions_file_under_a_file")
def _(t, i):
    (t / "afile").write_text("x")
    return [*EVAL, "--model", i["ours"], "--data_file", i["hellaswag"], "--predictions_file",
            t / "afile" / "p.jsonl"], ["--predictions_file"], [t]


@case("eval_missing_data_file")
def _(t, i):
    return [*EVAL, "--model", i["ours"], "--data_file", t / "hellaswag_vall.jsonl"], ["hellaswag_vall.jsonl"], [t]


@case("eval_data_file_not_utf8")
def _(t, i):
    bad = t / "latin1.jsonl"
    bad.write_bytes(i["hellaswag"].read_bytes().split(b"\n")[0] + b"\n{\"ctx\": \"caf\xe9\"}\n")
    return [*EVAL, "--model", i["ours"], "--data_file", bad], [f"{bad}:2", "UTF-8"], [t]


@case("eval_data_file_malformed_line")
def _(t, i):
    bad = t / "cut.jsonl"
    bad.write_bytes(i["hellaswag"].read_bytes()[:-40])  # the last line cut short
    return [*EVAL, "--model", i["ours"], "--data_file", bad], [f"{bad}:4", "malformed JSON"], [t]


@case("eval_model_pickle_only")
def _(t, i):
    src = t / "pickle_model"
    src.mkdir()
    (src / "config.json").write_bytes((i["ours"] / "config.json").read_bytes())
    torch.save({}, src / "pytorch_model.bin")
    return [*EVAL, "--model", src, "--data_file", i["hellaswag"]], ["--model", "unsafe"], [t]


@case("eval_model_truncated_safetensors")
def _(t, i):
    src = copy_checkpoint(i["ours"], t / "cut_model")
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[:1000])
    return [*EVAL, "--model", src, "--data_file", i["hellaswag"]], ["--model", str(src)], [t]


@case("eval_missing_model_dir")
def _(t, i):
    return [*EVAL, "--model", t / "no_such_ckpt", "--data_file", i["hellaswag"]], ["--model"], [t]


@case("prepare_corpus_smaller_than_one_shard")
def _(t, i):
    return [*PREPARE, "--data_files", i["corpus"], "--output_dir", t / "out"], ["--shard_size"], [t]


@case("prepare_non_utf8_jsonl_names_file_and_line")
def _(t, i):
    bad = t / "mixed.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n{"text": "also fine"}\n{"text": "caf\xe9"}\n')
    return [*PREPARE, "--data_files", bad, "--output_dir", t / "out", "--shard_size", "4"], [f"{bad}:3", "UTF-8"], [t]


@case("prepare_binary_txt_names_file_and_line")
def _(t, i):
    bad = t / "image.txt"
    bad.write_bytes(b"line one\nline two\n\x89PNG\r\n\x1a\n\x00\xff\xfe")
    return [*PREPARE, "--data_files", bad, "--output_dir", t / "out", "--shard_size", "2"], [f"{bad}:3"], [t]


@case("prepare_malformed_jsonl_line")
def _(t, i):
    bad = t / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b"\n')
    return [*PREPARE, "--data_files", bad, "--output_dir", t / "out", "--shard_size", "2"], [f"{bad}:2"], [t]


@case("prepare_output_dir_is_a_file")
def _(t, i):
    (t / "out").write_text("x")
    return [*PREPARE, "--data_files", i["corpus"], "--output_dir", t / "out"], ["--output_dir", "is a file"], [t]


@case("prepare_output_dir_holds_other_files")
def _(t, i):
    out = t / "shards"
    out.mkdir()
    (out / "edufineweb_train_000001.bin").write_bytes(b"someone else's shard")
    return [*PREPARE, "--data_files", i["corpus"], "--output_dir", out, "--shard_size", "2000"], \
        ["--output_dir", "edufineweb_train_000001.bin"], [t]


@case("prepare_shard_size_zero")
def _(t, i):
    return [*PREPARE, "--data_files", i["corpus"], "--output_dir", t / "out", "--shard_size", "0"], \
        ["--shard_size"], [t]


@case("prepare_missing_data_file")
def _(t, i):
    return [*PREPARE, "--data_files", t / "docs.jsonl", "--output_dir", t / "out"], [str(t / "docs.jsonl")], [t]


@case("prepare_data_file_is_a_directory")
def _(t, i):
    (t / "corpus").mkdir()
    return [*PREPARE, "--data_files", t / "corpus", "--output_dir", t / "out"], [str(t / "corpus")], [t]


@case("prepare_rerun_with_other_settings")
def _(t, i):
    out = t / "prepared"
    out.mkdir()
    for file in i["prepared"].iterdir():
        (out / file.name).write_bytes(file.read_bytes())
    return [*PREPARE, "--data_files", i["corpus"], "--output_dir", out, "--shard_size", "30000"], \
        [str(out / MANIFEST), "shard_size"], [t]


@case("prepare_damaged_manifest")
def _(t, i):
    out = t / "prepared"
    out.mkdir()
    (out / MANIFEST).write_text('{"shards": ')
    return [*PREPARE, "--data_files", i["corpus"], "--output_dir", out], [str(out / MANIFEST)], [t]


@case("prepare_hub_dataset_offline")
def _(t, i):
    return [*PREPARE, "--dataset_name", "HuggingFaceFW/fineweb-edu", "--output_dir", t / "out"], \
        ["HuggingFaceFW/fineweb-edu", "--data_files"], [t]


@case("prepare_verify_incomplete_manifest")
def _(t, i):
    out = t / "prepared"
    out.mkdir()
    for file in i["prepared"].iterdir():
        (out / file.name).write_bytes(file.read_bytes())
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["complete"] = False
    (out / MANIFEST).write_text(json.dumps(manifest))
    return [*PREPARE, "--verify", "--output_dir", out], [str(out / MANIFEST), "did not finish",
                                                          "python prepare_fineweb.py --data_files"], [t]


@case("prepare_verify_tampered_shard")
def _(t, i):
    out = t / "prepared"
    out.mkdir()
    for file in i["prepared"].iterdir():
        (out / file.name).write_bytes(file.read_bytes())
    shard = out / json.loads((out / MANIFEST).read_text())["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # one bit, same size: only the sha256 sees it
    shard.write_bytes(bytes(data))
    return [*PREPARE, "--verify", "--output_dir", out], [str(shard), "sha256"], [t]


@case("prepare_verify_without_manifest")
def _(t, i):
    (t / "shards").mkdir()
    return [*PREPARE, "--verify", "--output_dir", t / "shards"], [str(t / "shards"), "manifest.json"], [t]


@case("publish_offline_with_a_token")
def _(t, i):
    return [*PUBLISH, i["ours"], "someone/model"], ["HF_HUB_OFFLINE"], [i["ours"]]


@case("publish_missing_checkpoint")
def _(t, i):
    return [*PUBLISH, t / "checkpoint-9", "someone/model"], [str(t / "checkpoint-9")], [t]


@case("publish_not_a_checkpoint")
def _(t, i):
    run = existing_run(t)
    return [*PUBLISH, run, "someone/model"], [str(run), "config.json"], [t]


@case("publish_run_dir_without_metrics")
def _(t, i):
    (t / "empty_run").mkdir()
    return [*PUBLISH, i["ours"], "someone/model", "--run_dir", t / "empty_run"], ["--run_dir"], [t, i["ours"]]


@case("plot_missing_metrics")
def _(t, i):
    return [*PLOT, t], [str(t / "metrics.jsonl")], [t]


@case("plot_malformed_metrics_line")
def _(t, i):
    (t / "metrics.jsonl").write_text('{"step": 1, "tokens": 1, "train_loss": 4.0}\nnot json\n{"step": 2}\n')
    return [*PLOT, t], [f"{t / 'metrics.jsonl'}:2"], [t]


@case("plot_output_is_a_directory")
def _(t, i):
    (t / "pngs").mkdir()
    return [*PLOT, i["run"], "--output", t / "pngs"], ["--output", "is a directory"], [t, i["run"]]


@case("plot_output_unknown_type")
def _(t, i):
    return [*PLOT, i["run"], "--output", t / "curves.xyz"], ["--output", ".xyz"], [t, i["run"]]


@case("tokenizer_output_dir_holds_other_files")
def _(t, i):
    run = existing_run(t)
    return [*TOKENIZER, "--files", i["corpus"], "--vocab_size", "300", "--output_dir", run], \
        [str(run), "--overwrite_output_dir"], [t]


@case("tokenizer_output_dir_is_a_file")
def _(t, i):
    (t / "tok").write_text("x")
    return [*TOKENIZER, "--files", i["corpus"], "--output_dir", t / "tok"], ["--output_dir", "is a file"], [t]


@case("tokenizer_non_utf8_txt")
def _(t, i):
    bad = t / "latin1.txt"
    bad.write_bytes("premi\u00e8re ligne\n".encode() + "deuxi\u00e8me".encode("latin-1"))
    return [*TOKENIZER, "--files", bad, "--vocab_size", "300", "--output_dir", t / "tok"], [f"{bad}:2", "UTF-8"], [t]


@case("tokenizer_missing_file")
def _(t, i):
    return [*TOKENIZER, "--files", t / "input.txt", "--output_dir", t / "tok"], [str(t / "input.txt")], [t]


@case("tokenizer_vocab_size_too_small")
def _(t, i):
    return [*TOKENIZER, "--files", i["corpus"], "--vocab_size", "100", "--output_dir", t / "tok"], \
        ["--vocab_size"], [t]


# the full-disk cases are real processes (python -c with os.fsync patched): in the slow tier
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow if "full_disk" in name else ())
                                  for name in sorted(CASES)])
def test_bad_input_is_one_line_and_changes_nothing(name, tmp_path, inputs):
    """In this process (the command's __main__ with its argv: what a real process runs, without paying the
    interpreter and transformers start-up per case); the full-disk cases patch os.fsync in a real process."""
    args, names, roots = CASES[name](tmp_path, inputs)
    roots = [*roots, *inputs.values()]
    before = snapshot(*roots)
    run = run_cli if args[0] == "-c" else run_in_process
    result = run(args, env={"HF_TOKEN": "hf_not_a_real_token_for_the_offline_case"})
    line = assert_user_error(result, *names, before=before, roots=roots)
    assert "weights_only" not in result.stderr, line
    # nothing half-made is left: no temporary file, and an output directory that did not exist still does not
    assert not [p for root in roots if Path(root).is_dir() for p in Path(root).rglob(".tmp-*")], line
    assert not (tmp_path / "out").is_dir(), line


# -- what the user asked for still works, and what killed runs left behind is cleaned up ---------------
@pytest.mark.slow
def test_overwrite_output_dir_replaces_as_asked_and_sweeps_stale_temporaries(tmp_path, inputs):
    run = existing_run(tmp_path)
    stale = tmp_path / "runs" / ".tmp-999999999-abcd1234-mine"  # a conversion killed before its rename
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    result = run_cli([*CONVERT, "from-gpt2", inputs["hf"], run, "--overwrite_output_dir"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "model.safetensors").is_file() and not (run / "notes.txt").exists()
    assert not stale.exists()


@pytest.mark.slow
def test_tokenizer_overwrite_output_dir_keeps_other_files(tmp_path, inputs):
    run = existing_run(tmp_path)
    result = run_cli([*TOKENIZER, "--files", inputs["corpus"], "--vocab_size", "300", "--output_dir", run,
                      "--overwrite_output_dir"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "tokenizer.json").is_file() and (run / "notes.txt").read_text() == "lr sweep, keep\n"


@pytest.mark.slow
def test_prepare_skips_and_counts_null_and_empty_rows(tmp_path):
    data = tmp_path / "rows.jsonl"
    rows = [{"text": "one two"}, {"text": None}, {"text": ""}, {"text": "three"}, {"text": None}, {"text": "four"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli([*PREPARE, "--data_files", data, "--output_dir", tmp_path / "out", "--shard_size", "3",
                      "--num_proc", "1"])
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["skipped_documents"] == 3 and manifest["total_documents"] == 3
    assert "3 rows without text skipped: null, empty or not a string" in result.stdout
    # the first of them named with its file and line, once
    assert [line for line in result.stderr.splitlines() if "warning:" in line] == [
        f"warning: {data}:2: 'text' is null; the row is skipped, as are any others without text (they are counted)"]


@pytest.mark.slow
def test_prepare_sweeps_stray_temporaries_and_verify_passes(tmp_path, inputs):
    out = tmp_path / "prepared"
    out.mkdir()
    for file in inputs["prepared"].iterdir():
        (out / file.name).write_bytes(file.read_bytes())
    stray = out / ".tmp-999999999-shard_train_000002.bin"  # a shard write killed before its rename
    stray.write_bytes(b"partial")
    result = run_cli([*PREPARE, "--data_files", inputs["corpus"], "--output_dir", out, "--shard_size", "20000"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert not stray.exists()
    verified = run_cli([*PREPARE, "--verify", "--output_dir", out])
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stderr[-2000:]


@pytest.mark.slow
def test_kill_during_prepare_then_rerun_gives_identical_shards(tmp_path, english_mix_file):
    """SIGKILL a real prepare_fineweb.py after it wrote some shards; the rerun finishes to the same bytes."""
    args = [*PREPARE, "--data_files", english_mix_file, "--shard_size", "50000", "--max_tokens", "1500000",
            "--num_proc", "1"]
    reference = tmp_path / "reference"
    assert run_cli([*args, "--output_dir", reference]).returncode == 0
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *map(str, args), "--output_dir", str(out)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard_train_*.bin"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not json.loads((out / MANIFEST).read_text())["complete"]
    incomplete = run_cli([*PREPARE, "--verify", "--output_dir", out])
    assert "did not finish" in error_line(incomplete)
    assert run_cli([*args, "--output_dir", out]).returncode == 0
    assert snapshot(out).keys() != set() and {Path(k).name: v for k, v in snapshot(out).items()} == \
        {Path(k).name: v for k, v in snapshot(reference).items()}
