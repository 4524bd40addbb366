"""What a run is built from, before its loop starts: the Accelerator (device, precision, trackers, DDP
and FSDP settings), the tokenizer, the model's architecture and the data loaders, each from run_pretrain.py's
settings (the loaders themselves, in data.py, know no settings)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import DistributedType

from .configuration_nanogpt2 import ARCHITECTURE, GPT2_VOCAB_SIZE, NanoGPT2Config, padded_vocab_size
from .convert import pretrained_config
from .data import StreamingTrainLoader, TrainLoader, ValidationLoader, open_token_shards, stream_text
from .documents import tokenize_documents, tokenize_files
from .errors import DataError, PreflightError, SettingsError, report
from .run_config import RunConfig
from .sources import download_tiny_shakespeare, load_hub_text_dataset, local_or_hub_dir
from .tokenizer import GPT2_NAME, load_tokenizer


def model_config(config: RunConfig, tokenizer) -> NanoGPT2Config:
    """The architecture: the checkpoint's (--model_name_or_path), a config.json's (--config_name) or the
    preset's, with --n_layer/--n_head/--n_embd/--n_positions/--dropout over it."""
    overrides = {k: getattr(config, k) for k in ARCHITECTURE if getattr(config, k) is not None}
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


def build_loaders(config: RunConfig, tokenizer, rank: int = 0, world_size: int = 1):
    """(train loader, validation loader) for one rank, from --data_dir shards, --train_file/--validation_file,
    --dataset_name or --streaming, or (preset tiny) Tiny Shakespeare. Token ids are below the model's
    vocabulary: text is tokenized here, shards are checked on opening."""
    if config.dataset_name or config.streaming:
        train, validation_arrays = _streaming_data(config, tokenizer, rank, world_size)
    else:
        train_arrays, validation_arrays = _token_arrays(config, tokenizer)
        with _naming(_data_flag(config)):
            train = TrainLoader(train_arrays, config.per_device_train_batch_size, config.block_size, rank, world_size,
                                config.seed, eot_token_id=tokenizer.eot_token_id)
    validation_batches = max(1, config.eval_tokens // (config.per_device_train_batch_size * config.block_size))
    with _naming(f"--validation_file {config.validation_file}" if config.validation_file else
                 f"the val shards of {_data_flag(config)}" if config.data_dir else
                 f"--validation_split_percentage {config.validation_split_percentage} of {_data_flag(config)}"):
        validation = ValidationLoader(validation_arrays, config.per_device_train_batch_size, config.block_size,
                                      validation_batches, rank, world_size)
    return train, validation


def _data_flag(config: RunConfig) -> str:
    for name in ("data_dir", "train_file", "dataset_name"):
        if getattr(config, name):
            return f"--{name} {getattr(config, name)}"
    return "Tiny Shakespeare"


@contextlib.contextmanager
def _naming(what: str):
    """A loader's size error, prefixed with the flag (and file) the data came from."""
    try:
        yield
    except DataError as error:
        raise DataError(f"{what}: {error}") from None


def _token_arrays(config: RunConfig, tokenizer):
    """(train arrays, validation arrays) from --data_dir, --train_file/--validation_file or (tiny) Tiny Shakespeare."""
    if config.data_dir:
        return (open_token_shards(config.data_dir, "train", tokenizer=tokenizer),
                open_token_shards(config.data_dir, "val", tokenizer=tokenizer))
    train_file = config.train_file
    if train_file is None:
        if config.preset != "tiny":
            raise DataError("no training data: pass --data_dir (prepare_fineweb.py shards), --train_file or "
                            "--dataset_name")
        train_file = download_tiny_shakespeare()
    skipped = []
    train = tokenize_files(train_file, tokenizer, config.text_column, skipped=skipped)
    if sum(skipped):
        report("warning", f"--train_file {train_file}: skipped {sum(skipped)} rows whose {config.text_column!r} is "
                          "null, empty or not text")
    if config.validation_file:
        return [train], [tokenize_files(config.validation_file, tokenizer, config.text_column)]
    split = int(len(train) * (1 - config.validation_split_percentage / 100))
    return [train[:split]], [train[split:]]


def _streaming_data(config: RunConfig, tokenizer, rank: int, world_size: int):
    """--dataset_name or --streaming --train_file: documents tokenized on the fly. Validation is
    --validation_file, or else the stream's first documents (eval_tokens of them), which training skips."""
    if not (config.dataset_name or config.train_file):
        raise DataError("--streaming needs --dataset_name (Hub) or --train_file (local .jsonl/.parquet/.txt)")
    stream = load_hub_text_dataset(config.dataset_name, config.dataset_config_name, "train", streaming=True,
                                   data_files=None if config.dataset_name else [config.train_file])
    if config.validation_file:
        validation_tokens = tokenize_files(config.validation_file, tokenizer, config.text_column)
    else:
        pieces, tokens, rows = [], 0, 0  # each document tokenized once, as it is taken
        for row in stream:
            rows += 1
            text = stream_text(row, config.text_column)  # None: a null, empty or non-text row, skipped
            if text is not None:
                pieces.append(tokenize_documents([text], tokenizer))
                tokens += len(pieces[-1])
            if tokens > config.eval_tokens:
                break
        stream = stream.skip(rows)
        validation_tokens = np.concatenate(pieces) if pieces else tokenize_documents([], tokenizer)
    train = StreamingTrainLoader(stream, tokenizer, config.per_device_train_batch_size, config.block_size, rank,
                                 world_size,
                                 config.seed, config.text_column)
    return train, [validation_tokens]
