"""The checkpoints of a pretraining run: `<output_dir>/checkpoint-<step>/` directories.

Each one holds a loadable model (`checkpoint.write_model_files`, plus a model card) and `training_state/`
(Accelerate's model, optimizer and RNG state of every process, each process's data position, and
trainer_state.json) for exact resume. `RunCheckpoints` saves them atomically, rotates them
(--save_total_limit), resumes from one, records the resume in the run's config.json, and pushes them to
the Hub. The loop (training.py) decides when.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from tqdm.auto import tqdm
from transformers.utils import CONFIG_NAME

from .checkpoint import quiet_saves, write_model_files
from .errors import DivergenceError, PreflightError, TrainingError
from .fileio import commit_directory, temporary_path
from .model_card import write_model_card
from .modeling_nanogpt2 import NanoGPT2ForCausalLM
from .preflight import compare_resumed_settings
from .run_config import RunConfig
from .run_dir import (
    checkpoint_dir,
    clear_previous_run,
    copy_run_metrics,
    data_state_file,
    list_checkpoints,
    read_trainer_state,
    resume_history,
    sweep_unfinished_saves,
    trainer_state_file,
    training_state_dir,
    write_checksums,
    write_run_config,
)


def describe_hardware(accelerator) -> str:
    """"8 x NVIDIA H100 80GB HBM3" or "CPU (2 processes)": recorded with each checkpoint for its card."""
    processes = accelerator.num_processes
    if accelerator.device.type == "cuda":
        return f"{processes} x {torch.cuda.get_device_name(accelerator.device)}"
    return f"{accelerator.device.type.upper()} ({processes} process{'es' if processes > 1 else ''})"


class RunCheckpoints:
    """The checkpoints of one run directory, for a model and optimizer already passed to
    `accelerator.prepare` (Accelerate's save_state/load_state cover both)."""

    PUSH_ATTEMPTS, PUSH_RETRY_SECONDS = 3, 30.0

    def __init__(self, accelerator, config: RunConfig, *, model, model_config, tokenizer, train_loader,
                 resumed_from: Path | None):
        self.accelerator, self.config = accelerator, config
        self.output_dir = Path(config.output_dir)
        self.model, self.model_config, self.tokenizer, self.train_loader = model, model_config, tokenizer, train_loader
        self.resumed_from, self.resume_record = resumed_from, None
        self.history: list[dict] = []  # config.json's resumes, also saved with each checkpoint
        self.pushed = None  # the last checkpoint pushed to the Hub
        self.uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanogpt2-push")
        self.uploading: set[Path] = set()  # checkpoints rotation must not delete yet

    def directory(self, step: int) -> Path:
        return checkpoint_dir(self.output_dir, step)

    # -- resuming ----------------------------------------------------------------------------------
    def load(self) -> tuple[int, int]:
        """Model, optimizer, RNG and data position of the checkpoint resumed from; returns (step, tokens seen).
        A checkpoint of another number of processes resumes too: DDP's states are full, FSDP's are resharded
        by torch.distributed.checkpoint, and the data position is resharded by the loader (any rank's file:
        all ranks of TrainLoader are at the same step). RNG states exist only for the saved ranks, so
        dropout masks differ from the uninterrupted run then."""
        acc, path = self.accelerator, self.resumed_from
        training_state = training_state_dir(path)
        state = read_trainer_state(path)
        self._check_resumed_run(path, state)
        saved_fsdp = (training_state / "pytorch_model_fsdp_0").is_dir()
        if saved_fsdp != (acc.distributed_type == DistributedType.FSDP):
            raise PreflightError(f"--resume_from_checkpoint {path} was written {'under' if saved_fsdp else 'without'} "
                                 "FSDP; resume it with an accelerate config that "
                                 f"{'uses' if saved_fsdp else 'does not use'} "
                             "FSDP (accelerate_configs/fsdp2.yaml or multi_gpu.yaml)")
        same_world = state["world_size"] == acc.num_processes
        data_file = data_state_file(path, acc.process_index if same_world else 0)
        self.train_loader.load_state_dict(json.loads(data_file.read_text()))  # checks the new world size first
        acc.load_state(str(training_state))
        if state["world_size"] != acc.num_processes and acc.is_main_process:
            print(f"resuming {path} (saved by {state['world_size']} process(es)) on {acc.num_processes}: the data "
                  "position is resharded, the token stream continues", file=sys.stderr)
        return state["step"], state["tokens_seen"]

    def _check_resumed_run(self, path: Path, state: dict) -> None:
        """Refuse a resume that would silently become another run (model shape, tokenizer, batch geometry,
        data); report and record allowed changes (learning rate, schedule, evaluation, ...)."""
        model_file = path / CONFIG_NAME
        saved_model = json.loads(model_file.read_text()) if model_file.is_file() else {}
        current_model = self.model_config.to_dict()
        shape = [f"{key} was {saved_model[key]}, now {current_model.get(key)}"
                 for key in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")
                 if key in saved_model and saved_model[key] != current_model.get(key)]
        if shape:
            raise PreflightError(f"--resume_from_checkpoint {path} holds another model shape ({', '.join(shape)}); "
                                 "resume with the checkpoint's --preset/--n_layer/--n_head/--n_embd/--tokenizer, or "
                                 "start a new run in another --output_dir")
        changed = {}
        if "run_config" in state:  # checkpoints written before the settings were recorded resume unchecked
            changed = compare_resumed_settings(state["run_config"], dataclasses.asdict(self.config), path)
        if state["world_size"] != self.accelerator.num_processes:
            changed["num_processes"] = {"was": state["world_size"], "now": self.accelerator.num_processes}
        if changed and self.accelerator.is_main_process:
            print(f"resuming {path} with changed settings: "
                  + ", ".join(f"{key} {c['was']!r} -> {c['now']!r}" for key, c in changed.items()), file=sys.stderr)
        self.resume_record = {"step": state["step"], "checkpoint": str(path), "changed": changed}

    def prepare_output_dir(self) -> None:
        """Sweep the temporary directories of saves a kill interrupted; with --overwrite_output_dir on a fresh
        run, remove the previous run's checkpoints and metrics; record the run's settings in config.json,
        with the history of resumes (the step, the checkpoint and what changed) of this run directory."""
        acc = self.accelerator
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            sweep_unfinished_saves(self.output_dir)
            history = []
            if self.resumed_from is None and self.config.overwrite_output_dir:
                removed = clear_previous_run(self.output_dir)
                if removed:
                    print(f"--overwrite_output_dir: removed {', '.join(removed)} from {self.output_dir}",
                          file=sys.stderr)
            else:
                history = resume_history(self.output_dir, self.resumed_from)
            if self.resume_record is not None:
                history.append(self.resume_record)
            self.history = history
            record = {**dataclasses.asdict(self.config), "resumes": history}
            write_run_config(self.output_dir, record)
        acc.wait_for_everyone()

    # -- saving ------------------------------------------------------------------------------------
    def save(self, step: int, tokens_seen: int) -> Path:
        """checkpoint-<step>/ written into a temporary directory by every process, renamed into place
        by the main process: a kill at any moment leaves either the complete checkpoint or none.
        Not `fileio.atomic_directory`: that is one process's context manager, while here every process
        writes into the same temporary directory (its own training state), so its name is fixed."""
        acc = self.accelerator
        final = self.directory(step)
        tmp = temporary_path(final, unique=False)
        if not self._weights_finite():  # a finite loss can still be followed by an update to inf/NaN
            raise DivergenceError(f"step {step}: the weights hold NaN or inf after the update; stopping without "
                                  "saving them. The last good checkpoint is kept; lower --learning_rate or "
                                  "--max_grad_norm, then --resume_from_checkpoint")
        try:
            self._write(tmp, final, step, tokens_seen)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            kept = list_checkpoints(self.output_dir)
            raise TrainingError(f"no space left to write {final} ({os.strerror(error.errno)}); "
                                + (f"{kept[-1][1]} is kept. " if kept else "no checkpoint was kept. ")
                                + "Free space (or pass a smaller --save_total_limit), then rerun with "
                                "--resume_from_checkpoint latest") from None
        if acc.is_main_process:
            self._rotate(keep={final})
            if self.config.push_to_hub and self.config.hub_strategy in ("every_save", "checkpoint"):
                self._push_in_background(final, step, tokens_seen)
        return final

    @torch.no_grad()
    def _weights_finite(self) -> bool:
        """All ranks agree (under FSDP each holds a shard of the weights)."""
        bad = torch.zeros((), device=self.accelerator.device)
        for parameter in self.model.parameters():
            local = parameter.to_local() if hasattr(parameter, "to_local") else parameter  # FSDP2: this rank's shard
            bad += (~torch.isfinite(local)).any()
        if self.accelerator.num_processes > 1:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        return not bad.item()

    def _write(self, tmp: Path, final: Path, step: int, tokens_seen: int) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        with quiet_saves():
            acc.save_state(str(training_state_dir(tmp)))
        state = {"step": step, "tokens_seen": tokens_seen, "world_size": acc.num_processes,
                 "hardware": describe_hardware(acc), "run_config": dataclasses.asdict(self.config),
                 "resumes": self.history}
        data_state_file(tmp, acc.process_index).write_text(
            json.dumps(self.train_loader.state_dict()))
        model_state = acc.get_state_dict(self.model)
        if acc.is_main_process:
            model, model_state = self.model_for_saving(model_state)
            write_model_files(model, tmp, self.tokenizer, state_dict=model_state)
            trainer_state_file(tmp).write_text(json.dumps(state))
            write_model_card(tmp, run_dir=self.output_dir, repo_id=self.config.hub_model_id, step=step,
                             tokens=tokens_seen, final_dir=final)
        acc.wait_for_everyone()
        if acc.is_main_process:  # every file is written: a copy of the metrics, then the checksums of all
            copy_run_metrics(self.output_dir, tmp)
            write_checksums(tmp)
            commit_directory(tmp, final)
        acc.wait_for_everyone()

    def model_for_saving(self, state_dict: dict):
        """(model, state_dict) for save_pretrained. FSDP2 changes the class of the model it shards into a
        generated FSDP<name> subclass, which would end up in config.json's auto_map: a parameterless copy
        on the meta device stands in, and the gathered tied weights share one tensor again, so that
        model.safetensors stores the embedding once, as without FSDP."""
        from torch.distributed.fsdp import FSDPModule

        raw_model = self.accelerator.unwrap_model(self.model)
        if not isinstance(raw_model, FSDPModule):
            return raw_model, state_dict
        with torch.device("meta"):
            model = NanoGPT2ForCausalLM(raw_model.config)
        if model.config.tie_word_embeddings:
            for tied, source in model._tied_weights_keys.items():
                state_dict[tied] = state_dict[source]
        return model, state_dict

    def _rotate(self, keep: set[Path]) -> None:
        """--save_total_limit: the oldest checkpoints go, never the one just saved, the one this run resumed
        from, or one still being uploaded."""
        limit = self.config.save_total_limit
        if not limit:
            return
        protected = {p.resolve() for p in keep | self.uploading | ({self.resumed_from} if self.resumed_from else set())}
        for _, path in list_checkpoints(self.output_dir)[:-limit]:
            if path.resolve() not in protected:
                shutil.rmtree(path, ignore_errors=True)

    # -- pushing to the Hub ------------------------------------------------------------------------
    def _push(self, checkpoint: Path, step: int, tokens_seen: int) -> None:
        from .publish import push_checkpoint

        push_checkpoint(checkpoint, self.config.hub_model_id, private=self.config.hub_private_repo,
                        commit_message=f"{checkpoint.name}: step {step}, {tokens_seen:,} tokens",
                        last_checkpoint=self.config.hub_strategy == "checkpoint")
        self.pushed = checkpoint

    def _push_in_background(self, checkpoint: Path, step: int, tokens_seen: int) -> None:
        """An intermediate push (--hub_strategy every_save/checkpoint) runs in a thread on the main process:
        other ranks never wait on an upload (a long one would hit NCCL's timeout). A failure is retried, then
        reported; training goes on."""
        from .errors import PublishError

        attempts = self.PUSH_ATTEMPTS

        def push():
            try:
                for attempt in range(1, attempts + 1):
                    try:
                        return self._push(checkpoint, step, tokens_seen)
                    except PublishError as error:
                        if attempt == attempts:
                            tqdm.write(f"warning: {error} (after {attempts} attempts); training continues",
                                       file=sys.stderr)
                        else:
                            time.sleep(self.PUSH_RETRY_SECONDS * attempt)
            finally:
                self.uploading.discard(checkpoint)

        self.uploading.add(checkpoint)
        self.uploads.submit(push)

    def finish_uploads(self) -> None:
        """Wait for an intermediate push still running to finish (or fail)."""
        self.uploads.shutdown(wait=True)

    def push_final(self, checkpoint: Path, step: int, tokens_seen: int) -> None:
        """--push_to_hub: the run's last checkpoint, unless an intermediate push sent it already."""
        if self.accelerator.is_main_process and self.config.push_to_hub and self.pushed != checkpoint:
            self._push(checkpoint, step, tokens_seen)
