"""Tracking: grouped train/ eval/ perf/ scalars and text samples in TensorBoard and (offline) wandb; the
plot's reference lines only where they apply; the model card's rule for full-split HellaSwag results."""

import glob
import importlib.util
import json
import time

import pytest
from huggingface_hub import ModelCard
from test_training import SMALL, pretrain_in_process

from nanogpt2.errors import DataError
from nanogpt2.model_card import build_model_card
from nanogpt2.plot import (
    FINEWEB_EDU,
    example_counts,
    plot_run,
    reference_lines,
    short_count,
    smoothed,
    training_dataset,
)
from nanogpt2.training import TRACKER_NAMES, tracker_values

RUN = [a for a in SMALL if a not in ("--report_to", "none")] + ["--skip_hellaswag", "--max_steps", 4]


def test_tracker_names_are_grouped():
    record = {"step": 3, "tokens": 384, "train_loss": 2.5, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_sec": 99.0}
    assert tracker_values(record) == {"train/tokens_seen": 384, "train/loss": 2.5, "train/learning_rate": 1e-3,
                                      "train/grad_norm": 0.5, "perf/tokens_per_sec": 99.0}
    assert {name.split("/")[0] for name in TRACKER_NAMES.values()} == {"train", "eval", "perf"}


@pytest.mark.slow
def test_tensorboard_scalars_grouped_samples_as_text_and_final_full_hellaswag(tmp_path, tinyshakespeare_file,
                                                                              hellaswag_file, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, hellaswag = tmp_path / "run", tmp_path / "hellaswag_12.jsonl"
    hellaswag.write_text("".join(hellaswag_file.read_text().splitlines(keepends=True)[:12]))
    args = [a for a in RUN if a != "--skip_hellaswag"] + [
        "--train_file", tinyshakespeare_file, "--output_dir", run, "--report_to", "tensorboard", "--eval_steps", 2,
        "--hellaswag_file", hellaswag, "--hellaswag_limit", 4, "--hellaswag_final_full"]
    code, error = pretrain_in_process(args, capsys)
    assert code == 0, error
    # --hellaswag_final_full: the limit during training, every example at the final step
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert [(e["step"], e["hellaswag_num_examples"], e["val_tokens"]) for e in evals] == [(2, 4, 1152), (4, 12, 1152)]
    scalars, texts = set(), {}
    for events in glob.glob(str(run / "nanogpt2" / "**" / "events.*"), recursive=True):
        accumulator = EventAccumulator(events, size_guidance={"tensors": 0, "scalars": 0})
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
        for tag in accumulator.Tags()["tensors"]:
            texts[tag] = [(e.step, e.tensor_proto.string_val[0].decode()) for e in accumulator.Tensors(tag)]
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "perf/tokens_per_sec", "eval/loss",
            "eval/hellaswag_acc_norm", "eval/hellaswag_num_examples"} <= scalars
    assert all("/" in tag for tag in scalars)
    assert [step for step, _ in texts["eval/samples/text_summary"]] == [2, 4]
    assert "Hello, I'm a language model," in texts["eval/samples/text_summary"][0][1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (the wandb extra)")
def test_report_to_wandb_offline(tmp_path, tinyshakespeare_file, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    code, error = pretrain_in_process(RUN + ["--train_file", tinyshakespeare_file, "--output_dir", run,
                                             "--report_to", "wandb"], capsys)
    assert code == 0, error
    [offline_run] = (run / "wandb").glob("offline-run-*")  # under --output_dir, not ./wandb
    [log] = offline_run.glob("run-*.wandb")  # the offline run's records (protobuf: keys stored as plain bytes)
    keys = (b"train/loss", b"eval/loss", b"perf/tokens_per_sec", b"eval/samples")
    deadline = time.monotonic() + 30  # wandb's service process may still be writing the file
    while not all(key in (logged := log.read_bytes()) for key in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [key for key in keys if key not in logged] == []
    assert b"train_loss" not in logged  # metrics.jsonl's flat names stay out of the tracker
    [table] = (offline_run / "files" / "media" / "table" / "eval").glob("samples_4_*.table.json")
    samples = json.loads(table.read_text())
    assert samples["columns"] == ["step", "sample"] and samples["data"][0][0] == 4
    assert samples["data"][0][1].startswith("Hello, I'm a language model,")


def test_reference_lines_apply_to_their_dataset_and_style(tmp_path):
    tiny = {"train_file": "input.txt", "hellaswag_style": "completion"}
    assert reference_lines(tiny)["loss"] == [] and [v for _, v in reference_lines(tiny)["hellaswag"]] == [0.2955, 0.337]
    assert [v for _, v in reference_lines({"dataset_name": FINEWEB_EDU})["loss"]] == [3.2924]
    assert "FineWeb-Edu" in reference_lines({"dataset_name": FINEWEB_EDU})["loss"][0][0]
    assert [v for _, v in reference_lines({"hellaswag_style": "harness"})["hellaswag"]] == [0.3114]
    for name, dataset in (("edufineweb_val_000000.npy", FINEWEB_EDU), ("finewebedu_val_000000.bin", FINEWEB_EDU),
                          ("fineweb_val_000000.bin", None)):  # FineWeb (not Edu): no published GPT-2 figure
        shards = tmp_path / name.split("_")[0]
        shards.mkdir()
        (shards / name).write_bytes(b"")
        assert training_dataset({"data_dir": str(shards)}) == dataset
    assert reference_lines({"data_dir": str(tmp_path / "fineweb")})["loss"] == []
    prepared = tmp_path / "prepared"  # prepare_fineweb.py's manifest names the source
    prepared.mkdir()
    (prepared / "manifest.json").write_text(json.dumps({"shards": [], "settings": {"source": {
        "dataset_name": FINEWEB_EDU}}}))
    assert training_dataset({"data_dir": str(prepared)}) == FINEWEB_EDU
    (prepared / "manifest.json").write_text(json.dumps({"shards": [], "settings": {"source": {"data_files": [
        f"hf://datasets/{FINEWEB_EDU}@0123abc/sample/10BT/000_00000.parquet"]}}}))  # the Hub's parquet files
    assert training_dataset({"data_dir": str(prepared)}) == FINEWEB_EDU
    (prepared / "manifest.json").write_text('{"shards": [')
    with pytest.raises(DataError, match="manifest.json is not a prepare_fineweb.py manifest"):
        training_dataset({"data_dir": str(prepared)})


def _fake_run(tmp_path, hellaswag_examples, config):
    """A run directory and checkpoint with the files a card is built from (no training needed)."""
    run = tmp_path / "run"
    checkpoint = run / "checkpoint-10"
    (checkpoint / "training_state").mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps({"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 256,
                                                        "vocab_size": 50304, "tokenizer_vocab_size": 50257}))
    (checkpoint / "training_state" / "trainer_state.json").write_text(json.dumps({"step": 10, "hardware": "1 x GPU X"}))
    (run / "config.json").write_text(json.dumps(config))
    records = [{"step": 10, "tokens": 1280, "train_loss": 4.0, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_sec": 100.0},
               {"step": 10, "tokens": 1280, "val_loss": 4.1, "val_tokens": 4096, "hellaswag_acc_norm": 0.3,
                "hellaswag_acc": 0.28, "hellaswag_num_examples": hellaswag_examples}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run, checkpoint


@pytest.mark.parametrize("examples", [200, 10_042])
def test_card_reports_a_validation_split_hellaswag_only_for_all_10042(examples, tmp_path):
    run, checkpoint = _fake_run(tmp_path, examples, {"dataset_name": FINEWEB_EDU, "hellaswag_style": "harness",
                                                     "data_dir": None})
    path = checkpoint / "README.md"
    build_model_card(checkpoint, run).save(path)
    card = ModelCard.load(path, ignore_metadata_errors=False)
    hellaswag = [r for r in card.data.eval_results if r.dataset_type == "Rowan/hellaswag"]
    if examples == 10_042:
        assert [(r.metric_type, r.metric_value, r.dataset_split) for r in hellaswag] == [
            ("acc_norm", 0.3, "validation"), ("accuracy", 0.28, "validation")]
        assert "10,042 examples" in hellaswag[0].metric_name and "full validation split, 10,042 examples" in card.text
    else:
        assert hellaswag == [] and "200 of the 10,042 validation examples" in card.text
    assert "- hardware: 1 x GPU X;" in card.text and "4,096 held-out tokens of HuggingFaceFW/fineweb-edu" in card.text
    assert "OpenAI GPT-2 124M, FineWeb-Edu val (3.2924)" in card.text and "lm-eval harness (0.3114)" in card.text
    assert plot_run(run).stat().st_size > 1000


def test_plot_smoothing_and_token_ticks():
    assert smoothed([4.0, 4.0, 4.0]) == pytest.approx([4.0, 4.0, 4.0])  # bias-corrected: no pull towards 0
    assert smoothed([10.0, 0.0], weight=0.5) == pytest.approx([10.0, 10 / 3])
    assert [short_count(v) for v in (0, 512, 2048, 1.5e6, 10e9)] == ["0", "512", "2.05K", "1.5M", "10B"]
    assert example_counts([{"hellaswag_num_examples": 200}] * 2) == " (200 examples)"
    assert example_counts([{"hellaswag_num_examples": 200}, {"hellaswag_num_examples": 10_042}]) == (
        " (200 examples, the last 10,042)")
    assert example_counts([{}]) == ""
