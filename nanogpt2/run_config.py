"""run_pretrain.py's settings: one dataclass parsed by transformers' `HfArgumentParser` (public API only), with
help, choices, bounds and aliases in each field's metadata. Values are layered flags > `--config_file` (YAML/JSON)
> the preset's recipe (nanogpt2/recipes/PRESET.yaml, the same keys) > RunConfig's defaults (the 124M recipe), and
every value, wherever it came from, passes the same type, choice and bound checks (setting_checks.py). Names
follow transformers' `run_clm.py`/`TrainingArguments`; the names this project used before (`--micro_batch_size`,
`--sequence_length`, `--compile`, `--tokenizer`, `--hub_private`) are accepted as flags and config-file keys, and
are nowhere else."""

from __future__ import annotations

import argparse
import copy
import dataclasses
from typing import ClassVar, Literal

from transformers import HfArgumentParser

from .configuration_nanogpt2 import ARCHITECTURE, PRESETS, RECIPE_DIR
from .errors import SettingsError
from .setting_checks import BOUNDS, SettingChecks


def setting(default, help: str, *, aliases=(), **metadata):
    """A dataclass field: --help text, aliases (other flag names), argparse arguments, BOUNDS, section (a --help
    group starts at it)."""
    return dataclasses.field(default=default, metadata={"help": help, "aliases": list(aliases), **metadata})


@dataclasses.dataclass
class RunConfig:
    preset: str = setting("gpt2-124m", "the recipe: model size (when training from scratch) and training settings, "
                          "nanogpt2/recipes/PRESET.yaml (listed below)", choices=list(PRESETS), section="model")
    model_name_or_path: str | None = setting(
        None, "start from these weights instead of a random init: a nanogpt2 checkpoint directory, a Hugging Face "
        "GPT-2 checkpoint (model_type gpt2, converted on the fly, vocabulary padded to 50304) or a Hub id (online). "
        "The optimizer starts fresh; to continue a run exactly use --resume_from_checkpoint")
    config_name: str | None = setting(None, "model architecture from a config.json (directory, file or Hub id; "
                                      "nanogpt2 or gpt2) instead of --preset; weights are initialized randomly")
    n_layer: int | None = setting(None, "override the number of layers", at_least=1)
    n_head: int | None = setting(None, "override the number of attention heads", at_least=1)
    n_embd: int | None = setting(None, "override the width", at_least=1)
    n_positions: int | None = setting(None, "override the model's context length (its position embeddings)", at_least=1)
    dropout: float = setting(0.0, "dropout probability (0 for pretraining)", at_least=0.0, below=1.0)
    # The architecture options (NanoGPT2Config's); unset: the preset's, else GPT-2's (in brackets)
    position_embedding: Literal["learned", "rotary"] | None = setting(
        None, "position encoding: a learned table (GPT-2) or rotary (RoPE) [learned]")
    rotary_base: float | None = setting(None, "RoPE's base (theta) [10000]", above=0.0)
    normalization: Literal["layernorm", "rmsnorm"] | None = setting(None, "LayerNorm (GPT-2) or RMSNorm [layernorm]")
    qk_norm: bool | None = setting(None, "normalise queries and keys per head before attention [false]")
    mlp_activation: Literal["gelu_tanh", "relu2"] | None = setting(None, "MLP activation: GELU-tanh (GPT-2) or "
                                                                   "ReLU squared [gelu_tanh]")
    bias: bool | None = setting(None, "biases in the linear layers and LayerNorms [true]")
    tie_word_embeddings: bool | None = setting(None, "the head shares the token embedding's weights [true]")
    logit_softcap: float | None = setting(None, "final-logit softcap C: C * tanh(logits / C) [none]", above=0.0)
    zero_init_projections: bool | None = setting(None, "initialise the blocks' output projections at zero [false]")
    tokenizer_name: str | None = setting(None, "a directory with a tokenizer.json (e.g. from train_tokenizer.py) or "
                                         "a Hub id (online); default GPT-2's", aliases=["--tokenizer"])
    data_dir: str | None = setting(None, "pre-tokenized shards written by prepare_fineweb.py", section="data")
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
    per_device_train_batch_size: int = setting(64, "sequences per forward pass per process (the micro-batch)",
                                               aliases=["--micro_batch_size"], at_least=1, section="batch")
    block_size: int = setting(1024, "tokens per training sequence (at most n_positions; with --n_positions "
                              "and no --block_size: n_positions)", aliases=["--sequence_length"], at_least=1)
    gradient_accumulation_steps: int | None = setting(
        None, "micro-batches per optimizer step and process; default: derived from --total_batch_size", at_least=1)
    total_batch_size: int | None = setting(
        2**19, "tokens per optimizer step, over all processes (with --gradient_accumulation_steps "
        "and without this flag: derived from it; with both: checked)", at_least=1)
    optim: Literal["adamw", "muon"] = setting(
        "adamw", "adamw: AdamW for every parameter (GPT-2's recipe); muon: torch.optim.Muon for the blocks' 2-D "
        "matrices at --muon_learning_rate, AdamW for the rest (embeddings, head, norms, biases)",
        section="optimizer and learning-rate schedule")
    learning_rate: float = setting(6e-4, "peak learning rate (of AdamW's parameters)", above=0.0)
    muon_learning_rate: float = setting(0.02, "--optim muon: peak learning rate of the Muon matrices (follows the "
                                        "same schedule)", above=0.0)
    muon_momentum: float = setting(0.95, "--optim muon: Muon's momentum", at_least=0.0, below=1.0)
    muon_weight_decay: float = setting(0.0, "--optim muon: Muon's (decoupled) weight decay", at_least=0.0)
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
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = setting(
        "auto", "auto: what `accelerate launch` was given (--mixed_precision or its config file), else bf16 on "
        "CUDA and no on CPU", section="precision and speed")
    bf16: bool = setting(False, "same as --mixed_precision bf16")
    fp16: bool = setting(False, "same as --mixed_precision fp16")
    use_cpu: bool = setting(False, "train on the CPU even if a GPU is present (as `accelerate launch --cpu`)")
    tf32: bool = setting(True, "allow TF32 matmuls on Ampere+ GPUs")
    torch_compile: Literal["auto", "true", "false"] = setting(
        "auto", "torch.compile the training step's model: auto (on for CUDA, off for CPU), true or false; "
        "alone it means true", aliases=["--compile"], nargs="?", const="true")
    gradient_checkpointing: bool = setting(False, "recompute activations in backward to save memory")
    output_dir: str = setting("runs/nanogpt2", "run directory: metrics, config, checkpoints",
                              section="evaluation, logging and checkpoints")
    eval_steps: int = setting(250, "evaluate every N steps (and at the end)", at_least=1)
    eval_tokens: int = setting(10_485_760, "validation tokens per evaluation (the same set whatever the number "
                               "of processes; build-nanogpt's 20 x 64 x 1024 x 8)", at_least=1)
    hellaswag_file: str | None = setting(None, "local hellaswag_val.jsonl (otherwise downloaded once)")
    hellaswag_limit: int | None = setting(None, "evaluate HellaSwag on the first N examples only", at_least=1)
    hellaswag_style: Literal["completion", "harness"] = setting(
        "completion", "completion (build-nanogpt) or harness (lm-evaluation-harness)")
    hellaswag_final_full: bool = setting(False, "at the final step, score all HellaSwag examples whatever "
                                         "--hellaswag_limit (the model card reports a validation-split result "
                                         "only then)")
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
    push_to_hub: bool = setting(False, "push the final checkpoint to the Hugging Face Hub (access is checked "
                                "before training)", section="publishing to the Hub")
    hub_model_id: str | None = setting(None, "USER/NAME on the Hub")
    hub_private_repo: bool = setting(False, "create the Hub repository private", aliases=["--hub_private"])
    hub_strategy: Literal["end", "every_save", "checkpoint"] = setting(
        "end", "as in transformers: end: push the final model; every_save: push the model at every save; "
        "checkpoint: every_save, plus the whole latest checkpoint in last-checkpoint/ (for resuming)")

    # Not a setting: True when the micro-batch is a recipe's or config file's, which batch.settle_batch may fit
    fit_micro_batch: ClassVar[bool] = False


