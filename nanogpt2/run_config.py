"""run_pretrain.py's settings: one dataclass parsed by transformers' `HfArgumentParser`, with help,
choices, bounds and aliases in each field's metadata. Values are layered
flags > `--config_file` (YAML/JSON, same keys) > the preset's training defaults > the recipe's defaults,
and every value, wherever it came from, passes the same type, choice and bound checks.

Names follow transformers' `run_clm.py`/`TrainingArguments` where the meaning is the same
(`--per_device_train_batch_size`, `--block_size`, `--torch_compile`, ...); the names this project used
before (`--micro_batch_size`, `--sequence_length`, `--compile`, `--tokenizer`) are aliases.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser

from .configuration_nanogpt2 import PRESETS
from .errors import SettingsError

# metadata keys of `setting` that are checks, not argparse arguments
CHECKS = ("at_least", "at_most", "above", "below")


def setting(default, help: str, *, aliases=(), at_least=None, at_most=None, above=None, below=None, **argparse_kwargs):
    """A dataclass field with its --help text, aliases (other flag names) and bounds (checked for
    flags and config-file values alike)."""
    metadata = {"help": help, "aliases": list(aliases), **argparse_kwargs}
    metadata.update({k: v for k, v in dict(at_least=at_least, at_most=at_most, above=above, below=below).items()
                     if v is not None})
    return dataclasses.field(default=default, metadata=metadata)


def _alias(field_name: str) -> property:
    return property(lambda self: getattr(self, field_name), lambda self, value: setattr(self, field_name, value))


PRESET_NAMES = list(PRESETS)
GPT2_124M_TOKENS_PER_STEP = 2**19  # build-nanogpt: 524,288 tokens per optimizer step


@dataclasses.dataclass
class RunConfig:
    # -- model
    preset: str = setting("gpt2-124m", "model size when training from scratch (tiny also brings CPU-sized "
                          "training defaults, listed below)", choices=PRESET_NAMES)
    model_name_or_path: str | None = setting(
        None, "start from these weights instead of a random init: a nanogpt2 checkpoint directory, a Hugging Face "
        "GPT-2 checkpoint (model_type gpt2, converted on the fly, vocabulary padded to 50304) or a Hub id (online). "
        "The optimizer starts fresh; to continue a run exactly use --resume_from_checkpoint")
    config_name: str | None = setting(
        None, "model architecture from a config.json (directory, file or Hub id; nanogpt2 or gpt2) instead of "
        "--preset; weights are initialized randomly")
    n_layer: int | None = setting(None, "override the number of layers", at_least=1)
    n_head: int | None = setting(None, "override the number of attention heads", at_least=1)
    n_embd: int | None = setting(None, "override the width", at_least=1)
    n_positions: int | None = setting(None, "override the context length of the model (its position embeddings)",
                                      at_least=1)
    dropout: float = setting(0.0, "dropout probability (0 for pretraining)", at_least=0.0, below=1.0)
    tokenizer_name: str | None = setting(
        None, "a directory with a tokenizer.json (e.g. from train_tokenizer.py) or a Hub id (online); default "
        "GPT-2's", aliases=["--tokenizer"])
    # -- data
    data_dir: str | None = setting(None, "pre-tokenized shards written by prepare_fineweb.py")
    train_file: str | None = setting(None, ".txt/.jsonl/.json/.parquet training text (tiny preset: Tiny "
                                     "Shakespeare is downloaded once when omitted)")
    validation_file: str | None = setting(None, "validation text; default: the last --validation_split_percentage "
                                          "of --train_file")
    dataset_name: str | None = setting(None, "stream a Hub dataset, e.g. HuggingFaceFW/fineweb-edu (online only)")
    dataset_config_name: str | None = setting(None, "the Hub dataset's config, e.g. sample-10BT")
    streaming: bool = setting(False, "read --train_file as a stream tokenized on the fly (as --dataset_name always "
                              "is) instead of tokenizing it all up front")
    text_column: str = setting("text", "column holding the documents' text")
    validation_split_percentage: float = setting(10.0, "percent of --train_file's tokens held out for validation",
                                                 above=0.0, below=100.0)
    # -- batch (build-nanogpt: 2**19 = 524,288 tokens per optimizer step, micro-batch 64 x 1024)
    per_device_train_batch_size: int = setting(64, "sequences per forward pass per process (the micro-batch)",
                                               aliases=["--micro_batch_size"], at_least=1)
    block_size: int = setting(1024, "tokens per training sequence (at most n_positions; with --n_positions "
                              "and no --block_size: n_positions)", aliases=["--sequence_length"], at_least=1)
    gradient_accumulation_steps: int | None = setting(
        None, "micro-batches per optimizer step and process; default: derived from --total_batch_size", at_least=1)
    total_batch_size: int | None = setting(
        GPT2_124M_TOKENS_PER_STEP, "tokens per optimizer step, over all processes (with --gradient_accumulation_steps "
        "and without this flag: derived from it; with both: checked)", at_least=1)
    # -- optimizer and schedule (GPT-3 paper, table 2.1 and appendix B, as build-nanogpt)
    learning_rate: float = setting(6e-4, "peak learning rate", above=0.0)
    lr_scheduler_type: Literal["cosine", "linear", "constant", "warmup_stable_decay"] = setting(
        "cosine", "after the linear warmup: cosine (build-nanogpt) or linear decay to --min_lr_ratio, constant, or "
        "warmup_stable_decay (constant, then a cosine decay over the last --lr_decay_ratio of the steps)")
    min_lr_ratio: float = setting(0.1, "final learning rate as a fraction of the peak", at_least=0.0, at_most=1.0)
    lr_decay_ratio: float = setting(0.2, "warmup_stable_decay: fraction of the steps spent decaying", above=0.0,
                                    at_most=1.0)
    warmup_steps: int = setting(715, "linear warmup steps", at_least=0)
    max_steps: int | None = setting(19073, "optimizer steps (10B tokens / 524,288 per step: one epoch of "
                                    "FineWeb-Edu sample-10BT)", at_least=1)
    num_train_epochs: float | None = setting(None, "instead of --max_steps: passes over the training tokens "
                                             "(not with --streaming or --dataset_name)", above=0.0)
    weight_decay: float = setting(0.1, "AdamW weight decay of matrices and embeddings", at_least=0.0)
    adam_beta1: float = setting(0.9, "AdamW beta1", at_least=0.0, below=1.0)
    adam_beta2: float = setting(0.95, "AdamW beta2", at_least=0.0, below=1.0)
    adam_epsilon: float = setting(1e-8, "AdamW epsilon", above=0.0)
    max_grad_norm: float = setting(1.0, "gradient-norm clip", above=0.0)
    on_nonfinite_loss: Literal["stop", "skip"] = setting(
        "stop", "on a NaN/inf loss or gradient: stop (saving the last finite state), or skip that step's update")
    seed: int = setting(1337, "random seed (model init, data order, dropout)", at_least=0, at_most=2**32 - 1)
    # -- precision and speed
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = setting(
        "auto", "auto: what `accelerate launch` was given (--mixed_precision or its config file), else bf16 on "
        "CUDA and no on CPU")
    bf16: bool = setting(False, "same as --mixed_precision bf16")
    fp16: bool = setting(False, "same as --mixed_precision fp16")
    use_cpu: bool = setting(False, "train on the CPU even if a GPU is present (as `accelerate launch --cpu`)")
    tf32: bool = setting(True, "allow TF32 matmuls on Ampere+ GPUs")
    torch_compile: Literal["auto", "true", "false"] = setting(
        "auto", "torch.compile the training step's model: auto (on for CUDA, off for CPU), true or false; "
        "alone it means true", aliases=["--compile"], nargs="?", const="true")
    gradient_checkpointing: bool = setting(False, "recompute activations in backward to save memory")
    # -- evaluation, logging, checkpoints
    output_dir: str = setting("runs/nanogpt2", "run directory: metrics, config, checkpoints")
    eval_steps: int = setting(250, "evaluate every N steps (and at the end)", at_least=1)
    eval_tokens: int = setting(10_485_760, "validation tokens per evaluation (the same set whatever the number "
                               "of processes; build-nanogpt's 20 x 64 x 1024 x 8)", at_least=1)
    hellaswag_file: str | None = setting(None, "local hellaswag_val.jsonl (otherwise downloaded once)")
    hellaswag_limit: int | None = setting(None, "evaluate HellaSwag on the first N examples only", at_least=1)
    hellaswag_style: Literal["completion", "harness"] = setting(
        "completion", "completion (build-nanogpt) or harness (lm-evaluation-harness)")
    hellaswag_final_full: bool = setting(False, "at the final step, score all HellaSwag examples whatever "
                                         "--hellaswag_limit (the model card reports a validation-split result only "
                                         "then)")
    skip_hellaswag: bool = setting(False, "no HellaSwag during training")
    sample_prompt: str = setting("Hello, I'm a language model,", "prompt of the samples printed at evaluation")
    num_samples: int = setting(4, "samples per evaluation (0: none)", at_least=0)
    sample_max_new_tokens: int = setting(32, "tokens per sample", at_least=1)
    logging_steps: int = setting(1, "log train metrics every N steps", at_least=1)
    save_steps: int = setting(5000, "checkpoint every N steps (and at the end)", at_least=1)
    save_total_limit: int | None = setting(None, "keep only the newest K checkpoints", at_least=1)
    resume_from_checkpoint: str | None = setting(None, "'latest' or a checkpoint directory to continue from, "
                                                 "exactly (model, optimizer, data position, RNG)")
    overwrite_output_dir: bool = setting(False, "start a fresh run in an --output_dir that holds another run's "
                                         "checkpoints and metrics, deleting them (as in transformers); without it "
                                         "such a run is refused")
    report_to: Literal["tensorboard", "wandb", "all", "none"] = setting("tensorboard", "tracker")
    # -- publishing
    push_to_hub: bool = setting(False, "push the final checkpoint to the Hugging Face Hub (access is checked "
                                "before training)")
    hub_model_id: str | None = setting(None, "USER/NAME on the Hub")
    hub_private_repo: bool = setting(False, "create the Hub repository private", aliases=["--hub_private"])
    hub_strategy: Literal["end", "every_save", "checkpoint"] = setting(
        "end", "as in transformers: end: push the final model; every_save: push the model at every save; "
        "checkpoint: every_save, plus the whole latest checkpoint in last-checkpoint/ (for resuming)")

    # The names this project used before, read and written through; code written against them keeps working.
    micro_batch_size = _alias("per_device_train_batch_size")
    sequence_length = _alias("block_size")
    compile = _alias("torch_compile")
    tokenizer = _alias("tokenizer_name")
    hub_private = _alias("hub_private_repo")


# Training defaults of the tiny preset: a 2-core CPU trains it on Tiny Shakespeare in a few minutes. 2048 tokens
# per step = 16 x 128 on one process; on two, the micro-batch becomes 8 (see `settle_batch`).
PRESET_TRAINING_DEFAULTS = {
    "tiny": dict(total_batch_size=2048, per_device_train_batch_size=16, block_size=128, learning_rate=2e-3,
                 warmup_steps=20, max_steps=200, eval_steps=100, eval_tokens=32768, save_steps=100,
                 hellaswag_limit=200, num_samples=2, output_dir="runs/tiny"),
}

FIELDS = {field.name: field for field in dataclasses.fields(RunConfig)}
TYPES = typing.get_type_hints(RunConfig)
# every accepted config-file key (field names and their aliases) -> field name
KEYS = {**{alias.lstrip("-"): name for name, field in FIELDS.items() for alias in field.metadata["aliases"]},
        **{name: name for name in FIELDS}}


class SettingsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each setting once: its name, then its aliases, one metavar; the hyphenated spellings HfArgumentParser
    adds (--max-steps) are accepted but not listed; no "(default: None)"."""

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        spelled = {name[2:] for name in action.option_strings}
        names = [name for name in action.option_strings
                 if "-" not in name[2:] or name[2:].replace("-", "_") not in spelled]
        if action.nargs == 0:
            return ", ".join(names)
        return f"{', '.join(names)} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action):
        if action.option_strings[0].startswith("--no_"):
            return f"same as --{action.dest} false"
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


