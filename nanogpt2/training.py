"""The pretraining loop of run_pretrain.py, driven by Accelerate.

One optimizer step = `grad_accum` micro-batches per process (total_batch_size tokens in all), grad
clip, the learning rate of the step, AdamW. Every eval_steps: validation loss over a fixed token set,
HellaSwag, samples. Every save_steps: an atomic `checkpoint-<step>/` holding a loadable model and
`training_state/` (model, optimizer, RNG of every process, data position) for exact resume, written,
rotated, resumed from and pushed by `run_checkpoints.RunCheckpoints`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from accelerate.utils import DistributedType, is_compiled_module
from tqdm.auto import tqdm

from . import fileio
from .batch import settle_batch, steps_for_epochs
from .convert import load_pretrained
from .cpu_memory import keep_freed_memory_for_reuse
from .data import BatchPrefetcher
from .errors import DivergenceError, PreflightError, SettingsError, TrainingError, TrainingInterrupted
from .flops import device_peak_flops, mfu, model_flops_per_token
from .modeling_nanogpt2 import NanoGPT2ForCausalLM
from .optim import build_run_optimizer, learning_rate_at, set_learning_rates
from .preflight import BackgroundCheck, check_hellaswag, check_numbers, check_output_dir
from .prepare import verify_prepared
from .run_checkpoints import RunCheckpoints
from .run_config import (
    RunConfig,
    compile_enabled,
)
from .run_dir import MetricsLog, OutputDirLock, list_checkpoints, resume_target
from .run_setup import build_accelerator, build_loaders, model_config, run_tokenizer

# Seconds training waits for the shards' sha256 before step 1; larger data is verified while training runs
# (and always before the first checkpoint).
SHARD_CHECK_HEAD_START = 10.0


# metrics.jsonl keys -> tracker (TensorBoard, wandb) names, grouped as train/, eval/, perf/
TRACKER_NAMES = {
    "train_loss": "train/loss", "lr": "train/learning_rate", "muon_lr": "train/muon_learning_rate",
    "grad_norm": "train/grad_norm",
    "tokens": "train/tokens_seen", "tokens_per_sec": "perf/tokens_per_sec", "mfu": "perf/mfu",
    "val_loss": "eval/loss", "val_tokens": "eval/loss_tokens", "hellaswag_acc_norm": "eval/hellaswag_acc_norm",
    "hellaswag_acc": "eval/hellaswag_acc", "hellaswag_num_examples": "eval/hellaswag_num_examples",
}


def tracker_values(record: dict) -> dict:
    """A metrics.jsonl record as grouped tracker scalars (its step goes to the tracker's own step)."""
    return {TRACKER_NAMES[key]: value for key, value in record.items() if key in TRACKER_NAMES}


class StopSignals:
    """SIGTERM (what schedulers send before a kill) and SIGINT (Ctrl-C) only set a flag; the loop saves at
    the next step boundary. A second Ctrl-C stops at once, without saving."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = 0
        self.previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        again = bool(self.received)  # a second SIGTERM (a scheduler repeating itself) changes nothing
        self.received = self.received or signum
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: KeyboardInterrupt now
        if os.environ.get("RANK", "0") == "0":  # every process of a launch gets the signal: one says so
            print(f"\n{signal.Signals(signum).name} {'again: still saving' if again else 'received: saving'} a "
                  "checkpoint at the end of this step (Ctrl-C again to stop without saving)", file=sys.stderr,
                  flush=True)

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class PretrainingLoop:
    """The loop of run_pretrain.py (not a `transformers.Trainer`: no callbacks, no compute_metrics); its
    settings borrow TrainingArguments' names and meanings."""

    def __init__(self, config: RunConfig, accelerator=None):
        self.config = config
        self.accelerator = acc = accelerator or build_accelerator(config)
        self.output_dir = Path(config.output_dir)
        self.device = acc.device
        if self.device.type == "cpu":
            keep_freed_memory_for_reuse()  # a third of a CPU step went to mapping freed buffers again
        # One run at a time per --output_dir: the lock is held from here to the end of train() (or close()).
        self.lock = self._lock_output_dir()
        try:
            self._set_up(config)
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        """Stops the data reader thread and releases --output_dir for another run. train() does this when it
        ends; a loop driven step by step (`train_step`) is closed by hand or used as a context manager."""
        self.train_loader.close()
        self.lock.release()

    def __enter__(self) -> "PretrainingLoop":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _lock_output_dir(self) -> OutputDirLock:
        """The main process takes the output directory's lock; every process stops if it could not."""
        acc = self.accelerator
        fileio.check_output_dir(self.output_dir, "--output_dir", overwrite=True)  # a file, not writable: first
        lock, refusal = OutputDirLock(self.output_dir), None
        if acc.is_main_process:
            try:
                lock.acquire()
            except PreflightError as error:
                refusal = error
        if acc.num_processes > 1:
            failed = torch.tensor([int(refusal is not None)], device=self.device)
            torch.distributed.all_reduce(failed, op=torch.distributed.ReduceOp.MAX)
            if failed.item() and refusal is None:
                lock.release()
                refusal = PreflightError(f"--output_dir {self.output_dir} is in use by another run")
        if refusal is not None:
            raise refusal
        return lock

    def _set_up(self, config: RunConfig) -> None:
        from accelerate.utils import set_seed

        acc = self.accelerator
        # Cheap checks first, each before anything is written or downloaded.
        check_numbers(config)
        resume = resume_target(config.resume_from_checkpoint, self.output_dir)
        check_output_dir(self.output_dir, resuming=resume is not None, overwrite=config.overwrite_output_dir)
        if config.save_total_limit is not None and config.save_total_limit < 1:
            raise PreflightError(f"--save_total_limit must be at least 1 (got {config.save_total_limit}): the newest "
                                 "checkpoint is always kept; omit it to keep them all")
        if config.tf32 and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.grad_accum = settle_batch(config, acc.num_processes)
        if config.push_to_hub:
            from .publish import check_hub_access

            check_hub_access(config.hub_model_id, private=config.hub_private_repo)

        # Every example the run will score, parsed now (all of them for --hellaswag_final_full).
        self.hellaswag_examples = None if config.skip_hellaswag else check_hellaswag(
            config.hellaswag_file, None if config.hellaswag_final_full else config.hellaswag_limit)
        self.tokenizer = run_tokenizer(config)
        set_seed(config.seed)
        self.model_config = model_config(config, self.tokenizer)
        # The shards' sha256 against their manifest, hashed in the background on the main process; the loop
        # stops every rank if it fails, and waits for it before the first checkpoint.
        self.shard_check = (BackgroundCheck(verify_prepared, config.data_dir)
                            if config.data_dir and acc.is_main_process else None)
        self.train_loader, self.val_loader = build_loaders(config, self.tokenizer, acc.process_index,
                                                           acc.num_processes)
        if config.max_steps is None:  # --num_train_epochs
            config.max_steps = steps_for_epochs(config.num_train_epochs, self.train_loader.total_tokens,
                                                config.total_batch_size)
            check_numbers(config)  # the warmup against the steps now known
        # The next micro-batches are read (and pinned, on CUDA) in a background thread; the data position
        # saved in checkpoints counts consumed batches only.
        self.train_loader = BatchPrefetcher(self.train_loader, pin_memory=self.device.type == "cuda")
        self._build_model_and_optimizer()
        self.checkpoints = RunCheckpoints(acc, config, model=self.model, model_config=self.model_config,
                                          tokenizer=self.tokenizer, train_loader=self.train_loader,
                                          resumed_from=resume)
        self.step, self.tokens_seen, self.skipped_steps = 0, 0, 0
        if resume is not None:
            self.step, self.tokens_seen = self.checkpoints.load()
        self.checkpoints.prepare_output_dir()
        self.metrics = MetricsLog(self.output_dir, acc.is_main_process,
                                  self.step if resume is not None else None, checkpoint=resume)
        if config.report_to != "none":
            acc.init_trackers("nanogpt2", config={k: v for k, v in dataclasses.asdict(config).items()
                                                   if isinstance(v, (int, float, str, bool))},
                              init_kwargs={"wandb": {"dir": str(self.output_dir)}})  # not ./wandb

    def _build_model_and_optimizer(self) -> None:
        config, acc = self.config, self.accelerator
        if config.optim == "muon" and acc.distributed_type == DistributedType.FSDP:
            # FSDP2 shards each matrix (a DTensor) while Muon orthogonalises whole matrices
            raise SettingsError("--optim muon does not run under FSDP (Muon needs whole matrices, FSDP2 shards "
                                "them); use DDP (accelerate_configs/multi_gpu.yaml) or --optim adamw")
        if config.model_name_or_path:  # weights from there, a fresh optimizer
            model = load_pretrained(config.model_name_or_path, "--model_name_or_path", dropout=config.dropout)
        else:
            model = NanoGPT2ForCausalLM(self.model_config)
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable()
        self.optimizer = build_run_optimizer(model, config, self.device.type)
        self.model, self.optimizer = acc.prepare(model, self.optimizer)
        self.raw_model = acc.unwrap_model(self.model)
        # --compile auto: on CUDA only. A model Accelerate compiled already (dynamo_config) is not wrapped twice.
        accelerate_compiled = is_compiled_module(self.model)
        self.compiled = accelerate_compiled or compile_enabled(config, self.device.type)
        self.train_model = torch.compile(self.model) if self.compiled and not accelerate_compiled else self.model
        self.flops_per_token = model_flops_per_token(self.raw_model, config.block_size)
        self.peak_flops = device_peak_flops(self.device) if self.device.type == "cuda" else None

    # -- one optimizer step ---------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, float]:
        acc, config = self.accelerator, self.config
        lr = learning_rate_at(self.step, config.lr_scheduler_type, config.learning_rate, config.warmup_steps,
                              config.max_steps, config.min_lr_ratio, config.lr_decay_ratio)
        set_learning_rates(self.optimizer, lr, config.learning_rate)
        loss_sum = torch.zeros((), device=self.device)
        for micro_step in range(self.grad_accum):
            x, y = self.train_loader.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = micro_step == self.grad_accum - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.model), acc.autocast():
                loss = self.micro_step_loss(x, y) / self.grad_accum
            acc.backward(loss)
            loss_sum += loss.detach()
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        loss = acc.reduce(loss_sum, reduction="mean")
        # One host sync, before the update: a NaN/inf loss or gradient (the same on every rank: the loss is
        # reduced, the norm is of the reduced gradients) never reaches the weights.
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        grad_norm = torch.as_tensor(grad_norm, dtype=torch.float32, device=loss.device)
        loss, grad_norm = torch.stack([loss.float(), grad_norm]).tolist()
        # fp16's GradScaler skips an update with inf/NaN gradients by itself (and lowers its scale): there
        # only the loss counts
        self.step_finite = math.isfinite(loss) and (math.isfinite(grad_norm) or acc.scaler is not None)
        if self.step_finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += config.total_batch_size
        return loss, lr, grad_norm

    def micro_step_loss(self, x, y):
        """The mean loss of one micro-batch (forward only)."""
        return self.train_model(input_ids=x, shift_labels=y).loss

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validation_loss(self) -> float:
        self.raw_model.eval()
        total = torch.zeros(2, device=self.device)
        # Every rank runs as many forwards as the busiest one (under FSDP each forward all-gathers, so
        # ranks must agree); a rank short of a batch runs a dummy one that does not count.
        rounds = -(-self.val_loader.num_batches // self.accelerator.num_processes)
        batches = iter(self.val_loader)
        dummy = torch.zeros(2, self.config.per_device_train_batch_size, self.config.block_size, dtype=torch.long)
        for _ in range(rounds):
            x, y = batch = next(batches, dummy)
            with self.accelerator.autocast():
                loss = self.raw_model(input_ids=x.to(self.device), shift_labels=y.to(self.device),
                                      return_logits=False).loss  # the chunked loss, no full logits
            counts = float(batch is not dummy)
            total += torch.stack([loss.float() * counts, torch.full((), counts, device=self.device)])
        total = self.accelerator.reduce(total, reduction="sum")
        self.raw_model.train()
        return (total[0] / total[1]).item()

    def hellaswag(self, full: bool = False) -> dict | None:
        """HellaSwag on the first --hellaswag_limit examples, or on all of them when `full`."""
        from .hellaswag import evaluate_hellaswag

        if self.config.skip_hellaswag:
            return None
        examples = self.hellaswag_examples if full else self.hellaswag_examples[:self.config.hellaswag_limit]
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
                  "val_tokens": (self.val_loader.num_batches * self.config.per_device_train_batch_size
                                 * self.config.block_size)}
        if not math.isfinite(record["val_loss"]):
            raise DivergenceError(f"step {self.step}: the validation loss is {record['val_loss']}; stopping without "
                                  "saving this step. The last good checkpoint is kept; lower --learning_rate or check "
                                  "the data, then --resume_from_checkpoint")
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
            message += (f", HellaSwag acc_norm {record['hellaswag_acc_norm']:.4f} "
                        f"({record['hellaswag_num_examples']} ex.)")
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

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> Path:
        acc, config = self.accelerator, self.config
        bar = tqdm(total=config.max_steps, initial=self.step, desc="training", unit="step",
                   disable=not acc.is_local_main_process, dynamic_ncols=True)
        if acc.is_main_process:
            n_params = sum(p.numel() for p in self.raw_model.parameters())
            bar.write(f"nanogpt2: {n_params:,} parameters, {acc.num_processes} process(es) on {self.device.type}, "
                      f"{config.total_batch_size:,} tokens/step = {config.per_device_train_batch_size} x "
                      f"{config.block_size} "
                      f"x {acc.num_processes} x {self.grad_accum} accumulation, {config.max_steps} steps"
                      f"{', compiled' if self.compiled else ''}")
        try:
            try:
                with StopSignals() as signals:
                    last_checkpoint = self._train_steps(bar, signals)
            except KeyboardInterrupt:  # Ctrl-C twice: stopped at once, without saving
                raise self._interrupted_without_saving() from None
            finally:  # also on an error: the error line starts on a line of its own
                bar.close()
                self.train_loader.close()
                self.checkpoints.finish_uploads()
            if last_checkpoint is None:  # resumed at the end already
                last_checkpoint = self.checkpoints.directory(self.step)
            self.checkpoints.push_final(last_checkpoint, self.step, self.tokens_seen)
            acc.end_training()
        finally:
            self.lock.release()
        return last_checkpoint

    def _interrupted_without_saving(self) -> TrainingInterrupted:
        """The second Ctrl-C's message: what is kept (a save it cut short is swept at the next start)."""
        kept = list_checkpoints(self.output_dir)
        where = (f"the last complete checkpoint is {kept[-1][1]}; resume with the same command plus "
                 "--resume_from_checkpoint latest" if kept else "no checkpoint was saved")
        return TrainingInterrupted(f"SIGINT twice at step {self.step}: stopped without saving; {where}", signal.SIGINT)

    def _train_steps(self, bar, signals: StopSignals) -> Path | None:
        """Each step: train, log, evaluate (every --eval_steps), save (every --save_steps), stop (on a signal)."""
        config = self.config
        last_checkpoint = None
        if self.shard_check is not None:
            self.shard_check.wait(timeout=SHARD_CHECK_HEAD_START)  # small data: verified before step 1
        self._raise_if_data_failed(self._stop_requests(signals)[1])
        while self.step < config.max_steps:
            loss, lr, grad_norm, seconds = self.timed_train_step()
            self.log_step(bar, loss, lr, grad_norm, seconds)
            done = self.step == config.max_steps
            save = self.step % config.save_steps == 0 or done
            signum = self._agree_on_stop(signals, data_checked=save)
            if self.step % config.eval_steps == 0 or done:
                self._evaluate_or_save(bar, final=done, save=save)
            if save or signum:
                last_checkpoint = self.checkpoints.save(self.step, self.tokens_seen)
                # a signal that came during the save (or the evaluation) stops now, the checkpoint just written kept
                signum = signum or (self._agree_on_stop(signals, data_checked=False) if not done else 0)
            if signum:
                name = signal.Signals(signum).name
                raise TrainingInterrupted(f"{name} after step {self.step}: saved {last_checkpoint}; "
                                          "resume with the same command plus --resume_from_checkpoint latest", signum)
        return last_checkpoint

    def timed_train_step(self) -> tuple[float, float, float, float]:
        """`train_step` and its wall time. A NaN/inf loss or gradient norm (the update was not applied; every
        rank sees the same) is skipped and counted with --on_nonfinite_loss skip; by default the run stops,
        the last finite state (the step before) saved as a checkpoint."""
        start = time.perf_counter()
        position = self.train_loader.state_dict()  # the data position before this step's batches
        loss, lr, grad_norm = self.train_step()
        seconds = time.perf_counter() - start
        if self.step_finite:
            return loss, lr, grad_norm, seconds
        what = f"the training loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
        if self.config.on_nonfinite_loss == "skip":
            self.skipped_steps += 1
            if self.accelerator.is_main_process:  # above the progress bar
                tqdm.write(f"warning: step {self.step}: {what}; its update is skipped ({self.skipped_steps} so "
                           "far, --on_nonfinite_loss skip)", file=sys.stderr)
            return loss, lr, grad_norm, seconds
        self.step, self.tokens_seen = self.step - 1, self.tokens_seen - self.config.total_batch_size
        self.train_loader.load_state_dict(position)
        saved = self.checkpoints.directory(self.step)
        if self.step > 0 and not saved.is_dir():
            saved = self.checkpoints.save(self.step, self.tokens_seen)
        kept = f"the last finite state (step {self.step}) is {saved}" if self.step > 0 else "no step was finite"
        raise DivergenceError(f"step {self.step + 1}: {what}; stopped before updating the weights, {kept}. Lower "
                              "--learning_rate or check the data, then --resume_from_checkpoint latest; or pass "
                              "--on_nonfinite_loss skip to skip such steps")

    def log_step(self, bar, loss: float, lr: float, grad_norm: float, seconds: float) -> None:
        """The step's record to metrics.jsonl and the trackers every --logging_steps (and at the last step);
        the progress bar at every step."""
        tokens_per_sec = self.config.total_batch_size / seconds
        utilisation = mfu(tokens_per_sec, self.flops_per_token, self.peak_flops)
        if self.step % self.config.logging_steps == 0 or self.step == self.config.max_steps:
            record = {"step": self.step, "tokens": self.tokens_seen, "train_loss": loss, "lr": lr,
                      "grad_norm": grad_norm, "tokens_per_sec": tokens_per_sec}
            if self.config.optim == "muon":
                record["muon_lr"] = self.optimizer.param_groups[-1]["lr"]
            if utilisation is not None:
                record["mfu"] = utilisation
            skipped = self.train_loader.state_dict().get("skipped_rows")  # streamed rows without text, so far
            if skipped:
                record["skipped_rows"] = skipped
            if self.skipped_steps:  # updates skipped for a NaN/inf loss (--on_nonfinite_loss skip)
                record["skipped_steps"] = self.skipped_steps
            self.metrics.write(record)
            self.accelerator.log(tracker_values(record), step=self.step)
        postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "gnorm": f"{grad_norm:.2f}",
                   "tok/s": f"{tokens_per_sec:,.0f}"}
        if utilisation is not None:
            postfix["mfu"] = f"{100 * utilisation:.1f}%"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

    def _agree_on_stop(self, signals: StopSignals, data_checked: bool) -> int:
        """The stop signal all ranks agree on at this step boundary (0: none). Before a save (`data_checked`)
        the background shard check must have finished: a run whose data failed verification is never saved."""
        if data_checked and self.shard_check is not None:
            self.shard_check.wait()
        signum, data_failed = self._stop_requests(signals)
        self._raise_if_data_failed(data_failed)
        return signum

    def _evaluate_or_save(self, bar, final: bool, save: bool) -> None:
        """`evaluate`; when it fails at a step that saves, the checkpoint is written before the error is reported."""
        try:
            self.evaluate(bar, final=final)
        except DivergenceError:
            raise
        except Exception:
            if save:
                self.checkpoints.save(self.step, self.tokens_seen)
            raise

    def _raise_if_data_failed(self, failed: bool) -> None:
        if failed:  # the main process raises the shard's error; the others stop quietly with it
            raise (self.shard_check.error() if self.shard_check is not None else
                   TrainingError("shard verification failed on the main process"))

    def _stop_requests(self, signals: StopSignals) -> tuple[int, bool]:
        """(signal received by any rank, shard verification failed) agreed by all ranks at a step boundary,
        so that every rank saves, or stops, at the same step."""
        failed = self.shard_check is not None and self.shard_check.error() is not None
        flags = torch.tensor([signals.received, int(failed)], device=self.device)
        if self.accelerator.num_processes > 1:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return int(flags[0]), bool(flags[1])
