"""Publishing: model card from a real run, offline/no-token errors up front, the uploaded file list,
and the wider ecosystem (pipeline, streamer, sampling, a to-gpt2 export without nanogpt2 code)."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

from nanogpt2.publish import PublishError, check_hub_access, files_to_upload, push_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_checkpoint import BLOCK_NANOGPT2  # noqa: E402

TINY = ["--preset", "tiny", "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--micro_batch_size", "4",
        "--sequence_length", "32", "--total_batch_size", "128", "--warmup_steps", "1", "--max_steps", "3",
        "--eval_steps", "3", "--save_steps", "3", "--eval_tokens", "512", "--num_samples", "0",
        "--hellaswag_limit", "8", "--report_to", "none"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tinyshakespeare_file, hellaswag_file):
    out = tmp_path_factory.mktemp("run")
    result = subprocess.run([sys.executable, "run_pretrain.py", *TINY, "--train_file", str(tinyshakespeare_file),
                             "--hellaswag_file", str(hellaswag_file), "--output_dir", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_model_card_from_the_run(run):
    card_path = run / "checkpoint-3" / "README.md"
    card = ModelCard.load(card_path)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [m for m in metrics if "val_loss" in m][-1]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"acc_norm": round(final["hellaswag_acc_norm"], 4), "loss": round(final["val_loss"], 4)}
    assert card.data.library_name == "transformers" and card.data.license == "mit"
    assert "nanogpt2" in card.data.tags and card.data.pipeline_tag == "text-generation"
    # metadata round-trips through huggingface_hub's model-index parser (the Hub's own format checks)
    name, parsed = model_index_to_eval_results(eval_results_to_model_index("m", card.data.eval_results))
    assert [r.metric_value for r in parsed] == [r.metric_value for r in card.data.eval_results]
    text = card_path.read_text()
    assert "tokens seen: 384" in text and "to-gpt2" in text and "trust_remote_code=True" in text
    assert (run / "checkpoint-3" / "training_curves.png").is_file()


def test_files_to_upload_are_the_checkpoint_model_files(run, monkeypatch):
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls["repo"] = (repo_id, kwargs)

        def create_commit(self, repo_id, operations, commit_message):
            calls["files"] = sorted(op.path_in_repo for op in operations)

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    push_checkpoint(run / "checkpoint-3", "someone/tiny", private=True)
    checkpoint = run / "checkpoint-3"
    expected = sorted(p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*")
                      if p.is_file() and "training_state" not in p.parts)
    assert calls["files"] == expected and "model.safetensors" in expected and "README.md" in expected
    assert calls["repo"] == ("someone/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert [p.name for p in files_to_upload(checkpoint)] == [Path(f).name for f in expected]


@pytest.mark.parametrize("env,message", [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
                                         ({"HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}, "no token")])
def test_push_fails_fast_before_training(env, message, tmp_path, tinyshakespeare_file, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login token
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(PublishError, match=message):
        check_hub_access("someone/tiny")
    start = time.time()
    result = subprocess.run([sys.executable, "run_pretrain.py", *TINY, "--train_file", str(tinyshakespeare_file),
                             "--output_dir", str(tmp_path / "run"), "--push_to_hub", "--hub_model_id", "someone/tiny"],
                            cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert result.returncode == 1 and message in result.stderr.strip().splitlines()[-1]
    assert time.time() - start < 60 and not (tmp_path / "run" / "metrics.jsonl").exists()
    cli = subprocess.run([sys.executable, "-m", "nanogpt2.publish", str(tmp_path), "someone/tiny"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env={**os.environ})
    assert cli.returncode == 1 and message in cli.stderr


def test_pipeline_streamer_and_sampling(run):
    from transformers import AutoTokenizer, TextIteratorStreamer, pipeline

    import nanogpt2  # noqa: F401

    checkpoint = str(run / "checkpoint-3")
    generator = pipeline("text-generation", model=checkpoint)
    text = generator("ROMEO:", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("ROMEO:")
    model, tokenizer = generator.model, AutoTokenizer.from_pretrained(checkpoint)
    inputs = tokenizer("ROMEO:", return_tensors="pt")
    sampled = model.generate(**inputs, do_sample=True, top_k=20, top_p=0.9, temperature=0.8, max_new_tokens=6,
                             min_new_tokens=6)
    assert sampled.shape[1] == inputs["input_ids"].shape[1] + 6 and sampled.max() < 50257
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    import threading

    thread = threading.Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=6,
                                                                 do_sample=False))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    greedy = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert streamed == tokenizer.decode(greedy[0, inputs["input_ids"].shape[1]:])


def test_ecosystem_without_nanogpt2(run, tmp_path):
    subprocess.run([sys.executable, "-m", "nanogpt2.convert", "to-gpt2", str(run / "checkpoint-3"),
                    str(tmp_path / "gpt2")], check=True, capture_output=True, cwd=REPO)
    code = BLOCK_NANOGPT2 + textwrap.dedent(f"""
        from transformers import GPT2LMHeadModel, pipeline
        model = GPT2LMHeadModel.from_pretrained({str(tmp_path / 'gpt2')!r})
        out = pipeline("text-generation", model={str(tmp_path / 'gpt2')!r})("ROMEO:", max_new_tokens=4, do_sample=False)
        remote = pipeline("text-generation", model={str(run / 'checkpoint-3')!r}, trust_remote_code=True)
        same = remote("ROMEO:", max_new_tokens=4, do_sample=False)
        assert out[0]["generated_text"] == same[0]["generated_text"], (out, same)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_lm_evaluation_harness_loglikelihoods_equal_ours(run, hellaswag_file):
    """EleutherAI lm-evaluation-harness's HF wrapper loads the checkpoint and scores HellaSwag endings
    exactly as our harness-style scorer does."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM

    from nanogpt2.hellaswag import evaluate_hellaswag, harness_preprocess, load_hellaswag
    from nanogpt2.tokenizer import load_tokenizer

    checkpoint = str(run / "checkpoint-3")
    examples = load_hellaswag(hellaswag_file, limit=4)
    harness = HFLM(pretrained=checkpoint, backend="causal", batch_size=4, device="cpu")
    requests = [
        Instance(request_type="loglikelihood", doc=example, idx=i, arguments=(
            harness_preprocess(example["activity_label"] + ": " + example["ctx_a"] + " "
                               + example["ctx_b"].capitalize()), " " + harness_preprocess(ending)))
        for example in examples for i, ending in enumerate(example["endings"])]
    theirs = [-loglikelihood for loglikelihood, _ in harness.loglikelihood(requests, disable_tqdm=True)]
    ours = evaluate_hellaswag(AutoModelForCausalLM.from_pretrained(checkpoint), load_tokenizer(), examples,
                              style="harness", progress=False)
    ours = [loss for prediction in ours["predictions"] for loss in prediction["sum_losses"]]
    assert max(abs(a - b) for a, b in zip(theirs, ours)) < 1e-3 and len(ours) == 16
