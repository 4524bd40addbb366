"""Where data comes from: Hub and local datasets, and the two files nanogpt2 downloads itself.

The package's cache directory, the one offline check, "Hub id or local path?" and the
verified download (URL + sha256 + cache) all live here, so every other module asks this one.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from .errors import DataError, first_line
from .fileio import atomic_write_bytes, path_inside, verify_sha256

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # 1,115,394 bytes
HELLASWAG_URLS = {
    "validation": "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    "train": "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_train.jsonl",
}
HELLASWAG_SHA256 = {"validation": "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"}
OFFLINE_HINT = ("pass local files instead: prepare_fineweb.py --data_files docs.jsonl (or .parquet/.txt), "
                "run_pretrain.py --train_file docs.jsonl")


# -- local facts -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where downloads are kept: $NANOGPT2_CACHE, else <HF_HOME or ~/.cache/huggingface>/nanogpt2."""
    if os.environ.get("NANOGPT2_CACHE"):
        return Path(os.environ["NANOGPT2_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "nanogpt2"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline(datasets: bool = False) -> bool:
    """HF_HUB_OFFLINE (or huggingface_hub's own constant), plus HF_DATASETS_OFFLINE when `datasets`."""
    from huggingface_hub import constants

    # the environment as it is now wins over huggingface_hub's constant, read once at its import
    hub = _env_flag("HF_HUB_OFFLINE") if "HF_HUB_OFFLINE" in os.environ else bool(constants.HF_HUB_OFFLINE)
    return hub or (datasets and _env_flag("HF_DATASETS_OFFLINE"))


def looks_like_local_path(name_or_path: str) -> bool:
    """A Hub id is "name" or "owner/name"; anything that exists, starts with . / ~, or has more slashes
    is meant as a local path."""
    return (Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~"))
            or name_or_path.count("/") > 1)


# -- verified downloads -----------------------------------------------------------------------------
def fetch_verified(url: str, sha256: str | None, filename: str, what: str, local_hint: str) -> Path:
    """`url` downloaded once into `cache_dir()/filename`; a file whose sha256 differs never lands in the
    cache, and a cached one is checked again. `local_hint` tells the user how to pass a local copy."""
    path = cache_dir() / filename
    if path.is_file():
        if sha256:
            verify_sha256(path, sha256, what)
        return path
    if not url.startswith("file:") and hub_offline():
        raise DataError(f"{what} is not cached at {path} and HF_HUB_OFFLINE is set; {local_hint}")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except OSError as error:
        raise DataError(f"could not download {what} from {url} ({error}); offline? {local_hint}") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f"the file downloaded from {url} is not {what} (sha256 mismatch); {local_hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def download_tiny_shakespeare(url: str = TINY_SHAKESPEARE_URL) -> Path:
    """char-rnn's input.txt (1.1 MB), for the `tiny` preset and the examples."""
    return fetch_verified(url, TINY_SHAKESPEARE_SHA256, "tinyshakespeare.txt", "Tiny Shakespeare",
                          "pass a local copy with --train_file input.txt")


def download_hellaswag(split: str = "validation") -> Path:
    """The official rowanz/hellaswag file of `split`."""
    if split not in HELLASWAG_URLS:
        raise DataError(f"unknown HellaSwag split {split!r}; choose {', '.join(HELLASWAG_URLS)}")
    url = HELLASWAG_URLS[split]
    return fetch_verified(url, HELLASWAG_SHA256.get(split), Path(url).name, "HellaSwag",
                          "pass a local copy of hellaswag_val.jsonl (eval_hellaswag.py --data_file, "
                          "run_pretrain.py --hellaswag_file)")


# -- datasets ---------------------------------------------------------------------------------------
def load_local_text_dataset(data_files, streaming: bool = False):
    """Local .jsonl/.json/.parquet/.txt files as a `datasets` dataset (a .txt file is one document)."""
    import datasets

    files = [str(f) for f in ([data_files] if isinstance(data_files, (str, Path)) else data_files)]
    for file in files:
        if not Path(file).is_file():
            raise DataError(f"data file {file} does not exist")
    suffixes = {Path(f).suffix.lower() for f in files}
    builders = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
    if len(suffixes) != 1 or next(iter(suffixes)) not in builders:
        raise DataError(f"--data_files must all be one of .jsonl, .json, .parquet, .txt; got {sorted(suffixes)}")
    builder = builders[suffixes.pop()]
    kwargs = {"sample_by": "document"} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files=files, split="train", streaming=streaming, **kwargs)


def resolve_hub_dataset(dataset_name: str, revision: str | None = None) -> str:
    """The commit sha of a Hub dataset (at `revision`, default the main branch), from one quick request.
    Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, or no connection) it raises DataError at once, instead
    of `datasets.load_dataset`'s retries with back-off."""
    if hub_offline(datasets=True):
        raise DataError(f"the Hub dataset {dataset_name} cannot be loaded offline (HF_HUB_OFFLINE is set); "
                        + OFFLINE_HINT)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return HfApi().dataset_info(dataset_name, revision=revision, timeout=10).sha
    except RepositoryNotFoundError:
        raise DataError(f"no dataset {dataset_name!r} on the Hub (check --dataset_name; for a gated or private "
                        "dataset run `hf auth login`)") from None
    except RevisionNotFoundError:
        raise DataError(f"the Hub dataset {dataset_name} has no revision {revision!r} (check --revision)") from None
    except HfHubHTTPError as error:
        raise DataError(f"the Hub refused {dataset_name}: {first_line(error)}") from None
    except Exception as error:  # no connection: huggingface_hub's HTTP client raises its own transport errors
        raise DataError(f"could not reach the Hub for {dataset_name} ({type(error).__name__}); "
                        + OFFLINE_HINT) from None


HUB_FILES_PREFIX = "hf://datasets/"


def is_hub_file(name) -> bool:
    return str(name).startswith(HUB_FILES_PREFIX)


def split_hub_url(url: str) -> tuple[str, str | None, str]:
    """hf://datasets/<owner>/<name>[@<revision>]/<path> -> (repo id, revision or None, path in the repository)."""
    parts = url[len(HUB_FILES_PREFIX) :].split("/", 2)
    if len(parts) < 3 or not parts[2]:
        raise DataError(f"--data_files {url}: write Hub files as hf://datasets/<owner>/<name>/<path or glob>, e.g. "
                        "hf://datasets/HuggingFaceFW/fineweb-edu/sample/10BT/*.parquet")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", revision or None, parts[2]


def resolve_hub_files(pattern: str) -> list[str]:
    """The files of a Hub dataset that `pattern` (hf://datasets/<owner>/<name>[@<revision>]/<path or glob>)
    names, in name order, as hf:// URLs pinned to the commit sha they were listed at (a rerun reads the same
    bytes). Offline or unreachable: one DataError line (`resolve_hub_dataset`)."""
    repo_id, revision, path = split_hub_url(pattern)
    sha = resolve_hub_dataset(repo_id, revision)
    from huggingface_hub import HfFileSystem

    root = f"datasets/{repo_id}@{sha}/"
    try:
        found = HfFileSystem().glob(root + path)
    except Exception as error:  # no connection, refused
        raise DataError(f"could not list {pattern} on the Hub ({type(error).__name__}: {first_line(error)}); "
                        + OFFLINE_HINT) from None
    files = sorted(f.split(f"@{sha}/", 1)[-1] for f in found)
    if not files:
        raise DataError(f"--data_files {pattern}: no file of {repo_id} (commit {sha[:12]}) matches {path!r}")
    return [f"{HUB_FILES_PREFIX}{repo_id}@{sha}/{f}" for f in files]


def download_hub_file(url: str) -> Path:
    """A pinned hf:// file (`resolve_hub_files`) in the Hugging Face cache (downloaded once; an interrupted
    download resumes); one DataError line when it cannot be fetched."""
    repo_id, revision, filename = split_hub_url(url)
    if hub_offline():
        raise DataError(f"cannot download {url} offline (HF_HUB_OFFLINE is set) and it is not cached; "
                        + OFFLINE_HINT)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))
    except Exception as error:  # no connection, removed, refused
        raise DataError(f"could not download {url} ({type(error).__name__}: {first_line(error)}); rerun to "
                        "continue (finished files are kept)") from None


