"""The pretraining loop of run_pretrain.py, driven by Accelerate.

One optimizer step = `grad_accum` micro-batches per process (total_batch_size tokens in all), grad
clip, the learning rate of the step, AdamW. Every eval_steps: validation loss over a fixed token set,
HellaSwag, samples. Every save_steps: an atomic `checkpoint-<step>/` holding a loadable model and
`training_state/` (model, optimizer, RNG of every process, data position) for exact resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch
from accelerate.utils import DistributedType, is_compiled_module
from tqdm.auto import tqdm

from .checkpoint import quiet_saves, write_model_files
from .configuration_nanogpt2 import GPT2_VOCAB_SIZE, NanoGPT2Config
from .convert import load_pretrained, pretrained_config
from .data import BatchPrefetcher, build_loaders
from .fileio import TMP_PREFIX, atomic_write_text, commit_directory, temporary_path
from .flops import device_peak_flops, mfu, model_flops_per_token
from .model_card import write_model_card
from .modeling_nanogpt2 import NanoGPT2ForCausalLM
from .optim import build_optimizer, learning_rate_at
from .run_config import RunConfig, compile_enabled, gradient_accumulation_steps, steps_for_epochs
from .sources import local_or_hub_dir
from .tokenizer import GPT2_NAME, load_tokenizer

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class TrainingError(RuntimeError):
    pass


# metrics.jsonl keys -> tracker (TensorBoard, wandb) names, grouped as train/, eval/, perf/
TRACKER_NAMES = {
    "train_loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm",
    "tokens": "train/tokens_seen", "tokens_per_sec": "perf/tokens_per_sec", "mfu": "perf/mfu",
    "val_loss": "eval/loss", "val_tokens": "eval/loss_tokens", "hellaswag_acc_norm": "eval/hellaswag_acc_norm",
    "hellaswag_acc": "eval/hellaswag_acc", "hellaswag_num_examples": "eval/hellaswag_num_examples",
}


def tracker_values(record: dict) -> dict:
    """A metrics.jsonl record as grouped tracker scalars (its step goes to the tracker's own step)."""
    return {TRACKER_NAMES[key]: value for key, value in record.items() if key in TRACKER_NAMES}


def describe_hardware(accelerator) -> str:
    """"8 x NVIDIA H100 80GB HBM3" or "CPU (2 processes)": recorded with each checkpoint for its card."""
    processes = accelerator.num_processes
    if accelerator.device.type == "cuda":
        return f"{processes} x {torch.cuda.get_device_name(accelerator.device)}"
    return f"{accelerator.device.type.upper()} ({processes} process{'es' if processes > 1 else ''})"


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
            overrides["vocab_size"] = -(-tokenizer.vocab_size // 64) * 64
            overrides["tokenizer_vocab_size"] = tokenizer.vocab_size
            overrides["bos_token_id"] = overrides["eos_token_id"] = tokenizer.eot_token_id
        model = NanoGPT2Config.from_preset(config.preset, **overrides)
    if model.tokenizer_vocab_size != tokenizer.vocab_size:
        source = f"--model_name_or_path {config.model_name_or_path}" if config.model_name_or_path else (
            f"--config_name {config.config_name}" if config.config_name else "the model")
        raise ValueError(f"{source} has a {model.tokenizer_vocab_size}-token vocabulary, the tokenizer "
                         f"{config.tokenizer_name or 'gpt2'} {tokenizer.vocab_size}; pass the tokenizer it was made "
                         "for with --tokenizer_name")
    if config.block_size > model.n_positions:
        raise ValueError(f"--block_size {config.block_size} exceeds the model's context n_positions="
                         f"{model.n_positions}; pass --block_size {model.n_positions} or less")
    return model


def run_tokenizer(config: RunConfig):
    """GPT-2's by default; --tokenizer_name: a local tokenizer.json (directory or file) or a Hub id."""
    name = config.tokenizer_name
    if name is None or name == GPT2_NAME or Path(name).expanduser().exists():
        return load_tokenizer(name)
    return load_tokenizer(local_or_hub_dir(name, "--tokenizer_name", ["tokenizer.json", "tokenizer_config.json"],
                                           kind="tokenizer"))


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (a checkpoint directory appears only by its final rename), oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def resolve_resume(config: RunConfig) -> Path | None:
    if not config.resume_from_checkpoint:
        return None
    if config.resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(Path(config.output_dir))
        return checkpoints[-1][1] if checkpoints else None
    path = Path(config.resume_from_checkpoint)
    if not (path / "training_state" / "trainer_state.json").is_file():
        raise ValueError(f"--resume_from_checkpoint {path} is not a checkpoint with training state "
                         "(expected checkpoint-<step>/training_state/trainer_state.json)")
    return path


class MetricsLog:
    """<output_dir>/metrics.jsonl, one JSON object per line; on resume the lines after the checkpoint go."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif enabled and resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


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
        raise TrainingError(f"--report_to {config.report_to}: that tracker is not installed "
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
        raise TrainingError("FSDP on CPU needs fsdp_version: 2 in the accelerate config")
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP


class PretrainingLoop:
    """The loop of run_pretrain.py (not a `transformers.Trainer`: no callbacks, no compute_metrics); its
    settings borrow TrainingArguments' names and meanings."""

    def __init__(self, config: RunConfig, accelerator=None):
        from accelerate.utils import set_seed

        self.config = config
        self.accelerator = acc = accelerator or build_accelerator(config)
        self.output_dir = Path(config.output_dir)
        self.device = acc.device
        if config.tf32 and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.grad_accum = gradient_accumulation_steps(config, acc.num_processes)
        config.gradient_accumulation_steps = self.grad_accum
        if config.push_to_hub:
            from .publish import check_hub_access

            check_hub_access(config.hub_model_id, private=config.hub_private)

        self.tokenizer = run_tokenizer(config)
        set_seed(config.seed)
        self.model_config = model_config(config, self.tokenizer)
        self.train_loader, self.val_loader = build_loaders(config, self.tokenizer, acc.process_index,
                                                           acc.num_processes)
        if config.max_steps is None:  # --num_train_epochs
            config.max_steps = steps_for_epochs(config.num_train_epochs, self.train_loader.total_tokens,
                                                config.total_batch_size)
        # The next micro-batches are read (and pinned, on CUDA) in a background thread; the data position
        # saved in checkpoints counts consumed batches only.
        self.train_loader = BatchPrefetcher(self.train_loader, pin_memory=self.device.type == "cuda")
        self._build_model_and_optimizer()
        self.hellaswag_examples = None  # the first --hellaswag_limit examples, loaded at the first evaluation
        self.pushed = None  # the last checkpoint pushed to the Hub
        self.step, self.tokens_seen = 0, 0

        resume = resolve_resume(config)
        if resume is not None:
            self.load_checkpoint(resume)
        self._prepare_output_dir()
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl", acc.is_main_process,
                                  self.step if resume is not None else None)
        if config.report_to != "none":
            acc.init_trackers("nanogpt2", config={k: v for k, v in dataclasses.asdict(config).items()
                                                   if isinstance(v, (int, float, str, bool))},
                              init_kwargs={"wandb": {"dir": str(self.output_dir)}})  # not ./wandb

    def _build_model_and_optimizer(self) -> None:
        config, acc = self.config, self.accelerator
        if config.model_name_or_path:  # weights from there, a fresh optimizer
            model = load_pretrained(config.model_name_or_path, "--model_name_or_path", dropout=config.dropout)
        else:
            model = NanoGPT2ForCausalLM(self.model_config)
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable()
        self.optimizer = build_optimizer(model, config.learning_rate, config.weight_decay,
                                         (config.adam_beta1, config.adam_beta2), config.adam_epsilon,
                                         self.device.type)
        self.model, self.optimizer = acc.prepare(model, self.optimizer)
        self.raw_model = acc.unwrap_model(self.model)
        # --compile auto: on CUDA only. A model Accelerate compiled already (dynamo_config) is not wrapped twice.
        accelerate_compiled = is_compiled_module(self.model)
        self.compiled = accelerate_compiled or compile_enabled(config, self.device.type)
        self.train_model = torch.compile(self.model) if self.compiled and not accelerate_compiled else self.model
        self.flops_per_token = model_flops_per_token(self.raw_model, config.sequence_length)
        self.peak_flops = device_peak_flops(self.device) if self.device.type == "cuda" else None

    def _prepare_output_dir(self) -> None:
        """Sweep the temporary directories of saves a kill interrupted; record the run's settings."""
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for unfinished in self.output_dir.glob(f"{TMP_PREFIX}checkpoint-*"):
                shutil.rmtree(unfinished, ignore_errors=True)
            atomic_write_text(self.output_dir / "config.json", json.dumps(dataclasses.asdict(self.config), indent=2))

    # -- one optimizer step ---------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, float]:
        acc, config = self.accelerator, self.config
        lr = learning_rate_at(self.step, config.lr_scheduler_type, config.learning_rate, config.warmup_steps,
                              config.max_steps, config.min_lr_ratio, config.lr_decay_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for micro_step in range(self.grad_accum):
            x, y = self.train_loader.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = micro_step == self.grad_accum - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.model), acc.autocast():
                loss = self.train_model(input_ids=x, shift_labels=y).loss / self.grad_accum
            acc.backward(loss)
            loss_sum += loss.detach()
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = acc.reduce(loss_sum, reduction="mean").item()  # a host sync (float(grad_norm) below is another)
        self.step += 1
        self.tokens_seen += config.total_batch_size
        return loss, lr, float(grad_norm)

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validation_loss(self) -> float:
        self.raw_model.eval()
        total = torch.zeros(2, device=self.device)
        # Every rank runs as many forwards as the busiest one (under FSDP each forward all-gathers, so
        # ranks must agree); a rank short of a batch runs a dummy one that does not count.
        rounds = -(-self.val_loader.num_batches // self.accelerator.num_processes)
        batches = iter(self.val_loader)
        dummy = torch.zeros(2, self.config.micro_batch_size, self.config.sequence_length, dtype=torch.long)
        for _ in range(rounds):
            x, y = batch = next(batches, dummy)
            with self.accelerator.autocast():
                loss = self.raw_model(input_ids=x.to(self.device), shift_labels=y.to(self.device)).loss
            counts = float(batch is not dummy)
            total += torch.stack([loss.float() * counts, torch.full((), counts, device=self.device)])
        total = self.accelerator.reduce(total, reduction="sum")
        self.raw_model.train()
        return (total[0] / total[1]).item()

    def hellaswag(self, full: bool = False) -> dict | None:
        """HellaSwag on the first --hellaswag_limit examples, or on all of them when `full`."""
        from .hellaswag import evaluate_hellaswag, load_hellaswag

        if self.config.skip_hellaswag:
            return None
        if self.hellaswag_examples is None:
            self.hellaswag_examples = load_hellaswag(self.config.hellaswag_file, limit=self.config.hellaswag_limit)
        examples = self.hellaswag_examples
        if full and self.config.hellaswag_limit is not None:
            examples = load_hellaswag(self.config.hellaswag_file)
        # Split across ranks, except under FSDP: there every forward is collective and the ranks' shares
        # need different numbers of forwards, so every rank scores all examples.
        fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        with self.accelerator.autocast():
            return evaluate_hellaswag(self.raw_model, self.tokenizer, examples,
                                      style=self.config.hellaswag_style, batch_size=16, device=self.device,
                                      accelerator=None if fsdp else self.accelerator, progress=False, sharded=fsdp)

    @torch.no_grad()
    def samples(self) -> list[str]:
        """A few sampled continuations; the RNG is forked so sampling never changes the training stream.
        Every rank samples the same (same seed), so all run the same number of forwards (FSDP needs it)."""
        if self.config.num_samples <= 0:
            return []
        prompt = torch.tensor([self.tokenizer.encode_ordinary(self.config.sample_prompt)] * self.config.num_samples,
                              device=self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.config.seed)
            self.raw_model.eval()
            with self.accelerator.autocast():
                out = self.raw_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=50,
                                              max_new_tokens=self.config.sample_max_new_tokens,
                                              pad_token_id=self.tokenizer.eot_token_id)
            self.raw_model.train()
        return [self.tokenizer.decode(row.tolist()) for row in out]

    def evaluate(self, bar, final: bool = False) -> dict:
        """Validation loss, HellaSwag (all examples at the final step with --hellaswag_final_full) and samples;
        every metric with the number of tokens or examples it covers."""
        record = {"step": self.step, "tokens": self.tokens_seen, "val_loss": self.validation_loss(),
                  "val_tokens": self.val_loader.num_batches * self.config.micro_batch_size * self.config.sequence_length}
        result = self.hellaswag(full=final and self.config.hellaswag_final_full)
        if result is not None:
            record["hellaswag_acc_norm"] = result["acc_norm"]
            record["hellaswag_acc"] = result["acc"]
            record["hellaswag_num_examples"] = result["num_examples"]
        samples = self.samples()
        for text in samples:
            bar.write(f"sample> {text!r}")
        message = f"step {self.step}: val loss {record['val_loss']:.4f}"
        if "hellaswag_acc_norm" in record:
            message += f", HellaSwag acc_norm {record['hellaswag_acc_norm']:.4f} ({record['hellaswag_num_examples']} ex.)"
        bar.write(message)
        self.metrics.write(record)
        self.accelerator.log(tracker_values(record), step=self.step)
        self._log_samples(samples)
        return record

    def _log_samples(self, samples: list[str]) -> None:
        """Samples as text: a TensorBoard text entry, a wandb table (step, sample)."""
        if not samples:
            return
        for tracker in self.accelerator.trackers:  # empty except on the main process
            if tracker.name == "wandb":
                tracker.log_table("eval/samples", columns=["step", "sample"],
                                  data=[[self.step, text] for text in samples], step=self.step)
            else:  # TensorBoard renders markdown: indent to keep the text as it is
                tracker.log({"eval/samples": "\n\n".join("    " + text.replace("\n", "\n    ") for text in samples)},
                            step=self.step)

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """checkpoint-<step>/ written into a temporary directory by every process, renamed into place
        by the main process: a kill at any moment leaves either the complete checkpoint or none.
        Not `fileio.atomic_directory`: that is one process's context manager, while here every process
        writes into the same temporary directory (its own training state), so its name is fixed."""
        acc = self.accelerator
        final = self.output_dir / f"checkpoint-{self.step}"
        tmp = temporary_path(final, unique=False)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        with quiet_saves():
            acc.save_state(str(tmp / "training_state"))
        state = {"step": self.step, "tokens_seen": self.tokens_seen, "world_size": acc.num_processes,
                 "hardware": describe_hardware(acc)}
        (tmp / "training_state" / f"data_rank{acc.process_index}.json").write_text(
            json.dumps(self.train_loader.state_dict()))
        model_state = acc.get_state_dict(self.model)
        if acc.is_main_process:
            model, model_state = self.model_for_saving(model_state)
            write_model_files(model, tmp, self.tokenizer, state_dict=model_state)
            (tmp / "training_state" / "trainer_state.json").write_text(json.dumps(state))
            write_model_card(tmp, run_dir=self.output_dir, repo_id=self.config.hub_model_id, step=self.step,
                             tokens=self.tokens_seen, final_dir=final)
        acc.wait_for_everyone()
        if acc.is_main_process:
            commit_directory(tmp, final)
            self._rotate_checkpoints()
            if self.config.push_to_hub and self.config.hub_strategy in ("every_save", "checkpoint"):
                self._push(final)
        acc.wait_for_everyone()
        return final

    def model_for_saving(self, state_dict: dict):
        """(model, state_dict) for save_pretrained. FSDP2 changes the class of the model it shards into a
        generated FSDP<name> subclass, which would end up in config.json's auto_map: a parameterless copy
        on the meta device stands in, and the gathered tied weights share one tensor again, so that
        model.safetensors stores the embedding once, as without FSDP."""
        from torch.distributed.fsdp import FSDPModule

        if not isinstance(self.raw_model, FSDPModule):
            return self.raw_model, state_dict
        with torch.device("meta"):
            model = NanoGPT2ForCausalLM(self.raw_model.config)
        if model.config.tie_word_embeddings:
            for tied, source in model._tied_weights_keys.items():
                state_dict[tied] = state_dict[source]
        return model, state_dict

    def _rotate_checkpoints(self) -> None:
        limit = self.config.save_total_limit
        if limit:
            for _, path in list_checkpoints(self.output_dir)[:-limit]:
                shutil.rmtree(path, ignore_errors=True)

    def load_checkpoint(self, path: Path) -> None:
        """Model, optimizer, RNG and data position. A checkpoint of another number of processes resumes too:
        DDP's states are full, FSDP's are resharded by torch.distributed.checkpoint, and the data position
        is resharded by the loader (any rank's file: all ranks of TrainLoader are at the same step). RNG
        states exist only for the saved ranks, so dropout masks differ from the uninterrupted run then."""
        acc = self.accelerator
        training_state = path / "training_state"
        state = json.loads((training_state / "trainer_state.json").read_text())
        saved_fsdp = (training_state / "pytorch_model_fsdp_0").is_dir()
        if saved_fsdp != (acc.distributed_type == DistributedType.FSDP):
            raise ValueError(f"--resume_from_checkpoint {path} was written {'under' if saved_fsdp else 'without'} "
                             f"FSDP; resume it with an accelerate config that {'uses' if saved_fsdp else 'does not use'} "
                             "FSDP (accelerate_configs/fsdp2.yaml or multi_gpu.yaml)")
        same_world = state["world_size"] == acc.num_processes
        data_file = training_state / f"data_rank{acc.process_index if same_world else 0}.json"
        self.train_loader.load_state_dict(json.loads(data_file.read_text()))  # checks the new world size first
        acc.load_state(str(training_state))
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]

    def _push(self, checkpoint: Path) -> None:
        from .publish import push_checkpoint

        push_checkpoint(checkpoint, self.config.hub_model_id, private=self.config.hub_private,
                        commit_message=f"{checkpoint.name}: step {self.step}, {self.tokens_seen:,} tokens",
                        last_checkpoint=self.config.hub_strategy == "checkpoint")
        self.pushed = checkpoint

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> Path:
        acc, config = self.accelerator, self.config
        bar = tqdm(total=config.max_steps, initial=self.step, desc="training", unit="step",
                   disable=not acc.is_local_main_process, dynamic_ncols=True)
        if acc.is_main_process:
            n_params = sum(p.numel() for p in self.raw_model.parameters())
            bar.write(f"nanogpt2: {n_params:,} parameters, {acc.num_processes} process(es) on {self.device.type}, "
                      f"{config.total_batch_size:,} tokens/step = {config.micro_batch_size} x {config.sequence_length} "
                      f"x {acc.num_processes} x {self.grad_accum} accumulation, {config.max_steps} steps"
                      f"{', compiled' if self.compiled else ''}")
        last_checkpoint = None
        while self.step < config.max_steps:
            start = time.perf_counter()
            loss, lr, grad_norm = self.train_step()
            seconds = time.perf_counter() - start
            if not math.isfinite(loss):
                raise TrainingError(f"step {self.step}: the training loss is {loss}; stopping. The last good checkpoint "
                                    f"is kept; lower --learning_rate or check the data, then --resume_from_checkpoint")
            tokens_per_sec = config.total_batch_size / seconds
            utilisation = mfu(tokens_per_sec, self.flops_per_token, self.peak_flops)
            if self.step % config.logging_steps == 0 or self.step == config.max_steps:
                record = {"step": self.step, "tokens": self.tokens_seen, "train_loss": loss, "lr": lr,
                          "grad_norm": grad_norm, "tokens_per_sec": tokens_per_sec}
                if utilisation is not None:
                    record["mfu"] = utilisation
                self.metrics.write(record)
                acc.log(tracker_values(record), step=self.step)
            postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "gnorm": f"{grad_norm:.2f}",
                       "tok/s": f"{tokens_per_sec:,.0f}"}
            if utilisation is not None:
                postfix["mfu"] = f"{100 * utilisation:.1f}%"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            done = self.step == config.max_steps
            if self.step % config.eval_steps == 0 or done:
                self.evaluate(bar, final=done)
            if self.step % config.save_steps == 0 or done:
                last_checkpoint = self.save_checkpoint()
        bar.close()
        self.train_loader.close()
        if last_checkpoint is None:  # resumed at the end already
            last_checkpoint = self.output_dir / f"checkpoint-{self.step}"
        if acc.is_main_process and config.push_to_hub and self.pushed != last_checkpoint:
            self._push(last_checkpoint)
        acc.end_training()
        return last_checkpoint
