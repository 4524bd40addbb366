"""nanogpt2/cpu_memory.py: on Linux/glibc a training process serves large buffers from its heap (reused), not
from a fresh mapping each time; a user's own allocator choice is left alone."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt2 import cpu_memory
from nanogpt2.cpu_memory import allocator_chosen_by_user

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Where a 48 MB tensor (under the 64 MiB threshold) lies: in the [heap] mapping (brk, reused after free) or in
# a mapping of its own.
WHERE_A_LARGE_BUFFER_LIES = """
import runpy, sys
import torch
keep_freed_memory_for_reuse = runpy.run_path(sys.argv[1])["keep_freed_memory_for_reuse"]  # not all of nanogpt2

def in_heap():
    x = torch.ones(48 * 2**20 // 4)
    address = x.data_ptr()
    for line in open("/proc/self/maps"):  # address range, permissions, offset, device, inode, [name]
        fields = line.split()
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if start <= address < end:
            return fields[5:] == ["[heap]"]
    raise AssertionError("no mapping holds the tensor")

print(in_heap(), keep_freed_memory_for_reuse(), in_heap(), keep_freed_memory_for_reuse())
"""


def where_a_large_buffer_lies() -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    module = Path(__file__).resolve().parents[1] / "nanogpt2" / "cpu_memory.py"
    result = subprocess.run([sys.executable, "-c", WHERE_A_LARGE_BUFFER_LIES, module], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_large_buffers_come_from_the_heap_once_kept_for_reuse():
    assert where_a_large_buffer_lies() == ["False", "True", "True", "True"]  # before, then after (once is enough)


@pytest.mark.parametrize("env, chosen", [
    ({}, False),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, True),
    ({"LD_PRELOAD": "/opt/libtcmalloc_minimal.so.4"}, True),
    ({"MALLOC_MMAP_THRESHOLD_": "131072"}, True),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, True),
    ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, False),
])
def test_a_users_allocator_choice_is_respected(monkeypatch, env, chosen):
    for key in ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert allocator_chosen_by_user() == chosen
    if chosen:  # then the thresholds are left as they are
        monkeypatch.setattr(cpu_memory, "_applied", False)
        monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda *args: pytest.fail("libc opened"))
        assert cpu_memory.keep_freed_memory_for_reuse() is False