# --help lists the settings in these groups, each starting at the named field
SECTIONS = {"preset": "model", "data_dir": "data", "per_device_train_batch_size": "batch",
            "learning_rate": "optimizer and learning-rate schedule", "mixed_precision": "precision and speed",
            "output_dir": "evaluation, logging and checkpoints", "push_to_hub": "publishing to the Hub"}


class SettingsParser(HfArgumentParser):
    """HfArgumentParser whose errors raise SettingsError (run_pretrain.py prints them as one line), whose
    fields may carry bound checks in their metadata, and whose --help groups the settings."""

    def __init__(self):
        self.sections = {}
        super().__init__(RunConfig, prog="run_pretrain.py", description=(
            "Pretrain GPT-2 from scratch (or from --model_name_or_path) with build-nanogpt's recipe, on one process "
            "or under `accelerate launch` (DDP, FSDP, several nodes). Settings: flags > --config_file > preset "
            "defaults > the 124M recipe; names follow transformers' run_clm.py / TrainingArguments."),
            epilog="--preset tiny changes these defaults: " + ", ".join(
                f"{key}={value}" for key, value in PRESET_TRAINING_DEFAULTS["tiny"].items()),
            formatter_class=SettingsHelpFormatter)
        self.add_argument("--config_file", help="YAML/JSON file with any of these settings (same names)")
        self.sections["precision and speed"].add_argument(
            "--no_torch_compile", "--no-compile", dest="torch_compile", action="store_const", const="false",
            help="same as --torch_compile false")

    def _parse_dataclass_field(self, parser, field):
        if field.name in SECTIONS:
            self.sections[SECTIONS[field.name]] = self.add_argument_group(SECTIONS[field.name])
        field = copy.copy(field)
        field.metadata = types.MappingProxyType({k: v for k, v in field.metadata.items() if k not in CHECKS})
        HfArgumentParser._parse_dataclass_field(list(self.sections.values())[-1], field)
        if typing.get_origin(TYPES[field.name]) is Literal:  # --mixed_precision BF16, --compile False
            self._option_string_actions[f"--{field.name}"].type = str.lower

    def error(self, message):
        raise SettingsError(message)


