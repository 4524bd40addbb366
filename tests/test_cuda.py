"""What only a GPU can check (skipped without CUDA; benchmarks/gpu_suite.sh runs these first):

- the training loop in bf16 with torch.compile (on by default on CUDA) and fused AdamW gives finite
  losses within 2 % of an fp32 eager reference run (same data, same init), with evaluation, HellaSwag,
  samples and checkpoints in the same run;
- the training forward and backward reach SDPA's flash or cuDNN kernel, eager and compiled (no
  materialized mask sending it to the memory-efficient or math kernel);
- resuming on the GPU from a checkpoint reproduces the next loss bit for bit (it depends on the saved
  weights and data position only); the later ones within 1e-3, since atomic adds in backward
  kernels (embedding gradient) may round in another order;
- HellaSwag predictions on the GPU (fp32, TF32 off) equal fp32 CPU ones on 100 examples for a
  checkpoint converted from a Hugging Face GPT-2.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

REPO = Path(__file__).resolve().parents[1]
STEPS = 6


def pretrain(args: list, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / "run_pretrain.py"), *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def train_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records if "train_loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tinyshakespeare_file, hellaswag_file):
    """The same 6 steps of the tiny preset: bf16 + compile (CUDA defaults) and fp32 eager without TF32."""
    root = tmp_path_factory.mktemp("cuda-runs")
    common = ["--preset", "tiny", "--train_file", tinyshakespeare_file, "--hellaswag_file", hellaswag_file,
              "--hellaswag_limit", 20, "--max_steps", STEPS, "--eval_steps", 3, "--save_steps", 3,
              "--micro_batch_size", 8, "--sequence_length", 256, "--total_batch_size", 4096, "--report_to", "none"]
    fast = pretrain([*common, "--output_dir", root / "bf16-compiled"], root)
    pretrain([*common, "--output_dir", root / "fp32-eager", "--mixed_precision", "no", "--no-compile", "--no-tf32"],
             root)
    return root, common, fast


def test_bf16_compiled_fused_adamw_steps_match_fp32(runs):
    root, _, fast = runs
    assert ", compiled" in fast.stdout + fast.stderr  # compile is on by default on CUDA
    fast_losses, reference = train_losses(root / "bf16-compiled"), train_losses(root / "fp32-eager")
    assert len(fast_losses) == len(reference) == STEPS
    assert all(torch.isfinite(torch.tensor(fast_losses)))
    assert fast_losses == pytest.approx(reference, rel=2e-2)
    assert reference[-1] < reference[0]  # it learns
    evaluations = [json.loads(line) for line in (root / "bf16-compiled" / "metrics.jsonl").read_text().splitlines()
                   if "val_loss" in line]
    assert [e["step"] for e in evaluations] == [3, 6] and all("hellaswag_acc_norm" in e for e in evaluations)
    assert (root / "bf16-compiled" / "checkpoint-6" / "model.safetensors").is_file()
    from nanogpt2.optim import build_optimizer

    model = torch.nn.Linear(2, 2, device="cuda")
    assert build_optimizer(model, device_type="cuda").defaults["fused"] is True


def test_resume_on_gpu_reproduces_the_next_losses(runs):
    root, common, _ = runs
    resumed = root / "resumed"
    resumed.mkdir()
    shutil.copytree(root / "bf16-compiled" / "checkpoint-3", resumed / "checkpoint-3")
    pretrain([*common, "--output_dir", resumed, "--resume_from_checkpoint", "latest"], root)
    original, again = train_losses(root / "bf16-compiled")[3:], train_losses(resumed)
    assert len(again) == STEPS - 3
    assert again[0] == original[0]  # bit for bit
    assert again[1:] == pytest.approx(original[1:], rel=1e-3)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_training_attention_uses_flash_or_cudnn(compiled):
    from torch.profiler import ProfilerActivity, profile

    from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM

    torch.manual_seed(0)
    model = NanoGPT2ForCausalLM(NanoGPT2Config.from_preset("tiny")).cuda().train()
    runner = torch.compile(model) if compiled else model
    x = torch.randint(0, 50257, (4, 256), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = runner(input_ids=x, shift_labels=x).loss
        loss.backward()

    step()  # compilation outside the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    names = {event.key for event in prof.key_averages()}
    fast = {n for n in names if n.startswith(("aten::_scaled_dot_product_flash_attention",
                                              "aten::_scaled_dot_product_cudnn_attention"))}
    slow = {n for n in names if n.startswith(("aten::_scaled_dot_product_efficient_attention",
                                              "aten::_scaled_dot_product_attention_math"))}
    assert fast and not slow, sorted(n for n in names if "attention" in n)


def test_hellaswag_on_gpu_equals_fp32_cpu(tmp_path, hf_gpt2_fixture_dir, hellaswag_file):
    from nanogpt2 import NanoGPT2ForCausalLM
    from nanogpt2.convert import convert_from_gpt2
    from nanogpt2.hellaswag import evaluate_hellaswag, load_hellaswag
    from nanogpt2.tokenizer import load_tokenizer

    convert_from_gpt2(str(hf_gpt2_fixture_dir), str(tmp_path / "converted"))
    examples, tokenizer = load_hellaswag(hellaswag_file, limit=100), load_tokenizer()
    results = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for device in ("cpu", "cuda"):
            model = NanoGPT2ForCausalLM.from_pretrained(tmp_path / "converted").to(device)
            results[device] = evaluate_hellaswag(model, tokenizer, examples, device=device, progress=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    cpu, gpu = results["cpu"]["predictions"], results["cuda"]["predictions"]
    assert len(cpu) == len(gpu) == 100
    for a, b in zip(cpu, gpu):
        assert b["sum_losses"] == pytest.approx(a["sum_losses"], rel=1e-5)
        assert (b["pred"], b["pred_norm"]) == (a["pred"], a["pred_norm"]), a["ind"]
