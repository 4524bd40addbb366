"""run_pretrain.py end to end on CPU: 1 and 2 processes, exact resume, checkpoints, bad inputs."""

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from user_errors import pretrain_main, two_process_launch

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "tiny", "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--micro_batch_size", "4",
         "--sequence_length", "32", "--total_batch_size", "256", "--warmup_steps", "2", "--learning_rate", "3e-3",
         "--eval_steps", "4", "--save_steps", "4", "--eval_tokens", "1152", "--num_samples", "1",
         "--sample_max_new_tokens", "8", "--report_to", "none", "--dropout", "0.1"]


def pretrain(args, processes=1, check=True):
    launcher = [sys.executable, "run_pretrain.py"] if processes == 1 else [*two_process_launch(), "run_pretrain.py"]
    result = subprocess.run(launcher + [str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def pretrain_here(args, processes=1):
    """run_pretrain.py's main() in this process when one process is asked (no interpreter start-up: 4 s of
    imports per run), else `pretrain` under accelerate launch."""
    if processes != 1:
        return pretrain(args, processes)
    assert pretrain_main(args) == 0


def pretrain_in_process(args, capsys) -> tuple[int, list[str]]:
    """run_pretrain.main() in this process (no interpreter start-up): (exit code, last stderr line)."""
    code = pretrain_main(args)
    return code, capsys.readouterr().err.strip().splitlines()[-1:]


def validation_loss_of(checkpoint, train_file):
    """The mean loss of the first 9 (4 x 32) windows of the last 10% of train_file, computed directly."""
    from nanogpt2 import NanoGPT2ForCausalLM
    from nanogpt2.documents import tokenize_files
    from nanogpt2.tokenizer import load_tokenizer

    tokens = tokenize_files(train_file, load_tokenizer())
    tokens = torch.from_numpy(tokens[int(len(tokens) * 0.9):].astype("int64"))
    model = NanoGPT2ForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        losses = [model(input_ids=tokens[i * 128:(i + 1) * 128].view(4, 32),
                        shift_labels=tokens[i * 128 + 1:(i + 1) * 128 + 1].view(4, 32)).loss for i in range(9)]
    return torch.stack(losses).mean().item()


def train_losses(run_dir, after_step: int = 0):
    """(train losses, evaluation records) of metrics.jsonl from `after_step` on. A run resumed in a directory that
    holds only the checkpoint starts its metrics.jsonl with the history the checkpoint carries."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r["step"] > after_step]
    return [r["train_loss"] for r in records if "train_loss" in r], [r for r in records if "val_loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.two_processes)])
def test_training_falls_and_resumes_exactly(processes, tmp_path, tinyshakespeare_file, hellaswag_file):
    run = tmp_path / "run"
    pretrain_here(SMALL + ["--train_file", tinyshakespeare_file, "--hellaswag_file", hellaswag_file,
                           "--hellaswag_limit", "8", "--max_steps", 8, "--output_dir", run], processes)
    losses, evals = train_losses(run)
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.3
    assert [e["step"] for e in evals] == [4, 8]
    assert all(0 <= e["hellaswag_acc_norm"] <= 1 and e["val_loss"] > 0 for e in evals)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-4", "checkpoint-8"]
    assert json.loads((run / "config.json").read_text())["max_steps"] == 8
    # the same validation tokens (9 batches: uneven over 2 processes) as one process reading the checkpoint
    assert evals[-1]["val_loss"] == pytest.approx(validation_loss_of(run / "checkpoint-8", tinyshakespeare_file),
                                                  rel=1e-5)
    if processes == 1:
        from nanogpt2.plot import plot_run

        png = plot_run(run)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # "kill" after step 4: a fresh run directory holding only checkpoint-4, resumed from it
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(run / "checkpoint-4", resumed / "checkpoint-4")
    shutil.copytree(run / "checkpoint-8", resumed / ".tmp-checkpoint-6")  # a save killed half-way: never resumed
    pretrain_here(SMALL + ["--train_file", tinyshakespeare_file, "--hellaswag_file", hellaswag_file,
                           "--hellaswag_limit", "8", "--max_steps", 8, "--output_dir", resumed,
                           "--resume_from_checkpoint", "latest"], processes)
    resumed_losses, _ = train_losses(resumed)
    assert resumed_losses == losses  # bit for bit: steps 1-4 restored from checkpoint-4, then 5-8 trained again
    assert not (resumed / ".tmp-checkpoint-6").exists()


@pytest.mark.slow
def test_checkpoint_loads_with_auto_classes_and_generates(tmp_path, tinyshakespeare_file):
    pretrain_here(SMALL + ["--train_file", tinyshakespeare_file, "--skip_hellaswag", "--max_steps", 2,
                      "--save_steps", 2, "--output_dir", tmp_path, "--report_to", "tensorboard"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "nanogpt2")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2] and events.Scalars("eval/loss")[0].step == 2

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
    from nanogpt2.training import PretrainingLoop

    def gradients(micro_batch_size):
        config = resolve_config(SMALL + ["--train_file", str(tinyshakespeare_file), "--skip_hellaswag",
                                         "--output_dir", str(tmp_path / f"mb{micro_batch_size}"),
                                         "--micro_batch_size", str(micro_batch_size), "--dropout", "0.0"])
        with PretrainingLoop(config) as trainer:
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
    (["--preset", "gpt5"], "invalid choice"),
    (["--sequence_length", "512", "--total_batch_size", "2048"], "n_positions"),
    (["--resume_from_checkpoint", "/nonexistent"], "not a checkpoint"),
    (["--dataset_name", "HuggingFaceFW/fineweb-edu"], "--train_file"),  # offline (conftest sets HF_HUB_OFFLINE)
    (["--eval_steps", "0"], "--eval_steps must be at least 1"),
    (["--data_dir", "shards"], "--data_dir and --train_file each name training data"),
    (["--push_to_hub"], "--hub_model_id"),
    (["--report_to", "wandb"], "pip install wandb"),
])
def test_bad_inputs_give_clear_errors(args, message, tmp_path, tinyshakespeare_file, capsys):
    if "wandb" in args and importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    code, last_line = pretrain_in_process(SMALL + ["--train_file", tinyshakespeare_file, "--max_steps", 1,
                                                   "--skip_hellaswag", "--output_dir", tmp_path] + args, capsys)
    assert code == 1 and message in last_line[0], last_line


@pytest.mark.slow
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
    assert (config.learning_rate, config.max_steps, config.per_device_train_batch_size) == (0.01, 9, 16)
    assert resolve_config([]).total_batch_size == 524288  # the 124M recipe by default
    config_file.write_text("learning_rat: 0.01\n")
    with pytest.raises(ValueError, match="learning_rat"):
        resolve_config(["--config_file", str(config_file)])


@pytest.mark.slow
def test_trains_from_prepared_shards_and_rejects_bad_ones(tmp_path, english_mix_file, capsys):
    import numpy as np

    from nanogpt2.prepare import Source, prepare_shards
    from nanogpt2.shards import write_shard
    from nanogpt2.tokenizer import load_tokenizer

    data = tmp_path / "data"
    prepare_shards(Source(data_files=[str(english_mix_file)]), data, shard_size=40_000, max_tokens=120_000,
                   progress=False)
    args = SMALL + ["--data_dir", data, "--skip_hellaswag", "--max_steps", 2, "--output_dir", tmp_path / "run"]
    pretrain_here(args)
    assert len(train_losses(tmp_path / "run")[0]) == 2

    args += ["--overwrite_output_dir"]  # the same run directory again: a fresh run must say so
    shard = data / "shard_train_000002.bin"
    good = shard.read_bytes()
    shard.write_bytes(good[:-2])
    code, error = pretrain_in_process(args, capsys)
    assert code == 1 and "shard_train_000002.bin is truncated or corrupt" in error[0]
    write_shard(shard, np.full(1000, 50300), load_tokenizer().identity)
    code, error = pretrain_in_process(args, capsys)
    assert code == 1 and "holds token id 50300 >= vocabulary size 50257" in error[0]
    code, error = pretrain_in_process(SMALL + ["--data_dir", tmp_path / "nope", "--skip_hellaswag", "--max_steps", 1,
                                               "--output_dir",
                                               tmp_path / "r2"], capsys)
    assert code == 1 and "does not exist; create it with prepare_fineweb.py" in error[0]


@pytest.mark.slow
def test_compile_trains_like_eager_with_evaluation_in_the_same_run(tmp_path, tinyshakespeare_file, hellaswag_file):
    from nanogpt2.run_config import resolve_config
    from nanogpt2.training import PretrainingLoop

    def run(name, *extra):
        config = resolve_config(SMALL + ["--train_file", str(tinyshakespeare_file), "--hellaswag_file",
                                         str(hellaswag_file), "--hellaswag_limit", "4", "--max_steps", "2",
                                         "--eval_steps", "2", "--dropout", "0.0", "--output_dir",
                                         str(tmp_path / name), *extra])
        trainer = PretrainingLoop(config)
        trainer.train()  # trains, validates, runs HellaSwag, samples and saves at step 2
        assert isinstance(trainer.train_model, torch._dynamo.eval_frame.OptimizedModule) == ("--compile" in extra)
        return train_losses(tmp_path / name)

    (eager_losses, eager_evals), (compiled_losses, compiled_evals) = run("eager"), run("compiled", "--compile")
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    assert compiled_evals[0]["val_loss"] == pytest.approx(eager_evals[0]["val_loss"], rel=1e-4)
    assert compiled_evals[0]["hellaswag_acc_norm"] == eager_evals[0]["hellaswag_acc_norm"]
    assert (tmp_path / "compiled" / "checkpoint-2" / "model.safetensors").is_file()


@pytest.mark.slow
def test_streaming_local_file_trains_and_resumes_exactly(tmp_path, english_mix_file):
    args = SMALL + ["--train_file", english_mix_file, "--streaming", "--skip_hellaswag", "--num_samples", "0",
                    "--max_steps", 4, "--save_steps", 2, "--eval_steps", 2]
    pretrain_here(args + ["--output_dir", tmp_path / "run"])
    losses, evals = train_losses(tmp_path / "run")
    assert len(losses) == 4 and [e["step"] for e in evals] == [2, 4]
    shutil.copytree(tmp_path / "run" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    pretrain_here(args + ["--output_dir", tmp_path / "resumed", "--resume_from_checkpoint", "latest"])
    assert train_losses(tmp_path / "resumed", after_step=2)[0] == losses[2:]


def test_tiny_shakespeare_is_downloaded_once_and_checked(tmp_path, monkeypatch, tinyshakespeare_file):
    from nanogpt2.errors import DataError
    from nanogpt2.sources import download_tiny_shakespeare

    monkeypatch.setenv("NANOGPT2_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="offline\\? pass a local copy with --train_file"):
        download_tiny_shakespeare((tmp_path / "missing.txt").as_uri())  # stands in for an unreachable URL
    corrupt = tmp_path / "other.txt"
    corrupt.write_text("not Shakespeare")
    with pytest.raises(DataError, match="sha256 mismatch"):
        download_tiny_shakespeare(corrupt.as_uri())
    path = download_tiny_shakespeare(Path(tinyshakespeare_file).as_uri())
    assert path.read_bytes() == Path(tinyshakespeare_file).read_bytes()
    assert download_tiny_shakespeare((tmp_path / "missing.txt").as_uri()) == path  # cached: no second download


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.two_processes)])
def test_muon_and_the_modern_architecture_train_and_resume_exactly(processes, tmp_path, tinyshakespeare_file):
    """--optim muon over a rotary, RMSNorm, QK-norm, ReLU², bias-free, untied, soft-capped model, on 1 and 2
    processes: a resume from the step-2 checkpoint repeats the losses bit for bit, and both learning rates are
    logged."""
    args = SMALL + ["--train_file", tinyshakespeare_file, "--skip_hellaswag", "--num_samples", "0", "--max_steps", 4,
                    "--save_steps", 2, "--eval_steps", 2, "--optim", "muon", "--muon_learning_rate", "0.02",
                    "--position_embedding", "rotary", "--normalization", "rmsnorm", "--qk_norm", "true",
                    "--mlp_activation", "relu2", "--bias", "false", "--tie_word_embeddings", "false",
                    "--logit_softcap", "15", "--zero_init_projections", "true"]
    pretrain_here(args + ["--output_dir", tmp_path / "run"], processes)
    losses, _ = train_losses(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["muon_lr"] / r["lr"] for r in records if "lr" in r] == pytest.approx([0.02 / 3e-3] * 4)
    config = json.loads((tmp_path / "run" / "checkpoint-4" / "config.json").read_text())
    assert config["position_embedding"] == "rotary" and config["logit_softcap"] == 15.0
    shutil.copytree(tmp_path / "run" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    pretrain_here(args + ["--output_dir", tmp_path / "resumed", "--resume_from_checkpoint", "latest"], processes)
    assert train_losses(tmp_path / "resumed", after_step=2)[0] == losses[2:]
