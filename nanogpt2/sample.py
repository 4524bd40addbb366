"""Sample text from a checkpoint, streaming it as it is generated (nanoGPT's sample.py, the transformers way).

    python -m nanogpt2.sample runs/tiny-shakespeare/checkpoint-200 --prompt "ROMEO:"
    python -m nanogpt2.sample runs/tiny-shakespeare --num_samples 3       # a run folder: its latest checkpoint-N
    python -m nanogpt2.sample openai-community/gpt2 --prompt "Hello, I'm a language model," --temperature 0

The model is any nanogpt2 checkpoint (`save_pretrained` layout) or Hugging Face GPT-2 checkpoint (converted in
memory), given as a folder, a run folder or a Hub id. It generates with `model.generate` (KV cache, the usual
temperature / top-k / top-p sampling) and prints through transformers' `TextStreamer`. Weights are read from
safetensors only. Messages go to stderr, the samples to stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import DataError, SettingsError, cli
from .run_dir import latest_checkpoint

DEFAULT_MAX_NEW_TOKENS = 100
SEPARATOR = "---------------"  # between samples, as nanoGPT's sample.py prints them


def resolve_checkpoint(name_or_path: str) -> Path:
    """A checkpoint folder as is; a run folder's latest checkpoint-N; a Hub id downloaded (or from the cache)."""
    from .convert import resolve_checkpoint_dir

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
        if not (path / "config.json").is_file():
            raise DataError(f"{name_or_path} is not a checkpoint (no config.json) nor a run folder (no checkpoint-N "
                            "inside); pass a checkpoint folder written by save_pretrained or run_pretrain.py")
        return path
    if path.exists():
        raise DataError(f"{name_or_path} is a file; pass a checkpoint folder, a run folder or a Hub id")
    return resolve_checkpoint_dir(name_or_path, "checkpoint")


def pick_device(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingsError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"--device {name}: no CUDA device here (torch.cuda.is_available() is False); "
                            "use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SettingsError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def pick_dtype(name: str, device):
    import torch

    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model_and_tokenizer(checkpoint: Path, device, dtype):
    """The model (nanogpt2, or GPT-2 converted in memory; safetensors only) and its transformers tokenizer."""
    from .convert import load_pretrained

    model = load_pretrained(str(checkpoint)).to(device=device, dtype=dtype).eval()
    return model, load_tokenizer_of(checkpoint, model.config)


def load_tokenizer_of(checkpoint: Path, config):
    """The checkpoint's tokenizer files; GPT-2's own when it has none and its vocabulary is GPT-2's."""
    from transformers import AutoTokenizer

    from .configuration_nanogpt2 import GPT2_VOCAB_SIZE
    from .tokenizer import gpt2_hf_tokenizer

    if (checkpoint / "tokenizer.json").is_file() or (checkpoint / "vocab.json").is_file():
        # GPT-2 tokenizer files of transformers 4 ask for a clean-up that only WordPiece wants (it would eat the
        # spaces before punctuation); decoding a BPE exactly means without it
        return AutoTokenizer.from_pretrained(checkpoint, clean_up_tokenization_spaces=False)
    if config.tokenizer_vocab_size == GPT2_VOCAB_SIZE:
        return gpt2_hf_tokenizer()
    raise DataError(f"{checkpoint} has no tokenizer files (tokenizer.json) and its vocabulary "
                    f"({config.tokenizer_vocab_size}) is not GPT-2's; save the tokenizer into the checkpoint")


def read_prompt(args) -> str | None:
    """--prompt, or the text of --prompt_file; None when neither is given."""
    if args.prompt_file is not None:
        file = Path(args.prompt_file)
        if not file.is_file():
            raise DataError(f"--prompt_file {file} does not exist")
        try:
            return file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"--prompt_file {file} is not UTF-8 text") from None
    return args.prompt


def encode_prompt(prompt: str, tokenizer, context: int, flag: str) -> list[int]:
    ids = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]  # too long: our own message
    if not ids:
        raise SettingsError(f"{flag} is empty; give some text, or leave it out to start from "
                            f"{tokenizer.bos_token or 'a newline'}")
    if tokenizer.unk_token is None:  # no unknown token: a character outside the vocabulary would vanish
        kept = tokenizer.decode(ids)
        lost = sorted(set(prompt) - set(kept))
        if lost:
            raise SettingsError(f"{flag} has characters the checkpoint's vocabulary lacks: {''.join(lost)!r}")
    if len(ids) >= context:
        raise SettingsError(f"{flag} is {len(ids)} tokens, the model's context is {context}: nothing is left to "
                            f"generate; shorten the prompt to fewer than {context} tokens")
    return ids


