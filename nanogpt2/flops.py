"""Model FLOPs utilisation (MFU), as nanoGPT and the PaLM paper (appendix B) count it."""

from __future__ import annotations

import torch

# Dense bf16 tensor-core peaks (no sparsity) from NVIDIA's data sheets, in FLOP/s.
PEAK_BF16_FLOPS = {
    "H100 SXM": 989e12,
    "H100 PCIe": 756e12,
    "H200": 989e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
}


def non_embedding_parameters(model) -> int:
    """N of the 6N term: every parameter once (tied ones once, an untied head counted) except the position
    embedding, for any GPT-2 that keeps it at `model.transformer.wpe` (nanogpt2, HF GPT-2, build-nanogpt);
    a rotary nanogpt2 has none (wpe is None)."""
    unique = {id(p): p.numel() for p in model.parameters()}
    wpe = getattr(model.transformer, "wpe", None)
    return sum(unique.values()) - (wpe.weight.numel() if wpe is not None else 0)


def flops_per_token(num_params: int, n_layer: int, n_head: int, head_dim: int, seq_len: int) -> int:
    """Training FLOPs per token: 6N for the matmuls with weights (forward 2N + backward 4N) plus
    12·L·H·Q·T for attention scores and values (nanoGPT's estimate_mfu)."""
    return 6 * num_params + 12 * n_layer * n_head * head_dim * seq_len


def model_flops_per_token(model, seq_len: int) -> int:
    config = model.config
    return flops_per_token(non_embedding_parameters(model), config.n_layer, config.n_head,
                           config.head_dim, seq_len)


def device_peak_flops(device=None) -> float | None:
    """The dense bf16 peak of a known CUDA device, else None (MFU is then not reported)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name:
        return PEAK_BF16_FLOPS["H100 PCIe"] if "PCIe" in name else PEAK_BF16_FLOPS["H100 SXM"]
    for key, peak in PEAK_BF16_FLOPS.items():
        if key.split()[0] in name:
            return peak
    return None


def mfu(tokens_per_second: float, flops_per_token_: int, peak_flops: float | None) -> float | None:
    if not peak_flops:
        return None
    return tokens_per_second * flops_per_token_ / peak_flops