def build_parser() -> SettingsParser:
    return SettingsParser()


def _check_type(name: str, value, where: str):
    """A config-file value as its field's type would parse it from a flag; no silent coercion."""
    kind = TYPES[name]
    optional = type(None) in typing.get_args(kind)
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind) if optional else kind
    if value is None and optional and FIELDS[name].default is None:  # null means "not set", as omitting it
        return None
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if set(choices) == {"auto", "true", "false"} and isinstance(value, bool):
            return str(value).lower()
        if value in choices:
            return value
        raise SettingsError(f"{where} {value!r} is not a choice: {', '.join(choices)}")
    if base is bool and isinstance(value, bool) or base is str and isinstance(value, str):
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    expected = {bool: "true or false (unquoted)", int: "an integer", float: "a number", str: "a string"}[base]
    raise SettingsError(f"{where} must be {expected}, got {value!r} ({type(value).__name__})")


def _check_choice_and_bounds(name: str, value, where: str) -> None:
    meta = FIELDS[name].metadata
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise SettingsError(f"{where} {value!r} is not a choice: {', '.join(meta['choices'])}")
    for key, fails, words in (("at_least", lambda v, b: v < b, "at least"), ("at_most", lambda v, b: v > b, "at most"),
                              ("above", lambda v, b: v <= b, "above"), ("below", lambda v, b: v >= b, "below")):
        if key in meta and fails(value, meta[key]):
            raise SettingsError(f"{where} must be {words} {meta[key]} (got {value})")


