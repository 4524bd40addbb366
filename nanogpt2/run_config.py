"""run_pretrain.py's settings: flags, an optional YAML/JSON config file with the same keys, and the
per-preset defaults, resolved into one `RunConfig` that is written to the run directory."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .configuration_nanogpt2 import PRESETS


@dataclasses.dataclass
class RunConfig:
    # model
    preset: str = "gpt2-124m"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    dropout: float = 0.0
    tokenizer: str | None = None
    # data
    data_dir: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    streaming: bool = False
    text_column: str = "text"
    validation_split_percentage: float = 10.0
    # batch (build-nanogpt: 2**19 = 524,288 tokens per optimizer step, micro-batch 64 x 1024)
    total_batch_size: int = 524288
    micro_batch_size: int = 64
    sequence_length: int = 1024
    # optimizer and schedule (GPT-3 paper, table 2.1 and appendix B, as build-nanogpt)
    learning_rate: float = 6e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 715
    max_steps: int = 19073  # 10B tokens / 524,288 tokens per step: one epoch of FineWeb-Edu sample-10BT
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 1337
    mixed_precision: str = "auto"  # bf16 on CUDA, no on CPU
    tf32: bool = True
    compile: str = "auto"  # auto: on for CUDA, off for CPU
    gradient_checkpointing: bool = False
    # evaluation, logging, checkpoints
    output_dir: str = "runs/nanogpt2"
    eval_steps: int = 250
    eval_tokens: int = 10_485_760  # build-nanogpt's 20 x 64 x 1024 x 8 GPUs, whatever the process count
    hellaswag_file: str | None = None
    hellaswag_limit: int | None = None
    hellaswag_style: str = "completion"
    skip_hellaswag: bool = False
    sample_prompt: str = "Hello, I'm a language model,"
    num_samples: int = 4
    sample_max_new_tokens: int = 32
    logging_steps: int = 1
    save_steps: int = 5000
    save_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    overwrite_output_dir: bool = False
    report_to: str = "tensorboard"
    # publishing
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False
    hub_strategy: str = "end"


# Training defaults of the tiny preset: a 2-core CPU trains it on Tiny Shakespeare in a few minutes.
PRESET_TRAINING_DEFAULTS = {
    "tiny": dict(total_batch_size=2048, micro_batch_size=16, sequence_length=128, learning_rate=2e-3,
                 warmup_steps=20, max_steps=200, eval_steps=100, eval_tokens=32768, save_steps=100,
                 hellaswag_limit=200, num_samples=2, output_dir="runs/tiny"),
}

HELP = {
    "preset": "model size: " + ", ".join(PRESETS) + " (tiny also brings CPU-sized training defaults)",
    "n_layer": "override the preset's number of layers", "n_head": "override the preset's number of heads",
    "n_embd": "override the preset's width", "dropout": "dropout probability (0 for pretraining)",
    "tokenizer": "a Hugging Face tokenizer.json directory (e.g. from train_tokenizer.py); default GPT-2's",
    "data_dir": "pre-tokenized shards written by prepare_fineweb.py",
    "train_file": ".txt/.jsonl/.json/.parquet training text (tiny preset: Tiny Shakespeare is downloaded "
                  "once when omitted)",
    "validation_file": "validation text; default: the last --validation_split_percentage of --train_file",
    "dataset_name": "stream a Hub dataset, e.g. HuggingFaceFW/fineweb-edu (online only)",
    "dataset_config_name": "the Hub dataset's config, e.g. sample-10BT",
    "streaming": "read --train_file as a stream tokenized on the fly (as --dataset_name always is) instead of "
                 "tokenizing it all up front",
    "text_column": "column holding the documents' text",
    "validation_split_percentage": "percent of --train_file's tokens held out for validation",
    "total_batch_size": "tokens per optimizer step (reached by gradient accumulation)",
    "micro_batch_size": "sequences per forward pass per process",
    "sequence_length": "tokens per sequence (at most the model's n_positions)",
    "learning_rate": "peak learning rate", "min_lr_ratio": "final learning rate as a fraction of the peak",
    "warmup_steps": "linear warmup steps", "max_steps": "optimizer steps (the cosine ends here)",
    "weight_decay": "AdamW weight decay of matrices and embeddings", "adam_beta1": "AdamW beta1",
    "adam_beta2": "AdamW beta2", "adam_epsilon": "AdamW epsilon", "max_grad_norm": "gradient-norm clip",
    "seed": "random seed (model init, data order, dropout)",
    "mixed_precision": "auto (bf16 on CUDA, none on CPU), bf16, fp16 or no",
    "tf32": "allow TF32 matmuls on Ampere+ GPUs",
    "compile": "torch.compile the training step's model: auto (on for CUDA, off for CPU), true or false; "
               "--compile alone means true",
    "gradient_checkpointing": "recompute activations in backward to save memory",
    "output_dir": "run directory: metrics, config, checkpoints", "eval_steps": "evaluate every N steps (and at the end)",
    "eval_tokens": "validation tokens per evaluation (the same set whatever the number of processes)",
    "hellaswag_file": "local hellaswag_val.jsonl (otherwise downloaded once)",
    "hellaswag_limit": "evaluate HellaSwag on the first N examples only",
    "hellaswag_style": "completion (build-nanogpt) or harness (lm-evaluation-harness)",
    "skip_hellaswag": "no HellaSwag during training", "sample_prompt": "prompt of the samples printed at evaluation",
    "num_samples": "samples per evaluation (0: none)", "sample_max_new_tokens": "tokens per sample",
    "logging_steps": "log train metrics every N steps", "save_steps": "checkpoint every N steps (and at the end)",
    "save_total_limit": "keep only the newest K checkpoints",
    "resume_from_checkpoint": "'latest' or a checkpoint directory to continue from, exactly",
    "overwrite_output_dir": "start a fresh run in an --output_dir that holds another run's checkpoints and "
                            "metrics, deleting them (as in transformers); without it such a run is refused",
    "report_to": "tracker: tensorboard, wandb, all or none",
    "push_to_hub": "push the final checkpoint to the Hugging Face Hub (access is checked before training)",
    "hub_model_id": "USER/NAME on the Hub",
    "hub_private": "create the Hub repository private",
    "hub_strategy": "as in transformers: end: push the final model; every_save: push the model at every save; "
                    "checkpoint: every_save, plus the whole latest checkpoint in last-checkpoint/ (for resuming)",
}
COMPILE_CHOICES = ["auto", "true", "false"]
CHOICES = {"mixed_precision": ["auto", "bf16", "fp16", "no"], "hellaswag_style": ["completion", "harness"],
           "report_to": ["tensorboard", "wandb", "all", "none"],
           "hub_strategy": ["end", "every_save", "checkpoint", "all_checkpoints"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_pretrain.py",
        description="Pretrain GPT-2 from scratch with build-nanogpt's recipe, on one process or under "
        "`accelerate launch` (DDP, FSDP, several nodes). Every setting below can also come from "
        "--config_file (YAML or JSON with the same keys); flags win over the file, the file over the preset.",
        epilog="--preset tiny changes these defaults: " + ", ".join(
            f"{key}={value}" for key, value in PRESET_TRAINING_DEFAULTS["tiny"].items()),
    )
    parser.add_argument("--config_file", help="YAML/JSON file with any of the settings below")
    for field in dataclasses.fields(RunConfig):
        name = f"--{field.name}"
        default = field.default
        if field.name == "compile":
            parser.add_argument(name, nargs="?", const="true", type=str.lower, choices=COMPILE_CHOICES,
                                default=None, help=f"{HELP[field.name]} (default: {default})")
            parser.add_argument("--no-compile", dest="compile", action="store_const", const="false",
                                help="same as --compile false")
            continue
        if field.type == "bool":
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{HELP[field.name]} (default: {default})")
            continue
        kind = {"int": int, "float": float}.get(field.type.split(" ")[0], str)
        parser.add_argument(name, type=kind, default=None, choices=CHOICES.get(field.name),
                            help=f"{HELP[field.name]} (default: {default})")
    return parser


def compile_enabled(config: RunConfig, device_type: str) -> bool:
    """--compile auto compiles on CUDA only: on CPU compilation costs more time than a short run saves."""
    value = str(config.compile).lower()  # RunConfig(compile=True) made in code counts too
    return value == "true" or (value == "auto" and device_type == "cuda")


def load_config_file(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config_file {path} does not exist")
    text = file.read_text()
    if file.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; see run_pretrain.py --help")
    return values


def resolve_config(argv=None) -> RunConfig:
    """Flags over --config_file over the preset's training defaults over the recipe's defaults."""
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config_file")
    from_file = load_config_file(config_file) if config_file else {}
    chosen = {**from_file, **{k: v for k, v in args.items() if v is not None}}
    preset = chosen.get("preset", RunConfig.preset)
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is unknown; choose one of: {', '.join(PRESETS)}")
    config = RunConfig(**{**PRESET_TRAINING_DEFAULTS.get(preset, {}), **chosen})
    if isinstance(config.compile, bool):  # `compile: true` in a YAML/JSON config file
        config.compile = str(config.compile).lower()
    if config.compile not in COMPILE_CHOICES:
        raise ValueError(f"--compile {config.compile!r}: choose auto, true or false")
    for name in ("max_steps", "eval_steps", "save_steps", "logging_steps", "micro_batch_size", "sequence_length",
                 "total_batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name} must be at least 1 (got {getattr(config, name)})")
    sources = [f"--{name}" for name in ("data_dir", "train_file", "dataset_name") if getattr(config, name)]
    if len(sources) > 1:
        raise ValueError(f"{' and '.join(sources)} each name training data; pass only one")
    if config.hub_strategy == "all_checkpoints":
        raise ValueError("--hub_strategy all_checkpoints is not supported by run_pretrain.py; use end, every_save "
                         "or checkpoint")
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id USER/NAME (the Hub repository to create or update)")
    return config
