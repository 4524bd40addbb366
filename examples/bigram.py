"""Step 1 of the path to GPT-2: a character-level bigram model of Tiny Shakespeare.

    python examples/bigram.py            # seconds on a CPU; val loss about 2.49 (uniform: ln 65 = 4.17)

The model is a 65x65 table of logits: the next character depends only on the current one.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from char_data import CharTokenizer, estimate_loss, get_batch, load_text, split_data  # noqa: E402


class BigramLanguageModel(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.logits = nn.Embedding(vocab_size, vocab_size)

    def forward(self, x, y=None):
        logits = self.logits(x)
        loss = None if y is None else nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, ids, max_new_tokens, generator):
        for _ in range(max_new_tokens):
            probs = self.logits(ids[:, -1]).softmax(-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return ids


def train(model, train_data, max_iters, batch_size, block_size, learning_rate, generator):
    """AdamW on random batches for `max_iters` steps; returns the training loss of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    losses = []
    for _ in range(max_iters):
        _, loss = model(*get_batch(train_data, batch_size, block_size, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_file", help="Tiny Shakespeare input.txt (default: ../shared/data's, else download)")
    parser.add_argument("--max_iters", type=int, default=3000, help="optimizer steps")
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per step")
    parser.add_argument("--block_size", type=int, default=8, help="characters per sequence")
    parser.add_argument("--learning_rate", type=float, default=1e-2, help="AdamW learning rate")
    parser.add_argument("--eval_iters", type=int, default=200, help="batches per split for the final loss estimate")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--num_threads", type=int, default=1,
                        help="PyTorch CPU threads; a 65x65 table gains nothing from more, they only add "
                             "synchronisation")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    text = load_text(args.data_file)
    tokenizer = CharTokenizer.from_text(text)
    train_data, val_data = split_data(text, tokenizer)
    model = BigramLanguageModel(tokenizer.vocab_size)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    train(model, train_data, args.max_iters, args.batch_size, args.block_size, args.learning_rate, generator)
    losses = estimate_loss(lambda x, y: model(x, y)[1], {"train": train_data, "val": val_data}, args.batch_size,
                           args.block_size, args.eval_iters)
    print(f"vocabulary {tokenizer.vocab_size} characters; uniform loss ln {tokenizer.vocab_size} = "
          f"{math.log(tokenizer.vocab_size):.2f}")
    print(f"after {args.max_iters} steps ({time.time() - start:.1f} s): train loss {losses['train']:.4f}, "
          f"val loss {losses['val']:.4f}")
    sample = model.generate(torch.zeros((1, 1), dtype=torch.long), 300, generator)
    print(tokenizer.decode(sample[0].tolist()))
    return losses


if __name__ == "__main__":
    main()
