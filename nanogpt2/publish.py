"""Publishing checkpoints to the Hugging Face Hub.

    python -m nanogpt2.publish runs/gpt2-124m/checkpoint-19073 USER/nanogpt2-124m [--private]

The token comes from HF_TOKEN or `hf auth login`. Access is checked first and fails in seconds with one
line saying what to do, so `run_pretrain.py --push_to_hub` never fails after hours of training. The
checkpoint's model card (README.md) is rewritten from the run's metrics.jsonl when the run directory is
at hand, then the checkpoint's model files are uploaded in one commit (never `training_state/`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transformers.utils import CONFIG_NAME

from .errors import PublishError, cli, first_line
from .run_dir import METRICS, TRAINING_STATE, has_metrics
from .sources import hub_offline

# what is uploaded: the model checkpoint; never the optimizer/RNG state, nor hidden/temporary files
EXCLUDED_DIRS = (TRAINING_STATE,)
LAST_CHECKPOINT = "last-checkpoint"  # the repository folder of --hub_strategy checkpoint (transformers' name)


def check_hub_access(repo_id: str | None, private: bool = False) -> None:
    """Raise PublishError at once when pushing to `repo_id` cannot work: bad id, offline, no token, an
    invalid or read-only token, or a namespace the token cannot write to. One `whoami` call, no upload."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not repo_id:
        raise PublishError("--push_to_hub needs --hub_model_id USER/NAME (the Hub repository to create or update)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"--hub_model_id {repo_id!r} is not a valid repository id: {error}") from None
    if hub_offline():
        raise PublishError("cannot push to the Hub: HF_HUB_OFFLINE is set; unset it or drop --push_to_hub "
                           "(checkpoints stay in --output_dir; push one later with python -m nanogpt2.publish)")
    token = get_token()
    if not token:
        raise PublishError("cannot push to the Hub: no token; run `hf auth login` or set HF_TOKEN to a token "
                           "with write access (https://huggingface.co/settings/tokens)")
    try:
        user = HfApi().whoami(token=token)
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise PublishError("cannot push to the Hub: the token is invalid or expired; run `hf auth login` "
                               "again or set HF_TOKEN") from None
        raise PublishError(f"cannot push to the Hub: whoami failed (HTTP {status}); retry later or drop "
                           "--push_to_hub") from None
    except (OSError, ConnectionError) as error:  # DNS, refused connection, timeout
        raise PublishError(f"cannot reach the Hub ({type(error).__name__}); check the network (or HF_ENDPOINT), "
                           "or drop --push_to_hub and push later with python -m nanogpt2.publish") from None
    role = user.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise PublishError(f"cannot push to the Hub: the token of {user['name']} is read-only; create a write "
                           "token at https://huggingface.co/settings/tokens")
    namespace = repo_id.split("/")[0] if "/" in repo_id else user["name"]
    allowed = {user["name"]} | {org["name"] for org in user.get("orgs", [])}
    if namespace not in allowed:
        raise PublishError(f"cannot push to {repo_id}: the token of {user['name']} can write to "
                           f"{', '.join(sorted(allowed))} only; change --hub_model_id")


def files_to_upload(checkpoint_dir) -> list[Path]:
    """The checkpoint's model files: weights, config, tokenizer, code, model card, plot."""
    root = Path(checkpoint_dir)
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.relative_to(root).parts[0] not in EXCLUDED_DIRS)


def check_checkpoint_dir(checkpoint_dir) -> Path:
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise PublishError(f"checkpoint directory {root} does not exist; pass a checkpoint-<step> directory "
                           "written by run_pretrain.py")
    if not (root / CONFIG_NAME).is_file() or not list(root.glob("*.safetensors")):
        raise PublishError(f"{root} is not a model checkpoint (needs config.json and *.safetensors); pass a "
                           "checkpoint-<step> directory written by run_pretrain.py")
    return root


def push_checkpoint(checkpoint_dir, repo_id: str, private: bool = False, commit_message: str | None = None,
                    last_checkpoint: bool = False):
    """Create the repository if needed and upload the checkpoint's model files in one commit. With
    `last_checkpoint` (--hub_strategy checkpoint, as in transformers) the same commit also puts the whole
    checkpoint, training state included, into the repository's `last-checkpoint/` folder, for resuming.
    Returns huggingface_hub's CommitInfo; a failed upload raises PublishError saying how to retry."""
    from huggingface_hub import CommitOperationAdd, HfApi

    root = check_checkpoint_dir(checkpoint_dir)
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(root).as_posix(), path_or_fileobj=str(p))
                  for p in files_to_upload(root)]
    if last_checkpoint:
        operations += [CommitOperationAdd(path_in_repo=f"{LAST_CHECKPOINT}/{p.relative_to(root).as_posix()}",
                                          path_or_fileobj=str(p))
                       for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.create_commit(repo_id, operations=operations,
                                 commit_message=commit_message or f"Upload {root.name} with nanogpt2")
    except (OSError, ConnectionError) as error:  # HfHubHTTPError is an OSError
        raise PublishError(f"pushing {root} to {repo_id} failed ({first_line(error)}); the checkpoint is intact, "
                           f"retry with python -m nanogpt2.publish {root} {repo_id}") from None


@cli
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanogpt2.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", help="a checkpoint-<step> directory written by run_pretrain.py")
    parser.add_argument("repo_id", help="USER/NAME or ORG/NAME on the Hub (created when missing)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--run_dir", help="the run directory with metrics.jsonl and config.json, for the model "
                                          "card (default: the checkpoint's parent directory)")
    parser.add_argument("--commit_message", help="default: 'Upload checkpoint-<step> with nanogpt2'")
    args = parser.parse_args(argv)
    checkpoint = check_checkpoint_dir(args.checkpoint_dir)
    run_dir = Path(args.run_dir) if args.run_dir else checkpoint.resolve().parent
    if args.run_dir and not has_metrics(run_dir):
        raise PublishError(f"--run_dir {run_dir} has no {METRICS}; pass the run directory that holds it")
    check_hub_access(args.repo_id, args.private)
    from .model_card import write_model_card

    try:
        if has_metrics(run_dir):
            write_model_card(checkpoint, run_dir, repo_id=args.repo_id)
        elif not (checkpoint / "README.md").is_file():  # keep a card written during training
            write_model_card(checkpoint, repo_id=args.repo_id)
    except json.JSONDecodeError as error:  # a damaged config.json of the run or checkpoint
        raise PublishError(f"could not read the run's JSON files for the model card ({error.msg}, line "
                           f"{error.lineno}); check config.json in {args.checkpoint_dir} and its run "
                           "directory") from None
    push_checkpoint(checkpoint, args.repo_id, args.private, args.commit_message)
    print(f"pushed {checkpoint} to https://huggingface.co/{args.repo_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
