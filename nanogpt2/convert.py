"""Two-way conversion between nanogpt2 and Hugging Face GPT-2 (`model_type: gpt2`) checkpoints.

    python -m nanogpt2.convert from-gpt2 openai-community/gpt2 ckpt/gpt2-nanogpt2
    python -m nanogpt2.convert to-gpt2 runs/tiny/checkpoint-500 exported/tiny-gpt2

GPT-2's Conv1D stores weights as (in, out); nn.Linear as (out, in): the four projection matrices of
every block are transposed. Old checkpoints may carry `attn.bias`/`attn.masked_bias` buffers (the
causal mask, not parameters) and no `lm_head.weight` (it is tied to wte); both are handled.
Weights are read from safetensors only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .checkpoint import write_model_files
from .configuration_nanogpt2 import (
    EOT_TOKEN_ID,
    GPT2_VOCAB_SIZE,
    NanoGPT2Config,
    padded_vocab_size,
)
from .errors import ConversionError, cli, first_line
from .fileio import atomic_directory, check_output_dir, sweep_temporaries
from .modeling_nanogpt2 import NanoGPT2ForCausalLM
from .run_dir import model_files_damage, previous_intact_checkpoint
from .sources import local_or_hub_dir

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


def resolve_checkpoint_dir(name_or_path: str, flag: str = "checkpoint") -> Path:
    """A local directory as is; otherwise a Hub id, downloaded (config, safetensors, tokenizer files)."""
    return local_or_hub_dir(name_or_path, flag, ["*.json", "*.safetensors", "merges.txt"])


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(directory: Path, name: str | None = None) -> list[Path]:
    """The *.safetensors files of `directory`; without any, an error naming what is there instead. Pickle
    files are never opened (unpickling runs code). `name` is how the message calls the directory."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        name = name or str(directory)
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ConversionError(
                f"{name} holds only pickle weights ({', '.join(pickles)}), refused as unsafe: unpickling "
                "can run any code and nanogpt2 loads only safetensors; use a checkpoint with model.safetensors")
        raise ConversionError(f"no *.safetensors weights in {name}; pass a checkpoint directory written by "
                              "save_pretrained")
    problem = model_files_damage(directory)  # cut short, a broken header, or (a run's checkpoint) changed
    if problem:
        previous = previous_intact_checkpoint(directory)
        raise ConversionError((f"{name}: " if name else "") + f"{directory}/{problem}: refused; restore it from a "
                              "copy" + (f", or use {previous}, the previous intact checkpoint" if previous else ""))
    return files


def load_safetensors_state(directory: Path) -> dict[str, torch.Tensor]:
    """Every *.safetensors file of `directory` as one state dict."""
    from safetensors import SafetensorError

    files = require_safetensors(directory)
    state = {}
    for file in files:
        try:
            state.update(load_file(file))
        except (SafetensorError, OSError, ValueError) as error:
            raise ConversionError(f"{file} is not a valid safetensors file, refused (truncated or tampered: "
                                  f"{first_line(error)}); restore it from the original checkpoint") from None
    return state


def _read_config(directory: Path) -> dict:
    file = directory / "config.json"
    if not file.is_file():
        raise ConversionError(f"no config.json in {directory}; pass a checkpoint directory written by "
                              "save_pretrained")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConversionError(f"{file} is not valid JSON ({getattr(error, 'msg', error)}); restore it from the "
                              "original checkpoint") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{file} is not a JSON object; restore it from the original checkpoint")
    return config


def _check_output(src: str, dst: str, overwrite_output_dir: bool) -> None:
    """Before any work: DST must not be (or hold) SRC, and an existing DST is replaced only when asked."""
    source, target = Path(src).resolve(), Path(dst).resolve()
    if source == target or target in source.parents:
        raise ConversionError(f"output directory {dst} is (or contains) the source {src}; choose another one")
    check_output_dir(dst, "output directory", overwrite_output_dir)
    sweep_temporaries(target.parent, [target.name])  # what a killed conversion into DST left behind