CHECKS = SettingChecks(RunConfig)  # each value checked as its flag's would be, wherever it comes from
FIELDS, TYPES, KEYS = CHECKS.fields, CHECKS.types, CHECKS.keys
check_value, load_config_file = CHECKS.check, CHECKS.load_file
DESCRIPTION = """Pretrain GPT-2 (from scratch or from --model_name_or_path) with build-nanogpt's
recipe, on one process or under `accelerate launch`. Settings: flags >
--config_file > the preset's recipe > the defaults shown."""


class SettingsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each setting once (name, aliases, one metavar); no hyphenated spelling (--max-steps), no "(default: None)"."""

    def add_argument(self, action):
        if action.option_strings:
            spelled = {name[2:] for name in action.option_strings}
            action = copy.copy(action)  # as --help shows it
            action.option_strings = [", ".join(name for name in action.option_strings
                                               if "-" not in name[2:] or name[2:].replace("-", "_") not in spelled)]
            if action.default is None or action.nargs == 0:
                action.default = argparse.SUPPRESS
        super().add_argument(action)


class SettingsParser(HfArgumentParser):
    """HfArgumentParser over RunConfig whose errors raise SettingsError (run_pretrain.py prints them as one line),
    whose choices take any case (--mixed_precision BF16) and whose --help groups the settings and lists the recipes."""

    def __init__(self, add_help: bool = True):
        self.section, self.sections = None, {}
        recipes = "".join(f"\n  {name:<11} {(RECIPE_DIR / f'{name}.yaml').read_text().splitlines()[0][2:]}"
                          for name in PRESETS)
        super().__init__(RunConfig, prog="run_pretrain.py", description=DESCRIPTION, add_help=add_help,
                         epilog=f"recipes for --preset (nanogpt2/recipes/NAME.yaml; to change one, copy it\n"
                         f"and pass the copy with --config_file){recipes}", formatter_class=SettingsHelpFormatter)
        self.section = None  # what comes next goes to "options"
        self.add_argument("--config_file", help="YAML/JSON file with any of these settings (same names)")
        self.sections["precision and speed"].add_argument(
            "--no_torch_compile", "--no-compile", dest="torch_compile", action="store_const", const="false",
            help="same as --torch_compile false")

    def add_argument(self, *names, **kwargs):
        """HfArgumentParser adds each field through here, in order: into its --help section, with choices in any
        case, without the bounds (`check_value` checks them)."""
        if "section" in kwargs:
            self.section = self.sections[kwargs["section"]] = self.add_argument_group(kwargs["section"])
        kwargs = {key: value for key, value in kwargs.items() if key not in (*BOUNDS, "section")}
        choices = kwargs.get("choices")
        if choices and all(isinstance(choice, str) for choice in choices):
            kwargs["type"] = str.lower
        if names[0].startswith("--no_"):  # HfArgumentParser's --no_tf32 for a setting that defaults to true
            kwargs["help"] = f"same as --{kwargs['dest']} false"
        return (self.section or super()).add_argument(*names, **kwargs)

    def error(self, message):
        raise SettingsError(message)


def resolve_config(argv=None) -> RunConfig:
    """Flags over --config_file over the preset's recipe over RunConfig's defaults."""
    # The flags given: a parse in which every default is `unset`; --help and unknown flags wait for the second.
    parser, unset = SettingsParser(add_help=False), object()
    parser.set_defaults(**dict.fromkeys([*FIELDS, "config_file"], unset))
    flags = {name: value for name, value in vars(parser.parse_known_args(argv)[0]).items() if value is not unset}
    in_file = load_config_file(flags.pop("config_file")) if "config_file" in flags else {}  # {name: (value, where)}
    chosen = {**in_file, **{name: (check_value(name, value, f"--{name}"), f"--{name}")
                            for name, value in flags.items()}}
    values = {name: value for name, (value, _) in chosen.items()}

    # the recipe's architecture is its preset's (NanoGPT2Config.from_preset); its other keys are defaults
    recipe = load_config_file(RECIPE_DIR / f"{values.get('preset', RunConfig.preset)}.yaml")
    defaults = {name: value for name, (value, _) in recipe.items() if name not in ARCHITECTURE}
    if values.get("gradient_accumulation_steps") is not None and "total_batch_size" not in values:
        defaults["total_batch_size"] = None  # derived from the accumulation once the process count is known
    if values.get("num_train_epochs") is not None:
        defaults["max_steps"] = None  # derived from the training tokens
    if values.get("n_positions") is not None and "block_size" not in values:
        defaults["block_size"] = values["n_positions"]
    parser = SettingsParser()
    parser.set_defaults(**defaults)  # the recipe's layer, then the config file's over it, then the flags
    parser.set_defaults(**{name: value for name, (value, _) in in_file.items()})
    config = RunConfig(**{name: value for name, value in vars(parser.parse_args(argv)).items() if name in FIELDS})
    config.fit_micro_batch = "per_device_train_batch_size" not in flags and config.gradient_accumulation_steps is None

    def named(name):
        return chosen[name][1] if name in chosen else f"--{name}"

    if config.num_train_epochs is not None and "max_steps" in values:
        raise SettingsError(f"{named('max_steps')} and {named('num_train_epochs')} both set the length of training; "
                            "pass one")
    streamed = [named(name) for name in ("streaming", "dataset_name") if getattr(config, name)]
    if config.num_train_epochs is not None and streamed:
        raise SettingsError(f"{named('num_train_epochs')} needs data of known size, not {' / '.join(streamed)}; "
                            "pass --max_steps")
    sources = [named(name) for name in ("data_dir", "train_file", "dataset_name") if getattr(config, name)]
    if len(sources) > 1:
        raise SettingsError(f"{' and '.join(sources)} each name training data; pass only one")
    if config.bf16 and config.fp16:
        raise SettingsError(f"{named('bf16')} and {named('fp16')} contradict each other; pass one")
    for flag in [flag for flag in ("bf16", "fp16") if getattr(config, flag)]:
        if config.mixed_precision not in ("auto", flag):
            raise SettingsError(f"{named(flag)} contradicts {named('mixed_precision')} {config.mixed_precision}")
        config.mixed_precision = flag
    shaped = [named(name) for name in ("config_name", *ARCHITECTURE) if getattr(config, name) is not None]
    if config.model_name_or_path and shaped:
        raise SettingsError(f"{', '.join(shaped)}: the model's shape comes from --model_name_or_path "
                            f"{config.model_name_or_path}; drop {'it' if len(shaped) == 1 else 'them'}")
    if config.push_to_hub and not config.hub_model_id:
        raise SettingsError("--push_to_hub needs --hub_model_id USER/NAME (the Hub repository to create or update)")
    return config


def compile_enabled(config: RunConfig, device_type: str) -> bool:
    """--torch_compile auto compiles on CUDA only: on CPU compilation costs more time than a short run saves."""
    value = str(config.torch_compile).lower()  # RunConfig(torch_compile=True) made in code counts too
    return value == "true" or (value == "auto" and device_type == "cuda")