def load_hub_text_dataset(dataset_name, dataset_config_name=None, split="train", streaming=False, data_files=None,
                          revision=None, num_proc=None):
    """The one call of `datasets.load_dataset` for Hub data (local `data_files` are read instead when given).
    The revision is pinned to the commit sha that `resolve_hub_dataset` finds; offline it fails at once."""
    if data_files:
        return load_local_text_dataset(data_files, streaming=streaming)
    if not dataset_name:
        raise DataError("no data: pass --dataset_name (Hub) or local files; " + OFFLINE_HINT)
    sha = resolve_hub_dataset(dataset_name, revision)
    import datasets

    try:
        extra = {} if streaming or not num_proc else {"num_proc": num_proc}  # parallel download and conversion
        return datasets.load_dataset(dataset_name, name=dataset_config_name, split=split, streaming=streaming,
                                     revision=sha, **extra)
    except (ConnectionError, OSError) as error:
        raise DataError(f"could not load {dataset_name} from the Hub ({type(error).__name__}: {first_line(error)}); "
                        + OFFLINE_HINT) from None


def local_or_hub_dir(name_or_path: str, flag: str, allow_patterns: list[str], kind: str = "checkpoint") -> Path:
    """A local directory as is; otherwise a Hub model repository's files matching `allow_patterns`,
    downloaded once (a cached copy serves offline). Offline with no copy: one line naming `flag`."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if looks_like_local_path(name_or_path):
        raise DataError(f"{flag} {name_or_path}: no such directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=allow_patterns))
    except Exception as error:  # offline, no such repository, gated...
        if hub_offline():
            raise DataError(f"{flag} {name_or_path} is not a local directory, and the Hugging Face Hub is offline "
                            f"(HF_HUB_OFFLINE=1) with no cached copy; pass a local {kind} directory") from None
        detail = " ".join(str(error).split())[:300]
        raise DataError(f"{flag} {name_or_path} is not a local directory, and could not be downloaded from the "
                        f"Hugging Face Hub ({type(error).__name__}: {detail}); pass a local {kind} directory") from None


def download_hub_files(repo_id: str, filenames: list[str], local_dir, repo_type: str = "dataset",
                       progress=None) -> list[Path]:
    """Files of a Hub repository into `local_dir` (huggingface_hub: an interrupted download resumes, a
    complete file is not fetched again). Offline or unreachable: one DataError line. A file name that would
    land outside `local_dir` (absolute, or with `..`) is refused first."""
    for filename in filenames:
        path_inside(local_dir, filename, f"{repo_id}: file")
    if hub_offline():
        raise DataError(f"cannot download {repo_id} offline (HF_HUB_OFFLINE is set); unset it, or copy the files "
                        f"into {local_dir} yourself")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    paths = []
    for filename in filenames:
        try:
            paths.append(Path(hf_hub_download(repo_id, filename, repo_type=repo_type, local_dir=local_dir)))
        except (RepositoryNotFoundError, EntryNotFoundError):
            raise DataError(f"{repo_id} ({repo_type}) has no file {filename} on the Hub") from None
        except HfHubHTTPError as error:
            raise DataError(f"the Hub refused {repo_id}/{filename}: {first_line(error)}") from None
        except Exception as error:  # no connection: huggingface_hub's HTTP client raises its own transport errors
            raise DataError(f"could not download {repo_id}/{filename} ({type(error).__name__}); check the "
                            "connection and rerun: finished files are kept, a partial one resumes") from None
        if progress is not None:
            progress(paths[-1])
    return paths
