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
