"""Side-by-side training throughput, interleaved in one process: the bare nanogpt2 model, the optimizer
step that run_pretrain.py really runs (`loop`: nanogpt2.training.PretrainingLoop.train_step with Accelerate,
the prefetching loader, accumulation, clip, AdamW and its syncs), and Hugging Face GPT2LMHeadModel with
identical weights, eager and compiled. Optionally build-nanogpt's model (`--build_nanogpt
third_party/build-nanogpt/train_gpt2.py`, fetched by hand into the git-ignored third_party/, never committed).

    python benchmarks/train_throughput.py --device cuda                      # 124M, B=64, T=1024, bf16
    python benchmarks/train_throughput.py --device cpu --preset tiny --batch_size 4 --seq_len 64
    python benchmarks/train_throughput.py --contenders loop:compiled hf-gpt2:compiled

A bare step is forward + backward + grad clip + AdamW + zero_grad on one fixed micro-batch, under
torch.autocast; the loop step reads its batches from random-token shards (--loop_grad_accum micro-batches
per optimizer step, default 1). Steps are timed with device synchronisation; warm-up steps (compilation)
are excluded and the median over the timed steps is reported. Contenders run in rounds (a few steps of
each per round) so drifting machine load hits all of them alike. Peak memory (CUDA) is the allocator's
peak during a contender's steps; `step_mem_gib` is that peak minus what was allocated before them (the
other contenders' weights stay resident).
MFU = tokens/s x (6N + 12 L H Q T) / peak, nanoGPT's formula (N without position embeddings), with
the dense bf16 peak of the device (H100 SXM: 989 TFLOP/s) or --peak_tflops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.convert import nanogpt2_state_to_gpt2
from nanogpt2.flops import device_peak_flops, mfu, model_flops_per_token
from nanogpt2.optim import build_optimizer

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class Contender:
    name: str
    model: torch.nn.Module
    loss_fn: callable
    optimizer: torch.optim.Optimizer = None
    step: callable = None  # the loop contender's own optimizer step (no x, y: it reads its loader)
    close: callable = None
    tokens_per_step: int | None = None
    step_times: list = field(default_factory=list)
    peak_memory: int | None = None
    step_memory: int | None = None


def nanogpt2_loss(model, x, y):
    return model(input_ids=x, shift_labels=y).loss


def hf_loss(model, x, y):
    return model(input_ids=x, labels=y, shift_labels=y).loss


def build_nanogpt_loss(model, x, y):
    return model(x, y)[1]


def load_build_nanogpt(path: Path):
    """build-nanogpt's GPT class: the model half of its train_gpt2.py (the rest is a training script)."""
    source = path.read_text()
    model_part = source.split("import tiktoken")[0]
    model_part = model_part.replace("from hellaswag import render_example, iterate_examples", "")
    module = types.ModuleType("build_nanogpt")
    sys.modules[module.__name__] = module  # its @dataclass looks the module up
    exec(compile(model_part, str(path), "exec"), module.__dict__)
    return module.GPT, module.GPTConfig


def write_random_shards(directory: Path, tokens: int, seed: int = 0) -> None:
    """A train and a val shard of random GPT-2 token ids, documents of ~1000 tokens (for the loop contender)."""
    from nanogpt2.shards import write_shard
    from nanogpt2.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        ids = rng.integers(0, tokenizer.eot_token_id, tokens)
        ids[::1000] = tokenizer.eot_token_id
        write_shard(directory / f"random_{split}_000000.bin", ids, tokenizer.identity)


def make_loop_contender(args, device, compiled: bool, workdir: Path) -> Contender:
    """run_pretrain.py's PretrainingLoop on random-token shards; its train_step() is what gets timed."""
    from nanogpt2.configuration_nanogpt2 import RECIPE_DIR
    from nanogpt2.run_config import RunConfig, load_config_file
    from nanogpt2.training import PretrainingLoop

    tokens_per_step = args.batch_size * args.seq_len * args.loop_grad_accum
    data_dir = workdir / "shards"
    if not data_dir.is_dir():
        data_dir.mkdir(parents=True)
        write_random_shards(data_dir, 4 * tokens_per_step + 1)
    config = RunConfig(preset=args.preset, data_dir=str(data_dir), output_dir=str(workdir / f"run-{compiled}"),
                       per_device_train_batch_size=args.batch_size, block_size=args.seq_len,
                       total_batch_size=tokens_per_step, mixed_precision="bf16" if args.dtype == "bfloat16" else "no",
                       torch_compile=str(compiled).lower(),
                       eval_tokens=args.batch_size * args.seq_len, skip_hellaswag=True, num_samples=0,
                       report_to="none", max_steps=10**6, warmup_steps=10,
                       optim=load_config_file(RECIPE_DIR / f"{args.preset}.yaml").get("optim", ("adamw",))[0])
    if device.type == "cpu":
        import os

        os.environ["ACCELERATE_USE_CPU"] = "1"  # the loop picks CUDA whenever it sees one
    trainer = PretrainingLoop(config)
    return Contender(f"loop {'compiled' if compiled else 'eager'}", trainer.raw_model, None,
                     step=trainer.train_step, close=trainer.close, tokens_per_step=tokens_per_step)


