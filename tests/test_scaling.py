"""Scale-out proven on CPU (gloo): FSDP2 shards and resumes exactly, two "machines" on one host train
like one machine with two processes, and a checkpoint resumes on another number of processes.

Every run is compared with one uninterrupted 2-process DDP run (`ddp_reference`). Dropout is off, so
runs on different numbers of processes differ only in the order of floating-point reductions."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import REPO, SMALL, pretrain_here, pretrain_in_process, train_losses
from user_errors import free_port

pytestmark = [pytest.mark.slow, pytest.mark.two_processes]

# 512 tokens per step: 2 accumulation steps on 2 processes (DDP's no_sync path), 4 on one process.
ARGS = SMALL + ["--total_batch_size", "512", "--dropout", "0.0", "--max_steps", "8", "--num_samples", "0",
                "--skip_hellaswag"]
FP32 = dict(rel=1e-5)  # same tokens, same model: only the reduction order differs


def launch(args, config="accelerate_configs/cpu_2proc.yaml", launch_args=(), check=True, wait=True):
    """accelerate launch <config> run_pretrain.py <args> on a free local port."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *launch_args,
               "run_pretrain.py", *[str(a) for a in args]]
    if "--main_process_port" not in launch_args:
        command[3:3] = ["--main_process_port", str(free_port())]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=600)
    if check:
        assert process.returncode == 0, stderr[-4000:]
    return stdout + stderr


