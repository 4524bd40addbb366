"""The optimizer and learning-rate schedules of GPT-2 124M pretraining (build-nanogpt's recipe,
following GPT-3 (Brown et al. 2020, appendix B): AdamW betas (0.9, 0.95), eps 1e-8, weight decay 0.1
on matrices only, linear warmup then cosine decay to 10% of the peak). Besides cosine, the schedules
of transformers' `--lr_scheduler_type` that make sense for pretraining: linear, constant and
warmup_stable_decay (Hu et al. 2024, MiniCPM)."""

from __future__ import annotations

import math

import torch


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on 2-D+ tensors (matmul weights, embeddings); none on biases and LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, learning_rate: float = 6e-4, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                    device_type: str = "cpu") -> torch.optim.AdamW:
    """AdamW over `parameter_groups`; the fused CUDA kernel when the parameters live on a GPU."""
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=learning_rate, betas=betas, eps=eps,
                             fused=device_type == "cuda")


def cosine_lr(step: int, max_lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup over `warmup_steps` (step 0 gets max_lr/warmup_steps), cosine from max_lr down
    to min_lr_ratio*max_lr at `max_steps`, constant after."""
    min_lr = max_lr * min_lr_ratio
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def learning_rate_at(step: int, schedule: str, max_lr: float, warmup_steps: int, max_steps: int,
                     min_lr_ratio: float = 0.1, decay_ratio: float = 0.2) -> float:
    """The learning rate of optimizer step `step` (0-based) under `schedule`. Every schedule starts with the
    same linear warmup (step 0 gets max_lr/warmup_steps) and ends at min_lr_ratio*max_lr (constant stays at
    max_lr). warmup_stable_decay holds max_lr, then decays (cosine, as transformers' default) over the last
    `decay_ratio` of `max_steps`."""
    if schedule == "cosine":
        return cosine_lr(step, max_lr, warmup_steps, max_steps, min_lr_ratio)
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return max_lr
    min_lr = max_lr * min_lr_ratio
    if step >= max_steps:
        return min_lr
    if schedule == "linear":
        progress = (step - warmup_steps) / (max_steps - warmup_steps)
        return max_lr - progress * (max_lr - min_lr)
    if schedule == "warmup_stable_decay":
        decay_start = max(warmup_steps, max_steps - round(decay_ratio * max_steps))
        if step < decay_start:
            return max_lr
        progress = (step - decay_start) / (max_steps - decay_start)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")