def make_contenders(args, device, workdir: Path) -> list[Contender]:
    config = NanoGPT2Config.from_preset(args.preset, n_positions=max(args.seq_len, 8))
    torch.manual_seed(0)
    ours = NanoGPT2ForCausalLM(config).to(device)
    wanted = args.contenders

    from transformers import GPT2Config, GPT2LMHeadModel

    bases = [("nanogpt2", ours, nanogpt2_loss)]
    if any(name == "hf-gpt2" for name, _ in wanted):
        hf_config = GPT2Config(n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                               n_positions=config.n_positions, vocab_size=config.vocab_size,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        hf_config._attn_implementation = "sdpa"
        hf = GPT2LMHeadModel(hf_config).to(device)
        hf.load_state_dict(nanogpt2_state_to_gpt2(ours.state_dict()), strict=False)
        hf.tie_weights()
        bases.append(("hf-gpt2", hf, hf_loss))
    if args.build_nanogpt and any(name == "build-nanogpt" for name, _ in wanted):
        GPT, GPTConfig = load_build_nanogpt(Path(args.build_nanogpt))
        theirs = GPT(GPTConfig(block_size=config.n_positions, vocab_size=config.vocab_size, n_layer=config.n_layer,
                               n_head=config.n_head, n_embd=config.n_embd)).to(device)
        theirs.load_state_dict({k: v for k, v in ours.state_dict().items()}, strict=False)
        bases.append(("build-nanogpt", theirs, build_nanogpt_loss))

    contenders = []
    for name, mode in wanted:
        if name == "loop":
            contenders.append(make_loop_contender(args, device, mode == "compiled", workdir))
            continue
        found = [(model, loss_fn) for base, model, loss_fn in bases if base == name]
        if not found:
            continue  # build-nanogpt without its file
        model, loss_fn = found[0]
        model.train()
        runner = torch.compile(model) if mode == "compiled" else model
        contender = Contender(f"{name} {mode}", runner, loss_fn, tokens_per_step=args.batch_size * args.seq_len)
        contender.optimizer = build_optimizer(model, learning_rate=6e-4, weight_decay=0.1, device_type=device.type)
        contenders.append(contender)
    return contenders


def train_step(contender: Contender, x, y, dtype, device):
    if contender.step is not None:
        return contender.step()
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = contender.loss_fn(contender.model, x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(contender.model.parameters(), 1.0)
    contender.optimizer.step()
    contender.optimizer.zero_grad(set_to_none=True)
    return loss


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args) -> list[dict]:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as workdir:
        contenders = make_contenders(args, device, Path(workdir))
        with torch.device("meta"):
            counted = NanoGPT2ForCausalLM(NanoGPT2Config.from_preset(args.preset, n_positions=max(args.seq_len, 8)))
        try:
            return time_contenders(args, contenders, device, dtype, model_flops_per_token(counted, args.seq_len))
        finally:
            for contender in contenders:
                if contender.close:
                    contender.close()  # the loop's batch-reading thread


def time_contenders(args, contenders: list[Contender], device, dtype, flops_per_token: int) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    window = torch.randint(0, 50257, (args.batch_size, args.seq_len + 1), generator=generator).to(device)
    x, y = window[:, :-1].contiguous(), window[:, 1:].contiguous()

    for contender in contenders:  # warm-up (and compilation) is not timed
        for _ in range(args.warmup_steps):
            train_step(contender, x, y, dtype, device)
        synchronize(device)
    for _ in range(args.rounds):
        for contender in contenders:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            for _ in range(args.steps_per_round):
                synchronize(device)
                start = time.perf_counter()
                train_step(contender, x, y, dtype, device)
                synchronize(device)
                contender.step_times.append(time.perf_counter() - start)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated()
                contender.peak_memory = max(contender.peak_memory or 0, peak)
                contender.step_memory = max(contender.step_memory or 0, peak - before)

    peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else device_peak_flops(device)
    results = []
    for contender in contenders:
        seconds = statistics.median(contender.step_times)
        tokens_per_second = contender.tokens_per_step / seconds
        results.append({
            "contender": contender.name, "batch": args.batch_size, "seq_len": args.seq_len,
            "tokens_per_step": contender.tokens_per_step, "ms_per_step": seconds * 1e3,
            "tokens_per_sec": tokens_per_second,
            "peak_mem_gib": contender.peak_memory / 2**30 if contender.peak_memory else None,
            "step_mem_gib": contender.step_memory / 2**30 if contender.step_memory else None,
            "mfu": mfu(tokens_per_second, flops_per_token, peak_flops), "steps_timed": len(contender.step_times),
        })
    add_ratios_vs_hf(results)
    return results


def add_ratios_vs_hf(results: list[dict]) -> None:
    """ratio_vs_hf: tokens/s over HF GPT-2's in the same mode (eager/compiled), else over HF compiled."""
    hf = {r["contender"].split()[1]: r["tokens_per_sec"] for r in results if r["contender"].startswith("hf-gpt2")}
    for r in results:
        mode = r["contender"].split()[1]
        peer = mode if mode in hf else "compiled" if "compiled" in hf else None
        r["ratio_vs_hf"] = r["tokens_per_sec"] / hf[peer] if peer else None
        r["hf_peer"] = f"hf-gpt2 {peer}" if peer else None


def print_table(results, args) -> None:
    print(f"device={args.device} preset={args.preset} B={args.batch_size} T={args.seq_len} dtype={args.dtype} "
          f"steps={args.rounds}x{args.steps_per_round} (median)")
    header = (f"{'contender':<24} {'ms/step':>9} {'tokens/s':>11} {'peak GiB':>9} {'step GiB':>9} {'MFU':>7} "
              f"{'vs HF':>7}  (vs HF: same mode, else HF compiled)")
    print(header)
    print("-" * len(header))
    for r in results:
        memory = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        step_memory = f"{r['step_mem_gib']:.1f}" if r["step_mem_gib"] is not None else "-"
        utilisation = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        ratio = f"{r['ratio_vs_hf']:.2f}x" if r["ratio_vs_hf"] is not None else "-"
        print(f"{r['contender']:<24} {r['ms_per_step']:>9.1f} {r['tokens_per_sec']:>11,.0f} {memory:>9} "
              f"{step_memory:>9} {utilisation:>7} {ratio:>7}")


CONTENDER_NAMES = ("nanogpt2", "loop", "hf-gpt2", "build-nanogpt")


def parse_contenders(names: list[str], modes: list[str]) -> list[tuple[str, str]]:
    """"name" (every mode of --modes) or "name:mode" -> [(name, mode)], in the order given."""
    wanted = []
    for item in names:
        name, _, mode = item.partition(":")
        if name not in CONTENDER_NAMES or mode not in ("", "eager", "compiled"):
            raise SystemExit(f"--contenders {item}: use NAME or NAME:eager|compiled, NAME one of "
                             f"{', '.join(CONTENDER_NAMES)}")
        wanted += [(name, m) for m in ([mode] if mode else modes)]
    return wanted


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default=None, help="model size (default: gpt2-124m on cuda, tiny on cpu)")
    parser.add_argument("--batch_size", type=int, default=None, help="micro-batch (default: 64 on cuda, 4 on cpu)")
    parser.add_argument("--seq_len", type=int, default=None, help="tokens per row (default: 1024 on cuda, 64 on cpu)")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None,
                        help="autocast dtype (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=None,
                        help="default: eager and compiled on cuda, eager on cpu")
    parser.add_argument("--contenders", nargs="+", default=None,
                        help="NAME or NAME:MODE among " + ", ".join(CONTENDER_NAMES) + " (default: all of them in "
                        "every --modes; build-nanogpt only with --build_nanogpt)")
    parser.add_argument("--loop_grad_accum", type=int, default=1, help="micro-batches per loop optimizer step")
    parser.add_argument("--warmup_steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps_per_round", type=int, default=4)
    parser.add_argument("--peak_tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    parser.add_argument("--build_nanogpt", default=None, help="path to build-nanogpt's train_gpt2.py (optional)")
    parser.add_argument("--output_file", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.preset = args.preset or ("gpt2-124m" if cuda else "tiny")
    args.batch_size = args.batch_size or (64 if cuda else 4)
    args.seq_len = args.seq_len or (1024 if cuda else 64)
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.modes = args.modes or (["eager", "compiled"] if cuda else ["eager"])
    args.contenders = parse_contenders(args.contenders or list(CONTENDER_NAMES), args.modes)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(args)
    print_table(results, args)
    if args.output_file:
        Path(args.output_file).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
