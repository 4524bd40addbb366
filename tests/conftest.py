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


def pytest_collection_modifyitems(items):
    """The longest work first, for pytest-xdist (`-n auto --dist worksteal`): the tests that start 2-process runs,
    then the other slow ones, then the fast ones. worksteal gives each worker a share of this list and lets an idle
    worker take the unstarted end of a busy one's share, so the long runs start at once and the short ones fill in
    at the end. (`--dist load` handed out fixed shares: a worker could sit idle for minutes while the other ran the
    serving and notebook tests. `--dist loadgroup` does not group under pytest 9.2 with pytest-xdist 3.8: the
    worker's renamed node ids are not read back.)"""
    items.sort(key=lambda item: 0 if item.get_closest_marker("two_processes") else
               1 if item.get_closest_marker("slow") else 2)
