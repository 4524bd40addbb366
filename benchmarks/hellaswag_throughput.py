"""HellaSwag examples/s: nanogpt2's batched scorer against build-nanogpt's way (one forward of the 4
endings per example) on the same model, the same examples, in the same run.

    python benchmarks/hellaswag_throughput.py --data_file ../shared/data/hellaswag/hellaswag_val.jsonl
    python benchmarks/hellaswag_throughput.py --device cuda --preset gpt2-124m --limit 2000
"""

import argparse
import time

import torch

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.hellaswag import evaluate_hellaswag, load_hellaswag, render_example
from nanogpt2.tokenizer import load_tokenizer


@torch.no_grad()
def build_nanogpt_style(model, tokenizer, examples, device):
    """build-nanogpt's hellaswag loop: per example one (4, T) forward, full logits, masked mean loss."""
    correct = 0
    for example in examples:
        rows, starts, _ = render_example(example, tokenizer.encode_ordinary, "completion")
        width = max(len(r) for r in rows)
        tokens = torch.zeros(4, width, dtype=torch.long)
        mask = torch.zeros(4, width)
        for i, (row, start) in enumerate(zip(rows, starts)):
            tokens[i, : len(row)] = torch.tensor(row)
            mask[i, start : len(row)] = 1
        tokens, mask = tokens.to(device), mask.to(device)
        logits = model(tokens).logits
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                                   tokens[:, 1:].reshape(-1), reduction="none").view(4, -1)
        shift_mask = mask[:, 1:]
        mean_loss = (losses * shift_mask).sum(1) / shift_mask.sum(1)
        correct += int(mean_loss.argmin().item() == example["label"])
    return correct / len(examples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_file", help="local hellaswag_val.jsonl (default: download)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default=None, help="default: gpt2-124m on cuda, tiny on cpu")
    parser.add_argument("--limit", type=int, default=None, help="examples (default 2000 on cuda, 200 on cpu)")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    preset = args.preset or ("gpt2-124m" if cuda else "tiny")
    examples = load_hellaswag(args.data_file, limit=args.limit or (2000 if cuda else 200))
    torch.manual_seed(0)
    model = NanoGPT2ForCausalLM(NanoGPT2Config.from_preset(preset)).to(args.device).eval()
    tokenizer = load_tokenizer()
    dtype = torch.bfloat16 if cuda else torch.float32

    def timed(run):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(args.device.split(":")[0], dtype=dtype, enabled=cuda):
            accuracy = run()
        if cuda:
            torch.cuda.synchronize()
        return len(examples) / (time.perf_counter() - start), accuracy

    contenders = {
        "build-nanogpt: 4 rows per forward, full logits": lambda: build_nanogpt_style(model, tokenizer, examples,
                                                                                    args.device),
        "nanogpt2: one example per forward": lambda: evaluate_hellaswag(
            model, tokenizer, examples, batch_size=1, progress=False)["acc_norm"],
        f"nanogpt2: batched, {args.batch_size} examples per forward": lambda: evaluate_hellaswag(
            model, tokenizer, examples, batch_size=args.batch_size, progress=False)["acc_norm"],
    }
    timed(contenders[f"nanogpt2: batched, {args.batch_size} examples per forward"])  # warm-up
    rates = {name: [] for name in contenders}
    accuracies = {}
    for _ in range(2):  # interleaved rounds; the best of each is reported
        for name, run in contenders.items():
            rate, accuracies[name] = timed(run)
            rates[name].append(rate)
    print(f"device={args.device} preset={preset} examples={len(examples)}")
    reference = max(rates["build-nanogpt: 4 rows per forward, full logits"])
    for name, values in rates.items():
        print(f"{name:<50} {max(values):8.1f} examples/s {max(values) / reference:6.2f}x  "
              f"acc_norm {accuracies[name]:.4f}")
    return {name: {"examples_per_sec": max(values), "acc_norm": accuracies[name]} for name, values in rates.items()}


if __name__ == "__main__":
    main()