def check_settings(args) -> None:
    if args.temperature < 0:
        raise SettingsError(f"--temperature {args.temperature} must be at least 0 (0 is greedy decoding)")
    if args.top_k < 0:
        raise SettingsError(f"--top_k {args.top_k} must be at least 0 (0 keeps every token)")
    if not 0 < args.top_p <= 1:
        raise SettingsError(f"--top_p {args.top_p} must be in (0, 1] (1 keeps every token)")
    if args.num_samples < 1:
        raise SettingsError(f"--num_samples {args.num_samples} must be at least 1")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise SettingsError(f"--max_new_tokens {args.max_new_tokens} must be at least 1")
    if args.temperature == 0 and args.num_samples > 1:
        raise SettingsError(f"--temperature 0 is greedy: the {args.num_samples} samples would be the same text; "
                            "use --num_samples 1 or a temperature above 0")


def generation_settings(args, prompt_length: int, context: int, tokenizer) -> dict:
    room = context - prompt_length
    max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, room) if args.max_new_tokens is None else args.max_new_tokens
    if max_new_tokens > room:
        tokens = f"{prompt_length} token{'s' * (prompt_length > 1)}"
        raise SettingsError(f"--max_new_tokens {max_new_tokens}: the prompt ({tokens}) + {max_new_tokens} exceeds "
                            f"the model's context of {context}; use at most {room}")
    pad = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    settings = {"max_new_tokens": max_new_tokens, "pad_token_id": pad}
    if args.temperature == 0:
        settings.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    else:
        settings.update(do_sample=True, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        num_return_sequences=args.num_samples)
    if args.compile:  # transformers' own compiled generation: a static KV cache and a compiled forward
        from transformers import CompileConfig

        compile_config = CompileConfig(dynamic=False)
        compile_config._compile_all_devices = True  # transformers compiles on accelerators only unless told
        settings.update(cache_implementation="static", compile_config=compile_config)
    return settings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nanogpt2.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (config.json + model.safetensors + tokenizer files), "
                        "a run folder (its latest checkpoint-N is used) or a Hub id such as openai-community/gpt2")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="the text to continue (default: <|endoftext|> for GPT-2's vocabulary, an "
                        "unconditional sample; a newline for a character-level model)")
    prompt.add_argument("--prompt_file", help="read the prompt from this UTF-8 file (nanoGPT's --start=FILE:...)")
    parser.add_argument("--num_samples", type=int, default=1,
                        help="samples to draw; one streams as it is generated, several print one after another")
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help=f"tokens to generate per sample (default {DEFAULT_MAX_NEW_TOKENS}, or fewer if the "
                        "context has less room); prompt + new tokens must fit the model's context")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="softmax temperature: below 1 is more conservative, above 1 more random; 0 is greedy "
                        "decoding (the most likely token every time)")
    parser.add_argument("--top_k", type=int, default=200, help="sample only among the k likeliest tokens (0: all)")
    parser.add_argument("--top_p", type=float, default=1.0,
                        help="nucleus sampling: only among the likeliest tokens whose probabilities add up to p")
    parser.add_argument("--seed", type=int, default=1337, help="random seed: the same seed gives the same samples")
    parser.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights and compute dtype (auto: bfloat16 on a GPU that has it, else float32)")
    parser.add_argument("--compile", action="store_true",
                        help="generate with a static KV cache and a torch.compile'd forward (transformers' "
                        "compiled generation): a slow first sample, faster tokens after it")
    return parser.parse_args(argv)


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    check_settings(args)
    prompt = read_prompt(args)
    device = pick_device(args.device)
    checkpoint = resolve_checkpoint(args.checkpoint)

    import torch
    from transformers import TextStreamer, set_seed
    from transformers.utils import logging as hf_logging

    dtype = pick_dtype(args.dtype, device)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr
    try:
        model, tokenizer = load_model_and_tokenizer(checkpoint, device, dtype)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    context = model.config.n_positions
    if prompt is None:  # <|endoftext|> for GPT-2's vocabulary (an unconditional sample), else a newline
        prompt = tokenizer.bos_token or "\n"
    flag = f"--prompt_file {args.prompt_file}" if args.prompt_file is not None else "--prompt"
    ids = encode_prompt(prompt, tokenizer, context, flag)
    settings = generation_settings(args, len(ids), context, tokenizer)
    print(f"sampling from {checkpoint} ({model.num_parameters():,} parameters, {device}, "
          f"{str(dtype).removeprefix('torch.')})", file=sys.stderr, flush=True)

    set_seed(args.seed)
    input_ids = torch.tensor([ids], device=device)
    attention_mask = torch.ones_like(input_ids)
    with torch.inference_mode():
        if args.num_samples == 1:
            streamer = TextStreamer(tokenizer, skip_special_tokens=True)
            model.generate(input_ids=input_ids, attention_mask=attention_mask, streamer=streamer, **settings)
        else:
            outputs = model.generate(input_ids=input_ids, attention_mask=attention_mask, **settings)
            for index, output in enumerate(outputs):
                if index:
                    print(SEPARATOR)
                print(tokenizer.decode(output, skip_special_tokens=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