def load_config_file(path: str) -> dict:
    """{field name: (value, where)} of a YAML/JSON file, each value checked as its flag's would be."""
    file = Path(path)
    if not file.is_file():
        raise SettingsError(f"--config_file {path} does not exist")
    text = file.read_text()
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as error:  # yaml.YAMLError, json.JSONDecodeError
        detail = " ".join(str(error).split())
        raise SettingsError(f"--config_file {path} is not valid {'YAML' if file.suffix != '.json' else 'JSON'}: "
                         f"{detail}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise SettingsError(f"--config_file {path} must hold a mapping of setting: value, got {type(values).__name__}")
    unknown = sorted(str(key) for key in values if key not in KEYS)
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}; see run_pretrain.py --help")
    checked = {}
    for key, value in values.items():
        name, where = KEYS[key], f"{path}: {key}"
        if name in checked:
            raise SettingsError(f"{path}: {key} and {checked[name][1].split(': ')[-1]} are the same setting; keep one")
        checked[name] = (_check_type(name, value, where), where)
    return checked


def resolve_config(argv=None) -> RunConfig:
    """Flags over --config_file over the preset's training defaults over the recipe's defaults."""
    parser = build_parser()
    parser.parse_args(argv)  # --help, and type/choice errors of flags, with the recipe's defaults shown
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    flags = vars(parser.parse_args(argv))  # only the flags given
    config_file = flags.pop("config_file", None)
    chosen = load_config_file(config_file) if config_file else {}
    chosen.update({name: (value, f"--{name}") for name, value in flags.items()})
    for name, (value, where) in chosen.items():
        _check_choice_and_bounds(name, value, where)

    values = {name: value for name, (value, _) in chosen.items()}
    preset = values.get("preset", RunConfig.preset)
    defaults = dict(PRESET_TRAINING_DEFAULTS.get(preset, {}))
    if values.get("gradient_accumulation_steps") is not None and "total_batch_size" not in values:
        defaults["total_batch_size"] = None  # derived from the accumulation once the process count is known
    if values.get("num_train_epochs") is not None:
        if "max_steps" in values:
            raise SettingsError(f"{chosen['max_steps'][1]} and {chosen['num_train_epochs'][1]} both set the length of "
                             "training; pass one")
        streamed = [chosen[name][1] for name in ("streaming", "dataset_name") if values.get(name)]
        if streamed:
            raise SettingsError(f"{chosen['num_train_epochs'][1]} needs data of known size, not {' / '.join(streamed)}; "
                             "pass --max_steps")
        defaults["max_steps"] = None  # derived from the training tokens
    if values.get("n_positions") is not None and "block_size" not in values:
        defaults["block_size"] = values["n_positions"]
    config = RunConfig(**{**defaults, **values})
    where = {name: w for name, (_, w) in chosen.items()}

    def named(name):
        return where.get(name, f"--{name}")

    sources = [named(name) for name in ("data_dir", "train_file", "dataset_name") if getattr(config, name)]
    if len(sources) > 1:
        raise SettingsError(f"{' and '.join(sources)} each name training data; pass only one")
    if config.bf16 and config.fp16:
        raise SettingsError(f"{named('bf16')} and {named('fp16')} contradict each other; pass one")
    for flag in ("bf16", "fp16"):
        if getattr(config, flag):
            if config.mixed_precision not in ("auto", flag):
                raise SettingsError(f"{named(flag)} contradicts {named('mixed_precision')} {config.mixed_precision}")
            config.mixed_precision = flag
    if config.model_name_or_path:
        shaped = [named(name) for name in ("config_name", "n_layer", "n_head", "n_embd", "n_positions")
                  if getattr(config, name) is not None]
        if shaped:
            raise SettingsError(f"{', '.join(shaped)}: the model's shape comes from --model_name_or_path "
                             f"{config.model_name_or_path}; drop {'it' if len(shaped) == 1 else 'them'}")
    settle_batch(config, set(values), int(os.environ.get("WORLD_SIZE", "1")))
    if config.push_to_hub and not config.hub_model_id:
        raise SettingsError("--push_to_hub needs --hub_model_id USER/NAME (the Hub repository to create or update)")
    return config


