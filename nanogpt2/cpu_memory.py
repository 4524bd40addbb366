"""Training on a CPU: freed large buffers stay in the process for the next step instead of going back to the OS.

glibc's malloc serves every allocation above its mmap threshold (128 KiB, rising with use to at most 32 MiB)
with a fresh `mmap` and unmaps it on `free`. A training step on a CPU frees and allocates many buffers larger
than that: one chunk of the loss's logits alone is 256 rows x 50,304 x 4 bytes = 51 MB for the tiny preset.
So every step the kernel zero-fills and maps hundreds of MB of pages again, and a third of the tiny preset's
time went to the kernel (25 s of system time in a 52 s run of 30 steps). With the thresholds raised (as
`MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` would do before start), these buffers come from the heap
and are reused; the process keeps the heap memory they took until it exits, as a training run would hold it
anyway. The figures are in docs/benchmarks.md ("CPU: freed memory kept for reuse").

PyTorch's CPU tuning guide suggests an allocator preloaded instead (jemalloc, tcmalloc); a user who chose one,
or set glibc's malloc variables, keeps that choice.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
# Buffers under 64 MiB (the tiny preset's 51 MB logits chunks) come from the heap; larger ones are still mapped
# and unmapped, so that a one-off large buffer is not kept: with 1 GiB here the tiny preset's peak memory was
# 2.5 GB instead of 1.5 GB, for 1 s less in 30 s (docs/benchmarks.md).
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = (1 << 31) - 1  # the most mallopt takes (an int): free memory kept at the heap's top

_applied = False


def allocator_chosen_by_user() -> bool:
    """Whether this process runs another allocator (LD_PRELOAD) or has glibc's malloc settings from the user."""
    preload = os.environ.get("LD_PRELOAD", "")
    return (any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc"))
            or any(key in os.environ for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))


def keep_freed_memory_for_reuse() -> bool:
    """Raises glibc's mmap and trim thresholds for this process (once); True when they are raised now or were
    before. Does nothing off Linux/glibc and where the user chose the allocator or its settings."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc" or allocator_chosen_by_user():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    _applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                          TRIM_THRESHOLD))
    return _applied
