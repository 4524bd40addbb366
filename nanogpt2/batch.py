"""The batch arithmetic of a run, in one place: tokens per optimizer step (total_batch_size) = micro-batch x block
size x processes x gradient accumulation, settled once, by `PretrainingLoop` with its Accelerator's number of
processes; and --num_train_epochs as optimizer steps."""

from __future__ import annotations

from .errors import SettingsError
from .run_config import RunConfig


def settle_batch(config: RunConfig, num_processes: int) -> int:
    """Settles `config`'s batch for `num_processes` and returns the gradient accumulation steps.

    With --gradient_accumulation_steps and no --total_batch_size the total is derived; with both they are checked.
    When a recipe's micro-batch (or a config file's: `config.fit_micro_batch`) does not divide the total on this
    many processes (tiny on 2), the largest smaller one that does is used, so a recipe runs on any process count it
    can; a micro-batch given as a flag or in code, or with --gradient_accumulation_steps, is never changed."""
    tokens_per_sequence = config.block_size * num_processes
    if config.total_batch_size is None:
        config.total_batch_size = (config.per_device_train_batch_size * tokens_per_sequence
                                   * config.gradient_accumulation_steps)
    total, micro = config.total_batch_size, config.per_device_train_batch_size
    if config.fit_micro_batch and total % (micro * tokens_per_sequence) and total % tokens_per_sequence == 0:
        micro = next(m for m in range(micro, 0, -1) if total % (m * tokens_per_sequence) == 0)
        config.per_device_train_batch_size = micro
    product = f"--per_device_train_batch_size {micro} x --block_size {config.block_size} x {num_processes} process(es)"
    if total % (micro * tokens_per_sequence):
        raise SettingsError(f"--total_batch_size {total} is not divisible by {product} = {micro * tokens_per_sequence}"
                            "; pick sizes whose product divides it")
    accumulation = total // (micro * tokens_per_sequence)
    if config.gradient_accumulation_steps not in (None, accumulation):
        raise SettingsError(f"--gradient_accumulation_steps {config.gradient_accumulation_steps} x {product} = "
                            f"{micro * tokens_per_sequence * config.gradient_accumulation_steps} tokens per step, but "
                            f"--total_batch_size is {total}; drop one of the two")
    config.gradient_accumulation_steps = accumulation
    return accumulation


def steps_for_epochs(num_train_epochs: float, train_tokens: int, total_batch_size: int) -> int:
    """--num_train_epochs as optimizer steps: the training tokens over the tokens per step, rounded up."""
    return max(1, -(-int(num_train_epochs * train_tokens) // total_batch_size))
