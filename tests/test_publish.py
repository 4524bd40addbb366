"""Publishing: the model card of a real tiny run_pretrain.py run, Hub access errors up front (offline, no
token, bad token, wrong namespace), the exact uploaded file list; and the wider ecosystem on that run's
checkpoint: pipeline, sampling, streamer, lm-evaluation-harness, a to-gpt2 export without nanogpt2."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import (
    eval_results_to_model_index,
    model_index_to_eval_results,
)

from nanogpt2.errors import PublishError
from nanogpt2.model_card import write_model_card
from nanogpt2.publish import check_hub_access, files_to_upload, push_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_checkpoint import BLOCK_NANOGPT2  # noqa: E402
from user_errors import pretrain_main  # noqa: E402

TINY = ["--preset", "tiny", "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--micro_batch_size", "4",
        "--sequence_length", "32", "--total_batch_size", "128", "--warmup_steps", "1", "--max_steps", "3",
        "--eval_steps", "3", "--save_steps", "3", "--eval_tokens", "512", "--num_samples", "0",
        "--hellaswag_limit", "8", "--report_to", "none"]
FLAGS = dict(zip(TINY[::2], TINY[1::2]))
STEPS = int(FLAGS["--max_steps"])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tinyshakespeare_file, hellaswag_file):
    """A tiny run of run_pretrain.py, in this process (no interpreter start-up)."""
    out = tmp_path_factory.mktemp("run")
    assert pretrain_main([*TINY, "--train_file", str(tinyshakespeare_file), "--hellaswag_file",
                              str(hellaswag_file), "--output_dir", str(out)]) == 0
    return out


@pytest.fixture
def checkpoint_copy(run, tmp_path):
    return Path(shutil.copytree(run / f"checkpoint-{STEPS}", tmp_path / f"checkpoint-{STEPS}"))


@pytest.mark.slow
def test_model_card_from_the_run(run):
    checkpoint = run / f"checkpoint-{STEPS}"
    card = ModelCard.load(checkpoint / "README.md", ignore_metadata_errors=False)  # huggingface_hub's parser
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [m for m in metrics if "val_loss" in m][-1]
    assert final["hellaswag_num_examples"] == 8 and final["val_tokens"] == 512
    # 8 HellaSwag examples are no validation-split result: only the loss goes into model-index
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("loss", round(final["val_loss"], 4))]
    assert "512 tokens" in card.data.eval_results[0].metric_name
    assert card.data.library_name == "transformers" and card.data.license == "mit"
    assert "nanogpt2" in card.data.tags and card.data.pipeline_tag == "text-generation"
    # huggingface_hub's own model-index checks: the metadata round-trips through its parser and writer
    metadata = card.data.to_dict()
    name, parsed = model_index_to_eval_results(metadata["model-index"])
    assert eval_results_to_model_index(name, parsed) == metadata["model-index"]
    assert ModelCardData(**metadata).to_dict() == metadata
    text = card.text
    tokens = STEPS * int(FLAGS["--total_batch_size"])
    assert f"steps: {STEPS}; tokens seen: {tokens:,}" in text
    assert "- hardware: CPU (1 process); time in optimizer steps: " in text or torch.cuda.is_available()
    assert f"| HellaSwag acc_norm (completion style) | {final['hellaswag_acc_norm']:.4f} | 8 of the 10,042 " in text
    assert f"| validation loss (nats) | {final['val_loss']:.4f} | 512 held-out tokens of input.txt |" in text
    # no local absolute path: not the checkpoint's, not the data files' (base names only)
    assert str(run) not in text and str(REPO) not in text and "/shared/data" not in text
    assert "| `hellaswag_file` | `hellaswag_val.jsonl` |" in text
    assert f"to-gpt2 path/to/checkpoint-{STEPS}" in text and "huggingface.co/docs/transformers/model_doc/gpt2" in text
    assert "FineWeb-Edu" not in text  # Tiny Shakespeare: no FineWeb-Edu reference
    assert ".tmp-" not in text and f"| `max_steps` | `{STEPS}` |" in text and "hub_model_id" not in text
    assert "](training_curves.png)" in text and (checkpoint / "training_curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_model_card_usage_runs_as_written_without_nanogpt2(run, tmp_path):
    """The card's Python usage, with its placeholder path at the checkpoint, in a fresh process where
    nanogpt2 cannot be imported and stdin is closed: it loads and generates without asking anything."""
    import re

    checkpoint = run / f"checkpoint-{STEPS}"
    usage = re.search(r"```python\n(.*?)```", (checkpoint / "README.md").read_text(), flags=re.S).group(1)
    assert f'"path/to/checkpoint-{STEPS}"' in usage
    (tmp_path / "path" / "to").mkdir(parents=True)
    (tmp_path / "path" / "to" / f"checkpoint-{STEPS}").symlink_to(checkpoint)
    result = subprocess.run([sys.executable, "-c", BLOCK_NANOGPT2 + usage], cwd=tmp_path, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("Hello, I'm a language model,")
    assert "custom code" not in result.stdout + result.stderr and "model of type" not in result.stderr


def test_model_card_rewritten_for_the_hub_and_without_a_run(run, checkpoint_copy):
    before = (checkpoint_copy / "README.md").read_text()
    state = checkpoint_copy / "training_state" / "trainer_state.json"
    recorded = json.loads(state.read_text())["hardware"]
    state.write_text(json.dumps({**json.loads(state.read_text()), "hardware": "8 x Recorded GPU"}))
    (checkpoint_copy / "README.md").write_text(before.replace(recorded, "Something Else"))  # never read back
    write_model_card(checkpoint_copy, run, repo_id="someone/tiny-shakespeare")
    card = ModelCard.load(checkpoint_copy / "README.md")
    assert card.data.model_name == "tiny-shakespeare" and 'from_pretrained("someone/tiny-shakespeare"' in card.text
    assert "- hardware: 8 x Recorded GPU; time in optimizer steps" in card.text  # the training machine's
    assert not list(checkpoint_copy.glob(".*"))  # temporary files replaced into place
    (checkpoint_copy / "README.md").unlink()
    bare = ModelCard.load(write_model_card(checkpoint_copy))
    assert bare.data.eval_results is None and "No evaluation was run yet." in bare.text


def test_files_to_upload_are_the_checkpoint_model_files(run, monkeypatch):
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls["repo"] = (repo_id, kwargs)

        def create_commit(self, repo_id, operations, commit_message):
            calls["files"] = sorted(op.path_in_repo for op in operations)
            calls["message"] = commit_message

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    checkpoint = run / f"checkpoint-{STEPS}"
    push_checkpoint(checkpoint, "someone/tiny", private=True)
    expected = sorted(p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*")
                      if p.is_file() and "training_state" not in p.parts)
    assert calls["files"] == expected and {"model.safetensors", "README.md", "config.json"} <= set(expected)
    assert (checkpoint / "training_state").is_dir()
    assert calls["repo"] == ("someone/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["message"] == f"Upload checkpoint-{STEPS} with nanogpt2"
    assert [p.relative_to(checkpoint).as_posix() for p in files_to_upload(checkpoint)] == expected
    # --hub_strategy checkpoint: the whole checkpoint, training state included, also under last-checkpoint/
    push_checkpoint(checkpoint, "someone/tiny", last_checkpoint=True)
    everything = sorted(p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file())
    assert calls["files"] == sorted(expected + [f"last-checkpoint/{name}" for name in everything])
    assert "last-checkpoint/training_state/trainer_state.json" in calls["files"]

    class FailingApi(FakeApi):
        def create_commit(self, repo_id, operations, commit_message):
            raise ConnectionError("connection reset")

    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    with pytest.raises(PublishError, match=f"retry with python -m nanogpt2.publish {checkpoint} someone/tiny"):
        push_checkpoint(checkpoint, "someone/tiny")
    with pytest.raises(PublishError, match="not a model checkpoint"):
        push_checkpoint(run, "someone/tiny")


def _whoami_raising(error):
    def whoami(self, token=None):
        raise error
    return whoami


WHOAMI = {"name": "alice", "orgs": [{"name": "lab"}], "auth": {"accessToken": {"role": "write"}}}


@pytest.mark.parametrize("repo_id,token,whoami,message", [
    ("someone/tiny", None, None, "no token; run `hf auth login` or set HF_TOKEN"),
    ("not a repo id!", "hf_x", None, "is not a valid repository id"),
    ("alice/tiny", "hf_x", _whoami_raising(ConnectionError("DNS")), "cannot reach the Hub"),
    ("alice/tiny", "hf_x", lambda self, token=None: {**WHOAMI, "auth": {"accessToken": {"role": "read"}}},
     "read-only"),
    ("bob/tiny", "hf_x", lambda self, token=None: WHOAMI, "can write to alice, lab only"),
])
def test_hub_access_errors(repo_id, token, whoami, message, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
    if whoami:
        monkeypatch.setattr(huggingface_hub.HfApi, "whoami", whoami)
    with pytest.raises(PublishError, match=message.replace("(", r"\(")) as error:
        check_hub_access(repo_id)
    assert "\n" not in str(error.value)


def test_hub_access_allowed_for_the_user_and_its_orgs(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_x")
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self, token=None: WHOAMI)
    for repo_id in ("alice/tiny", "lab/tiny", "tiny"):
        check_hub_access(repo_id)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set"):
        check_hub_access("alice/tiny")


def _offline_env(tmp_path, offline: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    return {**env, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1" if offline else "0"}


@pytest.mark.slow
def test_run_pretrain_push_to_hub_without_token_stops_before_training(tmp_path, tinyshakespeare_file):
    output_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "run_pretrain.py", *TINY, "--train_file", str(tinyshakespeare_file),
                             "--output_dir", str(output_dir), "--push_to_hub", "--hub_model_id", "someone/tiny"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, env=_offline_env(tmp_path, False))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot push to the Hub: no token")
    assert not (output_dir / "metrics.jsonl").exists() and not list(output_dir.glob("checkpoint-*"))


@pytest.mark.slow
def test_publish_cli_offline_stops_before_touching_the_checkpoint(checkpoint_copy, tmp_path):
    card = (checkpoint_copy / "README.md").read_text()
    result = subprocess.run([sys.executable, "-m", "nanogpt2.publish", str(checkpoint_copy), "someone/tiny"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, env=_offline_env(tmp_path, True))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot push to the Hub: HF_HUB_OFFLINE is set")
    assert (checkpoint_copy / "README.md").read_text() == card


# -- the wider ecosystem ---------------------------------------------------------------------------------

def test_pipeline_sampling_and_streamer(run):
    from transformers import AutoTokenizer, TextIteratorStreamer, pipeline, set_seed

    import nanogpt2  # noqa: F401  (registers the Auto classes)

    checkpoint = str(run / f"checkpoint-{STEPS}")
    generator = pipeline("text-generation", model=checkpoint)
    model, tokenizer = generator.model, AutoTokenizer.from_pretrained(checkpoint)
    inputs = tokenizer("ROMEO:", return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    greedy = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert generator("ROMEO:", max_new_tokens=6, min_new_tokens=6, do_sample=False)[0]["generated_text"] == \
        tokenizer.decode(greedy[0])

    def sample(**kwargs):
        set_seed(0)
        return model.generate(**inputs, do_sample=True, max_new_tokens=6, min_new_tokens=6, **kwargs)

    assert torch.equal(sample(top_k=1, temperature=0.7), greedy)  # top-k 1 leaves only the argmax
    sampled = sample(top_k=50, top_p=0.9, temperature=1.5)
    assert torch.equal(sampled, sample(top_k=50, top_p=0.9, temperature=1.5))  # seeded: reproducible
    assert sampled.shape == greedy.shape and int(sampled.max()) < tokenizer.vocab_size  # never a padded row

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    thread = threading.Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=6,
                                                                 min_new_tokens=6, do_sample=False))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    assert streamed == tokenizer.decode(greedy[0, prompt_length:])


@pytest.mark.slow
def test_to_gpt2_export_and_remote_code_without_nanogpt2(run, tmp_path):
    from nanogpt2.convert import convert_to_gpt2

    checkpoint = run / f"checkpoint-{STEPS}"
    exported = convert_to_gpt2(str(checkpoint), str(tmp_path / "gpt2"))
    code = BLOCK_NANOGPT2 + textwrap.dedent(f"""
        try:
            import nanogpt2
            raise SystemExit("nanogpt2 should be unimportable here")
        except ImportError:
            pass
        from transformers import GPT2LMHeadModel, pipeline
        native = pipeline("text-generation", model={str(exported)!r})
        assert type(native.model) is GPT2LMHeadModel, type(native.model)
        remote = pipeline("text-generation", model={str(checkpoint)!r}, trust_remote_code=True)
        assert type(remote.model).__name__ == "NanoGPT2ForCausalLM"
        args = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
        a, b = native("ROMEO:", **args)[0]["generated_text"], remote("ROMEO:", **args)[0]["generated_text"]
        assert a == b and len(a) > len("ROMEO:"), (a, b)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_lm_evaluation_harness_loglikelihoods_equal_ours(run, hellaswag_file):
    """EleutherAI lm-evaluation-harness's HF wrapper loads the checkpoint (remote code, as `lm_eval --model hf
    --model_args pretrained=CKPT,trust_remote_code=True` does) and scores HellaSwag endings exactly as our
    harness-style scorer does."""
    pytest.importorskip("lm_eval", reason="lm_eval is in the dev extra: pip install -e '.[dev]'")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM

    from nanogpt2.hellaswag import (
        evaluate_hellaswag,
        harness_preprocess,
        load_hellaswag,
    )
    from nanogpt2.tokenizer import load_tokenizer

    checkpoint = str(run / f"checkpoint-{STEPS}")
    examples = load_hellaswag(hellaswag_file, limit=4)
    harness = HFLM(pretrained=checkpoint, backend="causal", batch_size=4, device="cpu", trust_remote_code=True)
    # lm_eval/tasks/hellaswag: context = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
    # continuation = " " + preprocess(ending)
    requests = [
        Instance(request_type="loglikelihood", doc=example, idx=i, arguments=(
            harness_preprocess(example["activity_label"] + ": " + example["ctx_a"] + " "
                               + example["ctx_b"].capitalize()), " " + harness_preprocess(ending)))
        for example in examples for i, ending in enumerate(example["endings"])]
    theirs = [-loglikelihood for loglikelihood, _ in harness.loglikelihood(requests, disable_tqdm=True)]
    ours = evaluate_hellaswag(AutoModelForCausalLM.from_pretrained(checkpoint), load_tokenizer(), examples,
                              style="harness", progress=False)
    ours = [loss for prediction in ours["predictions"] for loss in prediction["sum_losses"]]
    assert len(ours) == len(theirs) == 16
    assert max(abs(a - b) for a, b in zip(theirs, ours)) < 1e-3, (theirs, ours)


