"""Shared fixtures: the real data files in ../shared/data (never the network)."""

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NANOGPT2_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# remote code is copied into transformers' modules cache: one of its own per test session, so that runs
# beside this one (or an earlier checkout's files there) never mix into it
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="nanogpt2-tests-modules-"))
if "PYTEST_XDIST_WORKER" in os.environ:
    # pytest -n N: N worker processes share the cores, so each one (and every process it starts, which
    # inherits this) computes on one thread; on 2 cores two 2-thread workers run slower than one
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.fail(f"missing test data {path}: the tests need ../shared/data beside the checkout "
                    "(or NANOGPT2_SHARED_DATA pointing at it)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def tinyshakespeare_file() -> Path:
    return shared_file("tinyshakespeare/input.txt")


@pytest.fixture(scope="session")
def hellaswag_file() -> Path:
    return shared_file("hellaswag/hellaswag_val.jsonl")


@pytest.fixture(scope="session")
def english_mix_file() -> Path:
    return shared_file("english_mix/english_mix.jsonl")


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    return shared_file("gpt2_tokenizer")


@pytest.fixture(scope="session")
def hf_gpt2_fixture_dir() -> Path:
    return shared_file("hf_gpt2_fixture")


# Modules whose tests share no costly module-scoped fixture: pytest-xdist may hand out their tests one by one.
# Every other module's tests stay together on one worker (each module fixture is built once).
SPREAD_MODULES = {"test_training", "test_notebooks", "test_run_config", "test_gpu_suite", "test_hf_conformance",
                  "test_model_variants", "test_model", "test_configuration_nanogpt2", "test_optim", "test_benchmarks",
                  "test_examples", "test_convert", "test_tracking", "test_architecture"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items):
    """For pytest-xdist (`--dist loadgroup`): the tests that start 2-process runs are one group, run one at a
    time on one worker (two at once would meet on one port, and 4 processes on 2 cores spin in their
    collectives); each module outside SPREAD_MODULES is one group; the groups and tests are handed out longest
    first (the 2-process group, then slow tests and modules holding them, then the rest), so that the long runs
    start at once and the short ones fill in at the end."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}

    def group(item):
        if item.get_closest_marker("two_processes"):
            return "two_processes"
        return None if item.module.__name__ in SPREAD_MODULES else item.module.__name__

    def order(item):
        if group(item) == "two_processes":
            return 0
        slow = item.get_closest_marker("slow") if group(item) is None else item.module.__name__ in slow_modules
        return 1 if slow else 2

    for item in items:
        if group(item):
            item.add_marker(pytest.mark.xdist_group(group(item)))
    items.sort(key=order)
