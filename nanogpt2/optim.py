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


def is_muon_parameter(name: str, param: torch.Tensor) -> bool:
    """The rule of `--optim muon`, written once: Muon (an orthogonalised update, Jordan et al. 2024) suits the
    hidden matrices, i.e. the 2-D weights inside the blocks (`transformer.h.N...`); embeddings, the head, norms
    and biases stay with AdamW, as in modded-nanogpt and nanochat."""
    return param.ndim == 2 and ".h." in f".{name}"


def muon_and_adamw_groups(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                          muon_learning_rate: float, muon_weight_decay: float) -> tuple[list[dict], list[dict]]:
    """(Muon's groups, AdamW's groups) of `--optim muon`: every trainable parameter in exactly one (tied weights
    once). Each group records its peak learning rate as `peak_lr`, which the schedule scales."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # tied weights appear once
    muon = [p for n, p in named if is_muon_parameter(n, p)]
    adamw = [p for n, p in named if not is_muon_parameter(n, p)]
    muon_groups = [{"params": muon, "lr": muon_learning_rate, "peak_lr": muon_learning_rate,
                    "weight_decay": muon_weight_decay}]
    adamw_groups = [{"params": [p for p in adamw if p.dim() >= 2], "weight_decay": weight_decay},
                    {"params": [p for p in adamw if p.dim() < 2], "weight_decay": 0.0}]
    for group in adamw_groups:
        group["lr"] = group["peak_lr"] = learning_rate
    return muon_groups, adamw_groups


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer object over two: torch.optim.Muon for the blocks' matrices, AdamW for the rest. Its
    param_groups are the two optimizers' own group dicts (AdamW's first), so setting a group's "lr" reaches the
    optimizer that owns it; state_dict holds both states, so Accelerate's save_state/load_state resume exactly."""

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], *, momentum: float = 0.95,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8, fused: bool = False):
        self.adamw = torch.optim.AdamW(adamw_groups, betas=betas, eps=eps, fused=fused)
        self.muon = torch.optim.Muon(muon_groups, momentum=momentum)
        super().__init__(self.adamw.param_groups + self.muon.param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.adamw.step()
        self.muon.step()
        return loss

    def state_dict(self):
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state_dict):
        self.adamw.load_state_dict(state_dict["adamw"])
        self.muon.load_state_dict(state_dict["muon"])
        # load_state_dict replaces the optimizers' group dicts: share the new ones again
        self.param_groups = self.adamw.param_groups + self.muon.param_groups


def build_run_optimizer(model: torch.nn.Module, config, device_type: str = "cpu") -> torch.optim.Optimizer:
    """The optimizer of a run's settings (RunConfig): AdamW everywhere, or `--optim muon`'s MuonWithAdamW."""
    betas = (config.adam_beta1, config.adam_beta2)
    if config.optim == "muon":
        muon_groups, adamw_groups = muon_and_adamw_groups(model, config.learning_rate, config.weight_decay,
                                                          config.muon_learning_rate, config.muon_weight_decay)
        return MuonWithAdamW(muon_groups, adamw_groups, momentum=config.muon_momentum, betas=betas,
                             eps=config.adam_epsilon, fused=device_type == "cuda")
    return build_optimizer(model, config.learning_rate, config.weight_decay, betas, config.adam_epsilon, device_type)


def set_learning_rates(optimizer: torch.optim.Optimizer, lr: float, max_lr: float) -> None:
    """Each group at the schedule's `lr`, scaled by its own peak (`peak_lr`, --optim muon) relative to `max_lr`."""
    for group in optimizer.param_groups:
        peak = group.get("peak_lr", max_lr)
        group["lr"] = lr if peak == max_lr else peak * lr / max_lr


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