def _check_shapes(converted: dict, expected: dict, source: Path) -> None:
    for key, tensor in converted.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise ConversionError(f"{source}: {key} has shape {tuple(tensor.shape)}, its config.json implies "
                                  f"{tuple(expected[key].shape)}; the weights do not match the config")


def _check_keys(converted: dict, expected: set, source: Path) -> None:
    missing, unexpected = sorted(expected - converted.keys()), sorted(converted.keys() - expected)
    if missing or unexpected:
        raise ConversionError(
            f"{source} does not match a GPT-2 of its config: missing keys {missing or 'none'}, "
            f"unexpected keys {unexpected or 'none'}"
        )


def gpt2_state_to_nanogpt2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GPT-2 state dict (with or without the `transformer.` prefix) -> nanogpt2 names and layout."""
    converted = {}
    for key, tensor in state.items():
        if key.endswith(MASK_BUFFERS) or key == "lm_head.weight":
            continue
        name = key if key.startswith("transformer.") else f"transformer.{key}"
        converted[name] = tensor.t().contiguous() if name.endswith(CONV1D_WEIGHTS) else tensor
    return converted


def nanogpt2_state_to_gpt2(state: dict[str, torch.Tensor], vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """nanogpt2 state dict -> HF GPT-2 names and Conv1D layout (lm_head dropped: it is tied);
    `vocab_size` trims padded embedding rows."""
    converted = {}
    for key, tensor in state.items():
        if key == "lm_head.weight":
            continue
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        elif key == "transformer.wte.weight" and vocab_size is not None:
            tensor = tensor[:vocab_size]
        converted[key] = tensor.contiguous()
    return converted


def gpt2_config_to_nanogpt2(hf: dict, source, pad_vocab_multiple: int = 1, **overrides) -> NanoGPT2Config:
    """The NanoGPT2Config of an HF GPT-2 config.json (a dict); refuses what is not GPT-2's architecture."""
    if hf.get("model_type") != "gpt2":
        raise ConversionError(f"{source}/config.json has model_type {hf.get('model_type')!r}, expected 'gpt2'")
    n_embd = hf.get("n_embd", 768)
    unsupported = {
        "activation_function": (hf.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (hf.get("n_inner"), (None, 4 * n_embd)),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "add_cross_attention": (hf.get("add_cross_attention", False), (False,)),
    }
    for field, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise ConversionError(f"{source}/config.json: {field}={value!r} is not GPT-2's architecture")
    vocab = hf.get("vocab_size", GPT2_VOCAB_SIZE)
    return NanoGPT2Config(**{
        "n_layer": hf.get("n_layer", 12),
        "n_head": hf.get("n_head", 12),
        "n_embd": n_embd,
        "n_positions": hf.get("n_positions", hf.get("n_ctx", 1024)),
        "vocab_size": padded_vocab_size(vocab, pad_vocab_multiple),
        "tokenizer_vocab_size": vocab,
        "layer_norm_epsilon": hf.get("layer_norm_epsilon", 1e-5),
        "initializer_range": hf.get("initializer_range", 0.02),
        "bos_token_id": hf.get("bos_token_id", EOT_TOKEN_ID),
        "eos_token_id": hf.get("eos_token_id", EOT_TOKEN_ID),
        **overrides,
    })


def gpt2_to_nanogpt2(source: Path, pad_vocab_multiple: int = 1, **overrides) -> NanoGPT2ForCausalLM:
    """The nanogpt2 model (in memory) holding the weights of the HF GPT-2 checkpoint directory `source`."""
    config = gpt2_config_to_nanogpt2(_read_config(source), source, pad_vocab_multiple, **overrides)
    vocab, padded = config.tokenizer_vocab_size, config.vocab_size
    state = load_safetensors_state(source)
    if "lm_head.weight" in state:
        wte = state.get("transformer.wte.weight", state.get("wte.weight"))
        if wte is not None and not torch.equal(state["lm_head.weight"], wte):
            raise ConversionError(f"{source}: lm_head.weight differs from wte.weight; nanogpt2 ties them")
    converted = gpt2_state_to_nanogpt2(state)
    if padded != vocab and "transformer.wte.weight" in converted:
        wte = converted["transformer.wte.weight"]
        converted["transformer.wte.weight"] = torch.cat([wte, wte.new_zeros(padded - vocab, wte.shape[1])])

    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        model = NanoGPT2ForCausalLM(config)
    expected = {k for k in model.state_dict() if k != "lm_head.weight"}
    _check_keys(converted, expected, source)
    _check_shapes(converted, model.state_dict(), source)
    model.load_state_dict(converted, strict=False, assign=True)
    model.tie_weights()
    return model


def convert_from_gpt2(src: str, dst: str, pad_vocab_multiple: int = 1,
                      overwrite_output_dir: bool = False) -> NanoGPT2ForCausalLM:
    """Write a nanogpt2 checkpoint at `dst` from the HF GPT-2 checkpoint `src` (directory or Hub id).

    `pad_vocab_multiple=64` pads the embedding (zero rows, never predicted) for faster further training.
    An existing non-empty `dst` is refused unless `overwrite_output_dir` (then it is replaced as a whole)."""
    if pad_vocab_multiple < 1:
        raise ConversionError(f"--pad_vocab_multiple {pad_vocab_multiple} must be at least 1 (64 gives 50304)")
    _check_output(src, dst, overwrite_output_dir)
    source = resolve_checkpoint_dir(src)
    model = gpt2_to_nanogpt2(source, pad_vocab_multiple)
    with atomic_directory(dst) as tmp:
        write_model_files(model, tmp)
        if model.config.tokenizer_vocab_size != GPT2_VOCAB_SIZE:  # not GPT-2's: keep the source's tokenizer files
            for name in TOKENIZER_FILES:
                if (source / name).is_file():
                    shutil.copy2(source / name, tmp / name)
    return model


def pretrained_config(name_or_path: str, flag: str = "checkpoint", **overrides) -> NanoGPT2Config:
    """The NanoGPT2Config of a nanogpt2 or HF GPT-2 checkpoint or config (a directory, a config.json or a
    Hub id); GPT-2's vocabulary padded to a multiple of 64."""
    path = Path(name_or_path)
    source = path.parent if path.is_file() else resolve_checkpoint_dir(name_or_path, flag)
    values = json.loads(path.read_text()) if path.is_file() else _read_config(source)
    if values.get("model_type") == "nanogpt2":
        return NanoGPT2Config.from_dict({**values, **overrides})
    return gpt2_config_to_nanogpt2(values, source, 64, **overrides)


def load_pretrained(name_or_path: str, flag: str = "checkpoint", **overrides) -> NanoGPT2ForCausalLM:
    """A nanogpt2 model holding the weights of a nanogpt2 checkpoint, or of an HF GPT-2 one (converted,
    vocabulary padded to a multiple of 64); a local directory or a Hub id; fp32. `overrides` (e.g.
    dropout) change the config, never the shape."""
    source = resolve_checkpoint_dir(name_or_path, flag)
    config = _read_config(source)
    if config.get("model_type") != "nanogpt2":
        return gpt2_to_nanogpt2(source, 64, **overrides).float()  # fp32 master weights, whatever was stored
    require_safetensors(source, f"{flag} {name_or_path}")
    return NanoGPT2ForCausalLM.from_pretrained(source, dtype=torch.float32, **overrides)


def convert_to_gpt2(src: str, dst: str, overwrite_output_dir: bool = False):
    """Write a native `model_type: gpt2` checkpoint (GPT2LMHeadModel, no remote code) from a nanogpt2 one.
    Returns the output directory. An existing non-empty `dst` is refused unless `overwrite_output_dir`.

    Padded vocabulary rows are trimmed; a model without biases gets zero biases (the same function)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    source = Path(src)
    if not source.is_dir():
        raise ConversionError(f"{src} is not a checkpoint directory")
    _check_output(src, dst, overwrite_output_dir)
    ours = _read_config(source)
    if ours.get("model_type") != "nanogpt2":
        raise ConversionError(f"{source}/config.json has model_type {ours.get('model_type')!r}, expected 'nanogpt2'")
    try:
        config = NanoGPT2Config.from_pretrained(source)
    except (TypeError, ValueError) as error:
        raise ConversionError(f"{source}/config.json is not a valid nanogpt2 config ({error}); restore it from "
                              "the original checkpoint") from None
    differences = config.gpt2_differences()
    if differences:
        raise ConversionError(f"{source} sets {', '.join(differences)}, which GPT-2's architecture cannot express; "
                              "only a model with GPT-2's options converts to GPT-2")
    with torch.device("meta"):
        model = NanoGPT2ForCausalLM(config)
    state = load_safetensors_state(source)
    expected = {k for k in model.state_dict() if k != "lm_head.weight"}
    _check_keys({k: v for k, v in state.items() if k != "lm_head.weight"}, expected, source)

    vocab = config.tokenizer_vocab_size
    dropout = config.dropout
    gpt2_config = GPT2Config(
        vocab_size=vocab, n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, activation_function="gelu_new", layer_norm_epsilon=config.layer_norm_epsilon,
        initializer_range=config.initializer_range, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, tie_word_embeddings=True,
    )
    with torch.device("meta"):
        gpt2 = GPT2LMHeadModel(gpt2_config)
    converted = nanogpt2_state_to_gpt2(state, vocab_size=vocab)
    exported = {}
    for key, tensor in gpt2.state_dict().items():
        if key == "lm_head.weight":
            continue
        if key in converted:
            value = converted[key]
        elif key.endswith(".bias"):  # bias=False in nanogpt2: a zero bias computes the same function
            value = torch.zeros(tensor.shape, dtype=converted["transformer.wte.weight"].dtype)
        else:
            raise ConversionError(f"{source}: no tensor for GPT-2 parameter {key}")
        if value.shape != tensor.shape:
            raise ConversionError(f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(tensor.shape)}")
        exported[key] = value
    with atomic_directory(dst) as tmp:
        gpt2_config.architectures = ["GPT2LMHeadModel"]
        gpt2_config.save_pretrained(tmp)
        save_file(exported, tmp / "model.safetensors", metadata={"format": "pt"})
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
    return Path(dst)


@cli
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt2.convert",
        description="Convert between nanogpt2 and Hugging Face GPT-2 (model_type gpt2) checkpoints. "
        "Logits are preserved (fp32 max abs difference < 1e-4).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    from_gpt2 = commands.add_parser("from-gpt2", help="HF GPT-2 checkpoint (directory or Hub id) -> nanogpt2")
    from_gpt2.add_argument("src", help="a GPT-2 checkpoint directory, or a Hub id such as openai-community/gpt2")
    from_gpt2.add_argument("dst", help="output directory for the nanogpt2 checkpoint")
    from_gpt2.add_argument("--pad_vocab_multiple", type=int, default=1,
                           help="pad the vocabulary to a multiple of this (64 gives 50304, faster training)")
    to_gpt2 = commands.add_parser("to-gpt2", help="nanogpt2 checkpoint -> native GPT2LMHeadModel (no remote code)")
    to_gpt2.add_argument("src", help="a nanogpt2 checkpoint directory")
    to_gpt2.add_argument("dst", help="output directory for the GPT-2 checkpoint")
    for command in (from_gpt2, to_gpt2):
        command.add_argument("--overwrite_output_dir", action="store_true",
                             help="replace an existing non-empty DST and everything in it (default: refuse)")
    args = parser.parse_args(argv)
    try:
        if args.command == "from-gpt2":
            convert_from_gpt2(args.src, args.dst, pad_vocab_multiple=args.pad_vocab_multiple,
                              overwrite_output_dir=args.overwrite_output_dir)
        else:
            convert_to_gpt2(args.src, args.dst, overwrite_output_dir=args.overwrite_output_dir)
    except OSError as error:
        error.filename = error.filename or args.dst  # a full disk names no file: the output is DST
        raise
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
