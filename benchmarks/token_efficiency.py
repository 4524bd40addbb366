"""Tokens to reach the GPT-2 recipe's loss: the GPT-2 recipe and the modern recipe (issue 24) trained side by
side, same data, same tokens per step, a small model, several seeds, each recipe's learning rate picked from a
small sweep. Prints the validation-loss curves, saves a plot, and prints

    ratio = tokens the modern recipe needs to reach the GPT-2 recipe's final validation loss / GPT-2's tokens

per seed (linear interpolation between evaluations; "> 1" where it never gets there), with mean and spread, and
with --ablation the same ratio with each modern option switched back to GPT-2's in turn.

The recipes, at this scale:
  gpt2:   learned positions, LayerNorm, GELU-tanh, biases, tied head; AdamW (0.9, 0.95), weight decay 0.1,
          10% linear warmup then cosine to 10% (build-nanogpt, nanogpt2/recipes/gpt2-124m.yaml).
  modern: rotary, RMSNorm, QK-norm, ReLU², no biases, untied head, softcap 15, zero-init projections; Muon
          (momentum 0.95) for the blocks' matrices and AdamW (0.8, 0.95, no decay) for the rest; no warmup,
          constant then a decay to 0 over the last 20% (nanochat, nanogpt2/recipes/gpt2-124m-modern.yaml).

The text is english_mix (../shared/data/english_mix), tokenized with a byte-level BPE of --vocab_size trained
on it (nanogpt2.bpe_training; a small vocabulary keeps the head cheap on a CPU), the last 10% of the tokens
held out for validation. Work files go to --work_dir (reused between runs). It is a benchmark, not a test:

    nice python benchmarks/token_efficiency.py --seeds 3 --ablation              # the issue's size (slow on CPU)
    nice python benchmarks/token_efficiency.py --n_layer 4 --n_embd 128 --n_head 4 --block_size 128 --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM  # noqa: E402
from nanogpt2.optim import (  # noqa: E402
    MuonWithAdamW,
    build_optimizer,
    learning_rate_at,
    muon_and_adamw_groups,
    set_learning_rates,
)

MODERN_OPTIONS = dict(position_embedding="rotary", normalization="rmsnorm", qk_norm=True, mlp_activation="relu2",
                      bias=False, tie_word_embeddings=False, logit_softcap=15.0, zero_init_projections=True)
GPT2_OPTIONS = dict(position_embedding="learned", normalization="layernorm", qk_norm=False, mlp_activation="gelu_tanh",
                    bias=True, tie_word_embeddings=True, logit_softcap=None, zero_init_projections=False)


@dataclasses.dataclass
class Recipe:
    name: str
    options: dict
    optim: str  # adamw | muon
    lr: float  # AdamW's peak
    muon_lr: float = 0.0
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)
    schedule: str = "cosine"
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.1


def gpt2_recipe(lr: float) -> Recipe:
    return Recipe("gpt2", GPT2_OPTIONS, "adamw", lr)


def modern_recipe(muon_lr: float, lr: float, **changes) -> Recipe:
    recipe = Recipe("modern", dict(MODERN_OPTIONS), "muon", lr, muon_lr, weight_decay=0.0, betas=(0.8, 0.95),
                    schedule="warmup_stable_decay", warmup_ratio=0.0, min_lr_ratio=0.0)
    return dataclasses.replace(recipe, **changes)


def prepare_tokens(data: Path, work_dir: Path, vocab_size: int, max_documents: int | None) -> tuple[np.ndarray, int]:
    """english_mix as one token stream (documents joined by <|endoftext|>), cached in work_dir."""
    from nanogpt2.bpe_training import train_bpe_tokenizer
    from nanogpt2.documents import read_documents

    tag = f"v{vocab_size}-d{max_documents or 'all'}"
    cache = work_dir / f"tokens-{tag}.npy"
    if cache.is_file():
        return np.load(cache), vocab_size
    documents = list(read_documents(data, "text"))[:max_documents]
    work_dir.mkdir(parents=True, exist_ok=True)
    subset = work_dir / f"documents-{tag}.jsonl"
    subset.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    tokenizer = train_bpe_tokenizer([subset], vocab_size, work_dir / f"tokenizer-{tag}")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = [[eot, *row] for row in tokenizer(documents, add_special_tokens=False)["input_ids"]]
    tokens = np.fromiter((t for row in ids for t in row), dtype=np.int32)
    np.save(cache, tokens)
    return tokens, vocab_size


def batches(tokens: torch.Tensor, batch_size: int, block_size: int, seed: int):
    """Random windows (the same sequence for every recipe with this seed)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(tokens) - block_size - 1, (batch_size,), generator=generator)
        rows = torch.stack([tokens[s:s + block_size + 1] for s in starts.tolist()]).long()
        yield rows[:, :-1], rows[:, 1:]