@pytest.mark.slow
def test_lm_eval_hellaswag_local_task_offline_equals_eval_hellaswag_harness(run, hellaswag_file, tmp_path):
    """The README's `lm_eval ... --tasks hellaswag_local` command, offline, on a tiny checkpoint: the shipped
    task gives the acc/acc_norm of `eval_hellaswag.py --style harness`, example by example."""
    pytest.importorskip("lm_eval", reason="lm_eval is in the dev extra: pip install -e '.[dev]'")
    from transformers import AutoModelForCausalLM

    from nanogpt2.hellaswag import evaluate_hellaswag, load_hellaswag
    from nanogpt2.lm_eval_tasks import TASKS_DIR
    from nanogpt2.tokenizer import load_tokenizer

    checkpoint, limit = run / f"checkpoint-{STEPS}", 12
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    tasks_dir = subprocess.run([sys.executable, "-m", "nanogpt2.lm_eval_tasks"], capture_output=True, text=True,
                               check=True, cwd=REPO).stdout.strip()
    assert tasks_dir == str(TASKS_DIR) and (TASKS_DIR / "hellaswag_local.yaml").is_file()
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
         f"pretrained={checkpoint},trust_remote_code=True", "--include_path", tasks_dir, "--tasks", "hellaswag_local",
         "--metadata", f"hellaswag_file={hellaswag_file}", "--batch_size", "8", "--device", "cpu",
         "--limit", str(limit), "--log_samples", "--output_path", str(tmp_path / "lm_eval")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = (tmp_path / "lm_eval").rglob("results_*.json")
    theirs = json.loads(results_file.read_text())["results"]["hellaswag_local"]
    [samples_file] = (tmp_path / "lm_eval").rglob("samples_hellaswag_local_*.jsonl")
    their_docs = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda d: d["doc_id"])

    ours = evaluate_hellaswag(AutoModelForCausalLM.from_pretrained(checkpoint), load_tokenizer(),
                              load_hellaswag(hellaswag_file, limit=limit), style="harness", progress=False)
    assert theirs["sample_len"] == ours["num_examples"] == limit
    assert (theirs["acc,none"], theirs["acc_norm,none"]) == (ours["acc"], ours["acc_norm"])
    assert [(d["acc"], d["acc_norm"]) for d in their_docs] == [
        (float(p["pred"] == p["label"]), float(p["pred_norm"] == p["label"])) for p in ours["predictions"]]
