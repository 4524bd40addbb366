"""run_pretrain.py end to end on CPU: 1 and 2 processes, exact resume, checkpoints, bad inputs."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "tiny", "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--micro_batch_size", "4",
         "--sequence_length", "32", "--total_batch_size", "256", "--warmup_steps", "2", "--learning_rate", "3e-3",
         "--eval_steps", "4", "--save_steps", "4", "--eval_tokens", "1024", "--num_samples", "1",
         "--sample_max_new_tokens", "8", "--report_to", "none", "--dropout", "0.1"]


def pretrain(args, processes=1, check=True):
    launcher = [sys.executable, "run_pretrain.py"] if processes == 1 else [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu_2proc.yaml",
        "run_pretrain.py"]
    result = subprocess.run(launcher + [str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def train_losses(run_dir):
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records if "train_loss" in r], [r for r in records if "val_loss" in r]


@pytest.mark.parametrize("processes", [1, 2])
def test_training_falls_and_resumes_exactly(processes, tmp_path, tinyshakespeare_file, hellaswag_file):
    run = tmp_path / "run"
    pretrain(SMALL + ["--train_file", tinyshakespeare_file, "--hellaswag_file", hellaswag_file,
                      "--hellaswag_limit", "8", "--max_steps", 8, "--output_dir", run], processes)
    losses, evals = train_losses(run)
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.3
    assert [e["step"] for e in evals] == [4, 8]
    assert all(0 <= e["hellaswag_acc_norm"] <= 1 and e["val_loss"] > 0 for e in evals)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-4", "checkpoint-8"]
    assert json.loads((run / "run_config.json").read_text())["max_steps"] == 8
    if processes == 1:
        from nanogpt2.plot import plot_run

        png = plot_run(run)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # "kill" after step 4: a fresh run directory holding only checkpoint-4, resumed from it
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(run / "checkpoint-4", resumed / "checkpoint-4")
    pretrain(SMALL + ["--train_file", tinyshakespeare_file, "--hellaswag_file", hellaswag_file,
                      "--hellaswag_limit", "8", "--max_steps", 8, "--output_dir", resumed,
                      "--resume_from_checkpoint", "latest"], processes)
    resumed_losses, _ = train_losses(resumed)
    assert resumed_losses == losses[4:]  # bit for bit


def test_checkpoint_loads_with_auto_classes_and_generates(tmp_path, tinyshakespeare_file):
    pretrain(SMALL + ["--train_file", tinyshakespeare_file, "--skip_hellaswag", "--max_steps", 2,
                      "--save_steps", 2, "--output_dir", tmp_path])
    code = textwrap.dedent(f"""
        import nanogpt2
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'checkpoint-2')!r})
        tok = AutoTokenizer.from_pretrained({str(tmp_path / 'checkpoint-2')!r})
        out = model.generate(**tok("ROMEO:", return_tensors="pt"), max_new_tokens=5, do_sample=False)
        assert out.shape[1] == len(tok("ROMEO:")["input_ids"]) + 5
        print(tok.decode(out[0]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ROMEO:")


def test_gradient_accumulation_equals_one_big_batch(tmp_path, tinyshakespeare_file):
    from nanogpt2.run_config import resolve_config
    from nanogpt2.training import Trainer

    def gradients(micro_batch_size):
        config = resolve_config(SMALL + ["--train_file", str(tinyshakespeare_file), "--output_dir", str(tmp_path),
                                         "--micro_batch_size", str(micro_batch_size), "--dropout", "0.0"])
        trainer = Trainer(config)
        trainer.optimizer.step = lambda *args, **kwargs: None  # keep the gradients, skip the update
        trainer.optimizer.zero_grad = lambda *args, **kwargs: None
        trainer.train_step()
        assert trainer.grad_accum == 8 // micro_batch_size
        return {n: p.grad.clone() for n, p in trainer.raw_model.named_parameters()}

    accumulated, single = gradients(4), gradients(8)
    for name, grad in single.items():
        assert torch.allclose(accumulated[name], grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("args,message", [
    (["--total_batch_size", "300"], "not divisible"),
    (["--train_file", "/nonexistent/input.txt"], "does not exist"),
    (["--preset", "gpt5"], "unknown"),
    (["--sequence_length", "512", "--total_batch_size", "2048"], "n_positions"),
    (["--resume_from_checkpoint", "/nonexistent"], "not a checkpoint"),
    (["--dataset_name", "HuggingFaceFW/fineweb-edu"], "--train_file"),  # offline (conftest sets HF_HUB_OFFLINE)
])
def test_bad_inputs_give_clear_errors(args, message, tmp_path, tinyshakespeare_file):
    result = pretrain(SMALL + ["--train_file", tinyshakespeare_file, "--max_steps", 1, "--output_dir", tmp_path]
                      + args, check=False)
    assert result.returncode != 0
    assert message in result.stderr.splitlines()[-1], result.stderr[-2000:]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tinyshakespeare_file):
    result = pretrain(SMALL + ["--train_file", tinyshakespeare_file, "--skip_hellaswag", "--max_steps", 40,
                               "--save_steps", 1, "--eval_steps", 100, "--learning_rate", "1e9", "--warmup_steps",
                               "1", "--max_grad_norm", "1e9", "--output_dir", tmp_path], check=False)
    assert result.returncode == 1
    assert "training loss is nan" in result.stderr or "training loss is inf" in result.stderr
    checkpoints = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint"))
    assert checkpoints and not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_config_file_and_flags(tmp_path, tinyshakespeare_file):
    from nanogpt2.run_config import resolve_config

    config_file = tmp_path / "run.yaml"
    config_file.write_text("preset: tiny\nlearning_rate: 0.01\nmax_steps: 7\n")
    config = resolve_config(["--config_file", str(config_file), "--max_steps", "9"])
    assert (config.learning_rate, config.max_steps, config.micro_batch_size) == (0.01, 9, 16)
    assert resolve_config([]).total_batch_size == 524288  # the 124M recipe by default
    config_file.write_text("learning_rat: 0.01\n")
    with pytest.raises(ValueError, match="learning_rat"):
        resolve_config(["--config_file", str(config_file)])


def test_trains_from_prepared_shards_and_rejects_bad_ones(tmp_path, english_mix_file):
    import numpy as np

    from nanogpt2.prepare import Source, prepare_shards
    from nanogpt2.shards import write_shard
    from nanogpt2.tokenizer import load_tokenizer

    data = tmp_path / "data"
    prepare_shards(Source(data_files=[str(english_mix_file)]), data, shard_size=40_000, max_tokens=120_000,
                   progress=False)
    args = SMALL + ["--data_dir", data, "--skip_hellaswag", "--max_steps", 2, "--output_dir", tmp_path / "run"]
    pretrain(args)
    assert len(train_losses(tmp_path / "run")[0]) == 2

    shard = data / "shard_train_000002.bin"
    good = shard.read_bytes()
    shard.write_bytes(good[:-2])
    result = pretrain(args, check=False)
    assert result.returncode == 1 and "shard_train_000002.bin is truncated or corrupt" in result.stderr
    write_shard(shard, np.full(1000, 50300), load_tokenizer().identity)
    result = pretrain(args, check=False)
    assert result.returncode == 1 and "holds token id 50300 >= vocabulary size 50257" in result.stderr
    missing = pretrain(SMALL + ["--data_dir", tmp_path / "nope", "--max_steps", 1, "--output_dir", tmp_path / "r2"],
                       check=False)
    assert missing.returncode == 1 and "does not exist; create it with prepare_fineweb.py" in missing.stderr