@torch.no_grad()
def validation_loss(model, val: torch.Tensor, block_size: int, windows: int) -> float:
    model.eval()
    count = min(windows, (len(val) - 1) // block_size)
    x = val[:count * block_size].view(count, block_size).long()
    y = val[1:count * block_size + 1].view(count, block_size).long()
    losses = [model(input_ids=x[i:i + 16], shift_labels=y[i:i + 16]).loss for i in range(0, count, 16)]
    model.train()
    return float(torch.stack(losses).mean())


def train(recipe: Recipe, args, train_tokens, val_tokens, vocab_size: int, seed: int) -> list[tuple[int, float]]:
    """[(tokens seen, validation loss)] every --eval_every steps and at the end."""
    torch.manual_seed(seed)
    config = NanoGPT2Config(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, n_positions=args.block_size,
                            vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, **recipe.options)
    model = NanoGPT2ForCausalLM(config).train()
    if recipe.optim == "muon":
        optimizer = MuonWithAdamW(*muon_and_adamw_groups(model, recipe.lr, recipe.weight_decay, recipe.muon_lr, 0.0),
                                  momentum=0.95, betas=recipe.betas)
    else:
        optimizer = build_optimizer(model, recipe.lr, recipe.weight_decay, recipe.betas)
    warmup = round(recipe.warmup_ratio * args.steps)
    data = batches(train_tokens, args.batch_size, args.block_size, seed)
    tokens_per_step = args.batch_size * args.block_size
    curve = []
    for step in range(args.steps):
        lr = learning_rate_at(step, recipe.schedule, recipe.lr, warmup, args.steps, recipe.min_lr_ratio, 0.2)
        set_learning_rates(optimizer, lr, recipe.lr)
        x, y = next(data)
        loss = model(input_ids=x, shift_labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            return curve + [((step + 1) * tokens_per_step, float("inf"))]
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            curve.append(((step + 1) * tokens_per_step, validation_loss(model, val_tokens, args.block_size,
                                                                        args.eval_windows)))
    return curve


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """The first token count at which the curve reaches `target`, interpolated linearly between evaluations."""
    previous = (0, float("inf"))
    for tokens, loss in curve:
        if loss <= target:
            if not math.isfinite(previous[1]):
                return float(tokens)
            return previous[0] + (previous[1] - target) / (previous[1] - loss) * (tokens - previous[0])
        previous = (tokens, loss)
    return None


def ratios(modern: list, gpt2: list) -> list[float | None]:
    """Per seed: tokens(modern reaches GPT-2's final loss) / GPT-2's tokens (None: never within the run)."""
    out = []
    for m, g in zip(modern, gpt2):
        reached = tokens_to_reach(m, g[-1][1])
        out.append(None if reached is None else reached / g[-1][0])
    return out


def summary(values: list[float | None]) -> str:
    if any(v is None for v in values):
        shown = ", ".join("> 1" if v is None else f"{v:.2f}" for v in values)
        return f"[{shown}] (some seeds never reach it)"
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} +- {spread:.3f} (min {min(values):.3f}, max {max(values):.3f}; seeds: " + \
        ", ".join(f"{v:.3f}" for v in values) + ")"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/english_mix/english_mix.jsonl"))
    parser.add_argument("--work_dir", default=str(REPO / "runs/token_efficiency"))
    parser.add_argument("--vocab_size", type=int, default=4096)
    parser.add_argument("--max_documents", type=int, default=None, help="only the first N documents (smoke runs)")
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=256)
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=16, help="sequences per step (both recipes)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval_every", type=int, default=25)
    parser.add_argument("--eval_windows", type=int, default=64, help="validation windows of block_size tokens")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--gpt2_lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--muon_lrs", type=float, nargs="+", default=[0.02, 0.04])
    parser.add_argument("--modern_adamw_lr", type=float, default=4e-3, help="the modern recipe's AdamW peak")
    parser.add_argument("--ablation", action="store_true", help="the modern recipe with each option reverted")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (leave cores to others)")
    parser.add_argument("--plot", default=None, help="PNG path (default: WORK_DIR/token_efficiency.png)")
    parser.add_argument("--json", default=None, help="write every curve and result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir)
    started = time.time()
    tokens, vocab_size = prepare_tokens(Path(args.data), work_dir, args.vocab_size, args.max_documents)
    split = int(len(tokens) * 0.9)
    train_tokens, val_tokens = torch.from_numpy(tokens[:split]), torch.from_numpy(tokens[split:])
    print(f"{len(tokens):,} tokens (vocabulary {vocab_size}), {args.batch_size * args.block_size:,} per step, "
          f"{args.steps} steps = {args.steps * args.batch_size * args.block_size:,} tokens per run")

    def run(recipe, seed):
        curve = train(recipe, args, train_tokens, val_tokens, vocab_size, seed)
        print(f"  {recipe.name:<22} lr {recipe.lr:g} muon_lr {recipe.muon_lr:g} seed {seed}: "
              + " ".join(f"{loss:.3f}" for _, loss in curve), flush=True)
        return curve

    # the sweep, on seed 0: each recipe at its best final validation loss
    print("learning-rate sweep (seed 0), validation loss every", args.eval_every, "steps:")
    sweep = {"gpt2": {}, "modern": {}}
    for lr in args.gpt2_lrs:
        sweep["gpt2"][lr] = run(gpt2_recipe(lr), 0)
    for muon_lr in args.muon_lrs:
        sweep["modern"][muon_lr] = run(modern_recipe(muon_lr, args.modern_adamw_lr), 0)
    best_gpt2 = min(sweep["gpt2"], key=lambda lr: sweep["gpt2"][lr][-1][1])
    best_muon = min(sweep["modern"], key=lambda lr: sweep["modern"][lr][-1][1])
    print(f"picked: gpt2 lr {best_gpt2:g}, modern muon_lr {best_muon:g} (AdamW lr {args.modern_adamw_lr:g})")

    curves = {"gpt2": [sweep["gpt2"][best_gpt2]], "modern": [sweep["modern"][best_muon]]}
    for seed in range(1, args.seeds):
        curves["gpt2"].append(run(gpt2_recipe(best_gpt2), seed))
        curves["modern"].append(run(modern_recipe(best_muon, args.modern_adamw_lr), seed))
    result = ratios(curves["modern"], curves["gpt2"])
    finals = {name: [c[-1][1] for c in runs] for name, runs in curves.items()}
    print("final validation loss: " + "; ".join(f"{name} {statistics.mean(v):.4f} (seeds: "
                                                 + ", ".join(f"{x:.4f}" for x in v) + ")"
                                                 for name, v in finals.items()))
    print(f"ratio tokens(modern reaches GPT-2's final loss) / tokens(GPT-2), over {args.seeds} seeds: "
          f"{summary(result)}")

    ablation = {}
    if args.ablation:
        print("ablation (seed 0): the modern recipe with one option back at GPT-2's")
        reverted = {name: {name: GPT2_OPTIONS[name]} for name in MODERN_OPTIONS}
        for name, change in reverted.items():
            options = {**MODERN_OPTIONS, **change}
            recipe = modern_recipe(best_muon, args.modern_adamw_lr, options=options, name=f"modern -{name}")
            ablation[name] = ratios([run(recipe, 0)], curves["gpt2"][:1])[0]
        recipe = modern_recipe(0.0, best_gpt2, optim="adamw", weight_decay=0.1, betas=(0.9, 0.95),
                               name="modern -muon")
        ablation["optim=muon"] = ratios([run(recipe, 0)], curves["gpt2"][:1])[0]
        print(f"{'switched off':<24} ratio (seed 0; all on: {summary(result[:1])})")
        for name, value in ablation.items():
            print(f"{name:<24} {'> 1' if value is None else f'{value:.3f}'}")

    plot = Path(args.plot) if args.plot else work_dir / "token_efficiency.png"
    save_plot(curves, plot)
    print(f"plot: {plot}; {time.time() - started:.0f} s")
    output = {"settings": vars(args), "picked": {"gpt2_lr": best_gpt2, "muon_lr": best_muon}, "sweep": {
        name: {str(k): v for k, v in runs.items()} for name, runs in sweep.items()}, "curves": curves,
        "ratios": result, "ablation": ablation}
    if args.json:
        Path(args.json).write_text(json.dumps(output, indent=1))
    return output


def save_plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, color in (("gpt2", "tab:blue"), ("modern", "tab:orange")):
        for i, curve in enumerate(curves[name]):
            axes.plot([t / 1e6 for t, _ in curve], [loss for _, loss in curve], color=color, alpha=0.8,
                      label=f"{name} recipe" if i == 0 else None)
    axes.set_xlabel("training tokens (millions)")
    axes.set_ylabel("validation loss")
    axes.legend()
    axes.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


if __name__ == "__main__":
    main()
