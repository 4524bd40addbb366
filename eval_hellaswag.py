#!/usr/bin/env python
"""HellaSwag for any causal LM checkpoint (nanogpt2 or any Hugging Face model).

    python eval_hellaswag.py --model runs/tiny/checkpoint-200 --data_file hellaswag_val.jsonl
    python eval_hellaswag.py --model openai-community/gpt2 --style harness          # online
    accelerate launch --num_processes 8 eval_hellaswag.py --model ...                # split across GPUs

Scoring styles: completion (build-nanogpt; GPT-2 124M: acc 0.2859, acc_norm 0.2955) and harness
(lm-evaluation-harness; GPT-2 124M: acc 0.2892, acc_norm 0.3114). The logic is nanogpt2/hellaswag.py.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from nanogpt2.convert import require_safetensors
from nanogpt2.errors import HellaSwagError, cli, first_line
from nanogpt2.fileio import atomic_write_text, check_output_file
from nanogpt2.hellaswag import evaluate_hellaswag, load_hellaswag
from nanogpt2.sources import looks_like_local_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PREDICTION_FIELDS = ("ind", "label", "pred", "pred_norm", "sum_losses", "mean_losses")


def load_model_and_tokenizer(name_or_path: str, dtype=None, device=None, trust_remote_code: bool = False):
    """`AutoModelForCausalLM` and `AutoTokenizer` of a checkpoint directory or Hub id, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import nanogpt2  # noqa: F401  (registers nanogpt2 with the Auto classes)

    path = Path(name_or_path).expanduser()
    local = looks_like_local_path(name_or_path)
    if local and not path.is_dir():
        raise HellaSwagError(f"--model {name_or_path} is not a checkpoint directory (no such directory); pass a "
                             "directory written by save_pretrained or a Hub id such as openai-community/gpt2")
    if local:
        require_safetensors(path, f"--model {name_or_path}")
    try:
        model = AutoModelForCausalLM.from_pretrained(path if local else name_or_path, dtype=dtype,
                                                     trust_remote_code=trust_remote_code, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path if local else name_or_path,
                                                  trust_remote_code=trust_remote_code)
    except Exception as error:  # OSError, ValueError, safetensors' SafetensorError (a truncated or tampered file)
        raise HellaSwagError(f"could not load --model {name_or_path}: {first_line(error)}") from None
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def write_results(result: dict, output_file=None, predictions_file=None) -> None:
    """The result without its predictions as JSON to `output_file`, and one JSON line per example
    (PREDICTION_FIELDS) to `predictions_file`; each written atomically."""
    for path in (output_file, predictions_file):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if output_file:
        summary = {key: value for key, value in result.items() if key != "predictions"}
        atomic_write_text(output_file, json.dumps(summary, indent=2) + "\n")
    if predictions_file:
        lines = (json.dumps({key: p[key] for key in PREDICTION_FIELDS}) + "\n" for p in result["predictions"])
        atomic_write_text(predictions_file, "".join(lines))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub id")
    parser.add_argument("--data_file", help="local HellaSwag jsonl (default: download the official file once, "
                        "sha256-checked, cached under $HF_HOME/nanogpt2)")
    parser.add_argument("--split", default="validation", choices=["validation", "train"],
                        help="which official file to download when --data_file is not given")
    parser.add_argument("--limit", type=int, help="evaluate the first N examples only")
    parser.add_argument("--batch_size", type=int, default=32, help="examples (x4 endings) per forward pass")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: this process's accelerator device, "
                        "else cuda when available)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="weights' dtype")
    parser.add_argument("--style", choices=["completion", "harness"], default="completion",
                        help="completion: build-nanogpt's scoring; harness: lm-evaluation-harness's")
    parser.add_argument("--max_length", type=int, help="context window (default: from the model config); "
                        "longer examples are truncated from the left and counted")
    parser.add_argument("--output_file", help="write the results JSON here")
    parser.add_argument("--predictions_file", help="write one JSON line per example here")
    parser.add_argument("--trust_remote_code", action="store_true", help="allow the checkpoint's own code")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_args(args) -> torch.device | None:
    """Every flag checked before any loading: bounds, the device, the output paths. Returns --device."""
    for flag, value, least in (("--limit", args.limit, 1), ("--batch_size", args.batch_size, 1),
                               ("--max_length", args.max_length, 2)):
        if value is not None and value < least:
            raise HellaSwagError(f"{flag} {value} must be at least {least}")
    device = None
    if args.device:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise HellaSwagError(f"--device {args.device!r} is not a device; use cpu, cuda, cuda:1, mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise HellaSwagError(f"--device {args.device}: CUDA is not available here; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise HellaSwagError(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA "
                                 "device(s); pick one of them")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise HellaSwagError(f"--device {args.device}: MPS is not available here; use --device cpu")
    for flag, path in (("--output_file", args.output_file), ("--predictions_file", args.predictions_file)):
        if path:
            check_output_file(path, flag)
    return device


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    device = check_args(args)
    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by accelerate launch / torchrun
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = device or (
        accelerator.device if accelerator else torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    examples = load_hellaswag(args.data_file, split=args.split, limit=args.limit)
    model, tokenizer = load_model_and_tokenizer(args.model, DTYPES[args.dtype], device, args.trust_remote_code)
    result = evaluate_hellaswag(model, tokenizer, examples, style=args.style, batch_size=args.batch_size,
                                device=device, accelerator=accelerator, progress=not args.no_progress,
                                max_length=args.max_length)
    if accelerator is not None and not accelerator.is_main_process:
        return 0
    result["model"] = args.model
    write_results(result, args.output_file, args.predictions_file)
    print(json.dumps({key: value for key, value in result.items() if key != "predictions"}, indent=2))
    if result["num_truncated"]:
        print(f"note: {result['num_truncated']} example(s) were longer than the model's context and were "
              "truncated from the left", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