def compile_enabled(config: RunConfig, device_type: str) -> bool:
    """--torch_compile auto compiles on CUDA only: on CPU compilation costs more time than a short run saves."""
    value = str(config.torch_compile).lower()  # RunConfig(torch_compile=True) made in code counts too
    return value == "true" or (value == "auto" and device_type == "cuda")


def settle_batch(config: RunConfig, explicit: set, world_size: int) -> None:
    """total_batch_size = per_device_train_batch_size x block_size x world_size x gradient_accumulation_steps.

    With --gradient_accumulation_steps and no --total_batch_size the total is derived; with both they are
    checked. When a default micro-batch does not divide the total on this many processes (tiny on 2), the
    largest smaller one that does is used, so a preset runs on any process count it can."""
    tokens_per_sequence = config.block_size * world_size
    if config.total_batch_size is None:
        config.total_batch_size = (config.per_device_train_batch_size * tokens_per_sequence
                                   * config.gradient_accumulation_steps)
    total, micro = config.total_batch_size, config.per_device_train_batch_size
    if (total % (micro * tokens_per_sequence) and total % tokens_per_sequence == 0
            and not explicit & {"per_device_train_batch_size", "gradient_accumulation_steps"}):
        config.per_device_train_batch_size = micro = next(
            m for m in range(micro, 0, -1) if total % (m * tokens_per_sequence) == 0)
    accumulation = gradient_accumulation_steps(config, world_size)
    if config.gradient_accumulation_steps not in (None, accumulation):
        raise SettingsError(
            f"--gradient_accumulation_steps {config.gradient_accumulation_steps} x --per_device_train_batch_size "
            f"{micro} x --block_size {config.block_size} x {world_size} process(es) = "
            f"{micro * tokens_per_sequence * config.gradient_accumulation_steps} tokens per step, but "
            f"--total_batch_size is {total}; drop one of the two")
    config.gradient_accumulation_steps = accumulation


def gradient_accumulation_steps(config: RunConfig, world_size: int) -> int:
    tokens_per_micro_step = config.per_device_train_batch_size * config.block_size * world_size
    if config.total_batch_size % tokens_per_micro_step:
        raise SettingsError(
            f"--total_batch_size {config.total_batch_size} is not divisible by --per_device_train_batch_size "
            f"{config.per_device_train_batch_size} x --block_size {config.block_size} x {world_size} process(es) "
            f"= {tokens_per_micro_step}; pick sizes whose product divides it"
        )
    return config.total_batch_size // tokens_per_micro_step


def steps_for_epochs(num_train_epochs: float, train_tokens: int, total_batch_size: int) -> int:
    """--num_train_epochs as optimizer steps: the training tokens over the tokens per step, rounded up."""
    return max(1, -(-int(num_train_epochs * train_tokens) // total_batch_size))
