"""Step 2: a character-level GPT on Tiny Shakespeare, using nanogpt2's own model with a 65-token vocabulary.

    python examples/gpt_char.py --config cpu     # nanoGPT's CPU config: 4x4x128, context 64, 2000 steps
    python examples/gpt_char.py --config gpu     # 6x6x384, context 256, dropout 0.2, 5000 steps (nanoGPT: val 1.47)
    python examples/gpt_char.py --config cpu --n_layer 2 --max_iters 500   # any setting can be overridden

The model is NanoGPT2ForCausalLM with vocab_size = tokenizer_vocab_size = 65. The checkpoint in
--output_dir loads with AutoModelForCausalLM and its character vocabulary with AutoTokenizer:

    import nanogpt2
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("runs/gpt-char")
    tokenizer = AutoTokenizer.from_pretrained("runs/gpt-char")
    out = model.generate(**tokenizer("ROMEO:", return_tensors="pt"), max_new_tokens=50, do_sample=True)
    print(tokenizer.decode(out[0]))   # prompt + new characters must fit the context (64 for --config cpu)
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.checkpoint import save_model_checkpoint
from nanogpt2.optim import build_optimizer, cosine_lr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from char_data import CharTokenizer, estimate_loss, get_batch, load_text, split_data  # noqa: E402

# nanoGPT's config/train_shakespeare_char.py ("gpu") and the CPU variant from its README ("cpu");
# the rest is nanoGPT's train.py defaults: AdamW (0.9, 0.99), weight decay 0.1, clip 1.0, cosine to lr/10.
CONFIGS = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000, dropout=0.0,
                learning_rate=1e-3, warmup_iters=100, eval_interval=250, eval_iters=20),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, max_iters=5000, dropout=0.2,
                learning_rate=1e-3, warmup_iters=100, eval_interval=250, eval_iters=200),
}


@torch.no_grad()
def sample(model, prompt_ids, max_new_tokens, block_size, generator):
    """Sampling with the context cropped to the last block_size characters (nanoGPT's generate), so
    the sample can be longer than the model's context."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    for _ in range(max_new_tokens):
        probs = model(input_ids=ids[:, -block_size:]).logits[:, -1].softmax(-1).cpu()
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator).to(device)], dim=1)
    model.train()
    return ids[0].tolist()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=list(CONFIGS), default="cpu", help="nanoGPT's settings to start from")
    for name, default in CONFIGS["cpu"].items():
        parser.add_argument(f"--{name}", type=type(default), default=None,
                            help=f"override (cpu: {default}, gpu: {CONFIGS['gpu'][name]})")
    parser.add_argument("--data_file", help="Tiny Shakespeare input.txt (default: ../shared/data's, else download)")
    parser.add_argument("--output_dir", default="runs/gpt-char", help="where the checkpoint is written")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num_threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's)")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    args.settings = {k: (getattr(args, k) if getattr(args, k) is not None else v)
                     for k, v in CONFIGS[args.config].items()}
    if args.settings["n_embd"] % args.settings["n_head"]:
        parser.error(f"--n_embd {args.settings['n_embd']} must be a multiple of --n_head {args.settings['n_head']}")
    return args


def build_model(settings, vocab_size, device="cpu"):
    """NanoGPT2ForCausalLM with a character vocabulary (vocab_size = tokenizer_vocab_size, no padding rows)."""
    config = NanoGPT2Config(n_layer=settings["n_layer"], n_head=settings["n_head"], n_embd=settings["n_embd"],
                            n_positions=settings["block_size"], vocab_size=vocab_size, tokenizer_vocab_size=vocab_size,
                            dropout=settings["dropout"],
                            bias=False,  # nanoGPT's default (train.py: bias = False)
                            bos_token_id=None, eos_token_id=None)
    return NanoGPT2ForCausalLM(config).to(device)


def train(model, train_data, val_data, settings, generator, device="cpu", log=print):
    """nanoGPT's training loop for `settings["max_iters"]` steps: AdamW, warmup + cosine learning rate, gradient
    clipping, a loss estimate on both splits every `eval_interval` steps. Returns (history, step_losses):
    [(step, {"train": loss, "val": loss}), ...] from step 0, and the training loss of every step."""
    optimizer = build_optimizer(model, settings["learning_rate"], weight_decay=0.1, betas=(0.9, 0.99),
                                device_type=torch.device(device).type)

    def loss_of(x, y):
        return model(input_ids=x.to(device), shift_labels=y.to(device)).loss

    def evaluate():
        model.eval()
        losses = estimate_loss(loss_of, {"train": train_data, "val": val_data}, settings["batch_size"],
                               settings["block_size"], settings["eval_iters"])
        model.train()
        return losses

    start = time.time()
    history, step_losses = [(0, evaluate())], []
    log(f"step 0: train {history[0][1]['train']:.4f}, val {history[0][1]['val']:.4f}")
    for step in range(1, settings["max_iters"] + 1):
        lr = cosine_lr(step - 1, settings["learning_rate"], settings["warmup_iters"], settings["max_iters"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_of(*get_batch(train_data, settings["batch_size"], settings["block_size"], generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step_losses.append(loss.item())
        if step % settings["eval_interval"] == 0 or step == settings["max_iters"]:
            history.append((step, evaluate()))
            log(f"step {step}: train {history[-1][1]['train']:.4f}, val {history[-1][1]['val']:.4f} "
                f"({time.time() - start:.0f} s)")
    return history, step_losses


def main(argv=None):
    args = parse_args(argv)
    settings = args.settings
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)

    text = load_text(args.data_file)
    tokenizer = CharTokenizer.from_text(text)
    train_data, val_data = split_data(text, tokenizer)
    model = build_model(settings, tokenizer.vocab_size, args.device)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; {settings}")
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    history, _ = train(model, train_data, val_data, settings, generator, args.device)
    print(f"trained {settings['max_iters']} steps in {time.time() - start:.0f} s; a sample:")
    print(tokenizer.decode(sample(model, tokenizer.encode("\n"), 300, settings["block_size"], generator)))
    save_model_checkpoint(model.cpu(), args.output_dir, tokenizer=tokenizer)
    print(f"saved {args.output_dir} (AutoModelForCausalLM + AutoTokenizer)")
    return history, model


if __name__ == "__main__":
    main()
