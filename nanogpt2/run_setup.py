"""What a run is built from, before its loop starts: the Accelerator (device, precision, trackers, DDP
and FSDP settings), the tokenizer and the model's architecture, each from run_pretrain.py's settings."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate.utils import DistributedType

from .configuration_nanogpt2 import GPT2_VOCAB_SIZE, NanoGPT2Config, padded_vocab_size
from .convert import pretrained_config
from .errors import PreflightError, SettingsError
from .run_config import RunConfig
from .sources import local_or_hub_dir
from .tokenizer import GPT2_NAME, load_tokenizer


def model_config(config: RunConfig, tokenizer) -> NanoGPT2Config:
    """The architecture: the checkpoint's (--model_name_or_path), a config.json's (--config_name) or the
    preset's, with --n_layer/--n_head/--n_embd/--n_positions/--dropout over it."""
    overrides = {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "n_positions")
                 if getattr(config, k) is not None}
    overrides["dropout"] = config.dropout
    if config.model_name_or_path or config.config_name:
        flag = "--model_name_or_path" if config.model_name_or_path else "--config_name"
        model = pretrained_config(config.model_name_or_path or config.config_name, flag, **overrides)
    else:
        if tokenizer.vocab_size != GPT2_VOCAB_SIZE:  # own tokenizer: pad its vocabulary to a multiple of 64 as well
            overrides["vocab_size"] = padded_vocab_size(tokenizer.vocab_size)
            overrides["tokenizer_vocab_size"] = tokenizer.vocab_size
            overrides["bos_token_id"] = overrides["eos_token_id"] = tokenizer.eot_token_id
        try:
            model = NanoGPT2Config.from_preset(config.preset, **overrides)
        except ValueError as error:  # the config file is remote code: it raises plain ValueErrors
            raise SettingsError(str(error)) from None
    if model.tokenizer_vocab_size != tokenizer.vocab_size:
        source = f"--model_name_or_path {config.model_name_or_path}" if config.model_name_or_path else (
            f"--config_name {config.config_name}" if config.config_name else "the model")
        raise SettingsError(f"{source} has a {model.tokenizer_vocab_size}-token vocabulary, the tokenizer "
                         f"{config.tokenizer_name or 'gpt2'} {tokenizer.vocab_size}; pass the tokenizer it was made "
                         "for with --tokenizer_name")
    if config.block_size > model.n_positions:
        raise SettingsError(f"--block_size {config.block_size} exceeds the model's context n_positions="
                         f"{model.n_positions}; pass --block_size {model.n_positions} or less")
    return model


def run_tokenizer(config: RunConfig):
    """GPT-2's by default; --tokenizer_name: a local tokenizer.json (directory or file) or a Hub id."""
    name = config.tokenizer_name
    if name is None or name == GPT2_NAME or Path(name).expanduser().exists():
        return load_tokenizer(name)
    return load_tokenizer(local_or_hub_dir(name, "--tokenizer_name", ["tokenizer.json", "tokenizer_config.json"],
                                           kind="tokenizer"))


def resolve_precision(config: RunConfig, cuda: bool) -> tuple[str, str]:
    """(mixed precision, where the choice came from): a script flag, else `accelerate launch`'s
    (--mixed_precision or its config file, passed on as ACCELERATE_MIXED_PRECISION), else bf16 on CUDA."""
    if config.mixed_precision != "auto":
        return config.mixed_precision, "run_pretrain.py flag"
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched:
        return launched, "accelerate launch"
    return ("bf16", "default on CUDA") if cuda else ("no", "default on CPU")


def build_accelerator(config: RunConfig):
    """The Accelerator of a run: its device (--use_cpu or `accelerate launch --cpu` force the CPU), its
    precision (`resolve_precision`), trackers from --report_to, DDP settings, and FSDP also on CPU. The
    device and precision are printed once."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    forced_cpu = config.use_cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    cuda = torch.cuda.is_available() and not forced_cpu
    precision, origin = resolve_precision(config, cuda)
    trackers = [] if config.report_to == "none" else [config.report_to]
    # Gradients as views into DDP's all-reduce buckets: one copy of the gradients less, no copy per step.
    # static_graph stays off: with gradient accumulation under no_sync() it fails in torch 2.13
    # ("expect_autograd_hooks_ INTERNAL ASSERT FAILED", reducer.cpp), and find_unused_parameters is off
    # already, which is what static_graph would save.
    ddp = DistributedDataParallelKwargs(gradient_as_bucket_view=True)
    # cpu=True on a GPU-less machine also makes the torchrun path (accelerate_configs/cpu_2proc.yaml)
    # start real gloo process groups instead of independent single processes.
    accelerator = Accelerator(mixed_precision=precision, log_with=trackers or None, project_dir=config.output_dir,
                              cpu=not cuda, kwargs_handlers=[ddp])
    enable_fsdp_on_cpu(accelerator)
    if trackers and not accelerator.log_with:  # Accelerate only warns, and would log nothing
        raise PreflightError(f"--report_to {config.report_to}: that tracker is not installed "
                            f"(pip install {config.report_to}) or pass --report_to none")
    accelerator.print(f"nanogpt2: {accelerator.num_processes} process(es) on {accelerator.device.type}, "
                      f"mixed precision {precision} ({origin})")
    return accelerator


def enable_fsdp_on_cpu(accelerator) -> None:
    """Honour an FSDP launch config (ACCELERATE_USE_FSDP) on CPU processes. Accelerate 1.15 picks its FSDP
    mode only for accelerator devices: with cpu=True its state says MULTI_CPU and prepare() wraps the model
    in DDP, silently. FSDP2 itself (fully_shard, torch.distributed.checkpoint, full state dicts) runs
    on CPU with gloo, so the mode is set here, in both of Accelerate's shared states, before prepare()."""
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    if not (os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and accelerator.device.type == "cpu"
            and accelerator.distributed_type == DistributedType.MULTI_CPU):
        return
    plugin = FullyShardedDataParallelPlugin()  # reads the launch config's FSDP_* variables
    if plugin.fsdp_version != 2:
        raise PreflightError("FSDP on CPU needs fsdp_version: 2 in the accelerate config")
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