def resume_copy(checkpoint: Path, run_dir: Path) -> Path:
    """A run directory holding only `checkpoint` (as if the run was killed after saving it)."""
    shutil.copytree(checkpoint, run_dir / checkpoint.name)
    return run_dir


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory, tinyshakespeare_file):
    """2 processes, DDP, 8 steps, checkpoints at 4 and 8: (run directory, train losses, eval records)."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    launch(ARGS + ["--train_file", tinyshakespeare_file, "--output_dir", run])
    losses, evals = train_losses(run)
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.3
    return run, losses, evals


def test_fsdp2_shards_matches_ddp_and_resumes(ddp_reference, tmp_path, tinyshakespeare_file, hellaswag_file, capsys):
    from torch.distributed.checkpoint import FileSystemReader

    ddp_run, ddp_losses, ddp_evals = ddp_reference
    fsdp = "accelerate_configs/fsdp2_cpu_2proc.yaml"
    args = ARGS + ["--train_file", tinyshakespeare_file, "--hellaswag_file", hellaswag_file, "--hellaswag_limit", 8,
                   "--num_samples", 1]
    args.remove("--skip_hellaswag")
    output = launch(args + ["--output_dir", tmp_path / "run"], config=fsdp)
    losses, evals = train_losses(tmp_path / "run")
    assert losses == pytest.approx(ddp_losses, **FP32)
    assert [e["step"] for e in evals] == [4, 8]
    assert [e["val_loss"] for e in evals] == pytest.approx([e["val_loss"] for e in ddp_evals], **FP32)
    assert all(0 <= e["hellaswag_acc_norm"] <= 1 for e in evals)
    assert output.count("sample> ") >= 2  # one sample at each evaluation, from the sharded model

    # The training state is torch.distributed.checkpoint's sharded format: every weight matrix is stored
    # as two chunks, one from each rank, and each rank's file holds about half of the model and optimizer.
    state = tmp_path / "run" / "checkpoint-8" / "training_state"
    assert not (state / "model.safetensors").exists()
    metadata = FileSystemReader(str(state / "pytorch_model_fsdp_0")).read_metadata()
    chunks = {name: len(meta.chunks) for name, meta in metadata.state_dict_metadata.items() if hasattr(meta, "chunks")}
    assert chunks and all(n == 2 for name, n in chunks.items() if name.endswith(".weight") and "ln" not in name), chunks
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
        sizes = sorted(f.stat().st_size for f in (state / folder).glob("*.distcp"))
        assert len(sizes) == 2 and sizes[0] > 0.4 * sum(sizes), (folder, sizes)

    # ... plus one full model.safetensors that loads anywhere, equal to DDP's after the same 8 steps
    full, reference = (load_file(run / "checkpoint-8" / "model.safetensors") for run in (tmp_path / "run", ddp_run))
    assert full.keys() == reference.keys()
    for name in full:  # Adam divides tiny gradients by tiny norms: a few rare-token rows differ by ~3e-5
        assert torch.allclose(full[name], reference[name], rtol=1e-4, atol=1e-4), name
    config = json.loads((tmp_path / "run" / "checkpoint-8" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_nanogpt2.NanoGPT2ForCausalLM"

    resumed = resume_copy(tmp_path / "run" / "checkpoint-4", tmp_path / "resumed")
    launch(args + ["--output_dir", resumed, "--resume_from_checkpoint", "latest"], config=fsdp)
    assert train_losses(resumed, after_step=4)[0] == losses[4:]  # bit for bit

    # ... and on one process: torch.distributed.checkpoint reshards the 2-rank state on load
    one = resume_copy(tmp_path / "run" / "checkpoint-4", tmp_path / "one")
    launch(args + ["--output_dir", one, "--resume_from_checkpoint", "latest"], config=fsdp,
           launch_args=("--num_processes", "1"))
    assert train_losses(one, after_step=4)[0] == pytest.approx(ddp_losses[4:], **FP32)
    assert len(list((one / "checkpoint-8" / "training_state" / "pytorch_model_fsdp_0").glob("*.distcp"))) == 1

    # without FSDP the sharded state cannot load: one line says so
    code, error = pretrain_in_process(args + ["--output_dir", tmp_path / "ddp", "--resume_from_checkpoint",
                                              tmp_path / "run" / "checkpoint-4"], capsys)
    assert code == 1 and "was written under FSDP; resume it with an accelerate config that uses FSDP" in error[0]


def test_two_machines_on_one_host_train_like_one_machine(ddp_reference, tmp_path, tinyshakespeare_file):
    """multi_node.yaml as two one-process machines on 127.0.0.1, each launched by its own command."""
    _, ddp_losses, ddp_evals = ddp_reference
    port = str(free_port())
    machines = [launch(ARGS + ["--train_file", tinyshakespeare_file, "--output_dir", tmp_path / "run"],
                       config="accelerate_configs/multi_node.yaml", wait=False,
                       launch_args=("--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip",
                                    "127.0.0.1", "--main_process_port", port, "--mixed_precision", "no"))
                for rank in (0, 1)]
    for process in machines:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-4000:]
    losses, evals = train_losses(tmp_path / "run")
    assert losses == ddp_losses and evals == ddp_evals  # the same two ranks and collectives: bit for bit
    assert (tmp_path / "run" / "checkpoint-8" / "training_state" / "data_rank1.json").is_file()


def test_checkpoint_resumes_on_another_number_of_processes(ddp_reference, tmp_path, tinyshakespeare_file):
    ddp_run, ddp_losses, _ = ddp_reference
    args = ARGS + ["--train_file", tinyshakespeare_file]

    # 2 -> 1: DDP's checkpoint-4 continued by one process (4 accumulation steps instead of 2 x 2)
    two_to_one = resume_copy(ddp_run / "checkpoint-4", tmp_path / "two_to_one")
    pretrain_here(args + ["--output_dir", two_to_one, "--resume_from_checkpoint", "latest"])
    assert train_losses(two_to_one, after_step=4)[0] == pytest.approx(ddp_losses[4:], **FP32)

    # 1 -> 2: a one-process run, then its checkpoint-4 continued by two processes
    pretrain_here(args + ["--output_dir", tmp_path / "one"])
    one_losses = train_losses(tmp_path / "one")[0]
    assert one_losses == pytest.approx(ddp_losses, **FP32)
    one_to_two = resume_copy(tmp_path / "one" / "checkpoint-4", tmp_path / "one_to_two")
    launch(args + ["--output_dir", one_to_two, "--resume_from_checkpoint", "latest"])
    assert train_losses(one_to_two, after_step=4)[0] == pytest.approx(ddp_losses[4:], **FP32)
    data_state = json.loads((one_to_two / "checkpoint-8" / "training_state" / "data_rank1.json").read_text())
    # 8 steps x 4 windows of 128 tokens, over 2
    assert data_state["world_size"] == 2 and data_state["step_in_epoch"] == 16
