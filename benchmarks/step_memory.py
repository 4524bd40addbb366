"""Peak memory one training step adds: nanogpt2 against Hugging Face GPT2LMHeadModel, same settings.

    python benchmarks/step_memory.py                                  # GPT-2 124M, B=4, T=1024, bf16, CPU
    python benchmarks/step_memory.py --preset tiny --batch_size 2 --seq_len 64

Each contender runs in its own fresh process (one after another, never two at once): the model, AdamW
and `Accelerator(mixed_precision="bf16", cpu=True)`, then one warm-up step (so AdamW's states and the
gradients' first allocation are behind us), then the measured step: forward, `accelerator.backward`,
`optimizer.step`, `zero_grad`. The step is called as training calls it: nanogpt2 with
`shift_labels` (run_pretrain.py's call), HF GPT-2 with `labels`; "nanogpt2-eval-path" is nanogpt2 in
eval mode, i.e. full logits, -inf fill and transformers' loss, the path the training step took before
the fast path.

How peak memory is measured (CPU): the process's resident set. Before the measured step the kernel's
high-water mark is reset (`/proc/self/clear_refs` <- 5, Linux) and the current RSS read; after it,
VmHWM is read. "Added" = VmHWM - RSS before the step. torch's CPU tensors come from malloc, and glibc
would keep freed heap memory mapped (RSS stays high, and its mmap threshold adapts upward), so each
child runs with MALLOC_MMAP_THRESHOLD_=65536: every tensor over 64 KiB is its own mmap, returned to
the system when freed, and RSS follows the live tensors.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys

CONTENDERS = ("hf-gpt2", "nanogpt2", "nanogpt2-eval-path")


def memory_mib() -> dict:
    status = open("/proc/self/status").read()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}


def measure(name: str, args) -> dict:
    """One contender's step, in this (fresh) process."""
    import torch
    from accelerate import Accelerator
    from transformers import GPT2Config, GPT2LMHeadModel

    from nanogpt2 import GPT2_VOCAB_SIZE, PRESETS, NanoGPT2Config, NanoGPT2ForCausalLM

    torch.manual_seed(0)
    shape = {**PRESETS[args.preset], "n_positions": max(args.seq_len, PRESETS[args.preset].get("n_positions", 1024))}
    if name == "hf-gpt2":
        config = GPT2Config(**shape, vocab_size=GPT2_VOCAB_SIZE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(config)
    else:
        model = NanoGPT2ForCausalLM(NanoGPT2Config(**shape))
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train(name != "nanogpt2-eval-path")
    window = torch.randint(0, GPT2_VOCAB_SIZE, (args.batch_size, args.seq_len + 1))

    def step():
        if name == "hf-gpt2":
            loss = model(input_ids=window[:, :-1], labels=window[:, :-1]).loss
        else:
            loss = model(input_ids=window[:, :-1], shift_labels=window[:, 1:]).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    step()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = memory_mib()["VmRSS"]
    loss = step()
    peak = memory_mib()["VmHWM"]
    return {"contender": name, "rss_before_mib": round(before), "peak_mib": round(peak),
            "added_gib": round((peak - before) / 1024, 3), "loss": round(loss, 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpt2-124m")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated, of {CONTENDERS}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return 0

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    common = ["--preset", args.preset, "--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len)]
    rows = []
    for name in args.contenders.split(","):
        out = subprocess.run([sys.executable, __file__, *common, "--child", name], env=env, check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    hf = next((r for r in rows if r["contender"] == "hf-gpt2"), None)
    print(f"step memory: {args.preset}, B={args.batch_size}, T={args.seq_len}, Accelerate bf16, CPU")
    print(f"{'contender':<20} {'RSS before':>11} {'peak':>9} {'added':>9} {'vs HF':>6} {'loss':>8}")
    for r in rows:
        ratio = f"{r['added_gib'] / hf['added_gib']:.2f}x" if hf else "-"
        print(f"{r['contender']:<20} {r['rss_before_mib']:>7} MiB {r['peak_mib']:>5} MiB "
              f"{r['added_gib']:>5.2f} GiB {ratio:>6} {r['loss']:>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
