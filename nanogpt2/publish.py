"""Publishing checkpoints to the Hugging Face Hub.

    python -m nanogpt2.publish runs/gpt2-124m/checkpoint-19073 USER/nanogpt2-124m [--private]

The token comes from HF_TOKEN or `hf auth login`. Access is checked first and fails in seconds with one
line saying what to do, so `run_pretrain.py --push_to_hub` never fails after hours of training.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# what is uploaded: the model checkpoint; never the optimizer/RNG state or temporary files
EXCLUDED_DIRS = ("training_state",)


class PublishError(RuntimeError):
    pass


def check_hub_access(repo_id: str | None, private: bool = False) -> None:
    """Raise PublishError at once when pushing to `repo_id` cannot work (offline, no token, bad id)."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.utils import validate_repo_id

    if not repo_id:
        raise PublishError("--push_to_hub needs --hub_model_id USER/NAME")
    try:
        validate_repo_id(repo_id)
    except Exception as error:  # HFValidationError
        raise PublishError(f"--hub_model_id {repo_id!r} is not a valid repository id ({error})") from None
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise PublishError("cannot push to the Hub: HF_HUB_OFFLINE is set; unset it or drop --push_to_hub "
                           "(checkpoints stay in --output_dir; push later with python -m nanogpt2.publish)")
    token = get_token()
    if not token:
        raise PublishError("cannot push to the Hub: no token; run `hf auth login` or set HF_TOKEN "
                           "(a token with write access)")
    try:
        user = HfApi().whoami(token=token)
    except Exception as error:  # offline, DNS, 401
        raise PublishError(f"cannot reach the Hub or the token is invalid ({type(error).__name__}); check the "
                           "network and HF_TOKEN, or drop --push_to_hub") from None
    namespace = repo_id.split("/")[0] if "/" in repo_id else user["name"]
    allowed = {user["name"]} | {org["name"] for org in user.get("orgs", [])}
    if namespace not in allowed:
        raise PublishError(f"the token of {user['name']} cannot write to {namespace}/ (allowed: "
                           f"{', '.join(sorted(allowed))})")


def files_to_upload(checkpoint_dir) -> list[Path]:
    root = Path(checkpoint_dir)
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and not p.relative_to(root).parts[0] in EXCLUDED_DIRS)


def push_checkpoint(checkpoint_dir, repo_id: str, private: bool = False, commit_message: str | None = None):
    """Create the repository if needed and upload the checkpoint's model files in one commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    root = Path(checkpoint_dir)
    if not (root / "config.json").is_file():
        raise PublishError(f"{root} is not a checkpoint directory (no config.json)")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(root).as_posix(), path_or_fileobj=str(p))
                  for p in files_to_upload(root)]
    return api.create_commit(repo_id, operations=operations,
                             commit_message=commit_message or f"Upload {root.name} with nanogpt2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanogpt2.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir")
    parser.add_argument("repo_id", help="USER/NAME or ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--run_dir", help="the run directory (for the model card's metrics; default: the parent)")
    args = parser.parse_args(argv)
    try:
        check_hub_access(args.repo_id, args.private)
        from .model_card import write_model_card

        run_dir = Path(args.run_dir) if args.run_dir else Path(args.checkpoint_dir).resolve().parent
        write_model_card(args.checkpoint_dir, run_dir if (run_dir / "metrics.jsonl").is_file() else None,
                         repo_id=args.repo_id)
        push_checkpoint(args.checkpoint_dir, args.repo_id, args.private)
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"pushed {args.checkpoint_dir} to https://huggingface.co/{args.repo_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
