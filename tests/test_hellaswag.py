"""HellaSwag: batched scoring equals a plain per-example reference, both styles, bad inputs, 2 processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.checkpoint import save_model_checkpoint
from nanogpt2.hellaswag import (HELLASWAG_SHA256, HellaSwagError, evaluate_hellaswag, harness_preprocess,
                                load_hellaswag, render_example, verify_sha256)
from nanogpt2.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def examples(hellaswag_file):
    return load_hellaswag(hellaswag_file, limit=120)


def tiny_models():
    torch.manual_seed(0)
    ours = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=256)).eval()
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=256)).eval()
    return {"nanogpt2": ours, "hf-gpt2": hf}


def reference_losses(model, example, encode, style):
    """One forward per ending, no batching, no padding: the plainest possible scorer."""
    rows, starts, _ = render_example(example, encode, style)
    sums, means = [], []
    for row, start in zip(rows, starts):
        ids = torch.tensor([row])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1, :50257]
        losses = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")[start - 1 :]
        sums.append(losses.sum().item())
        means.append(losses.mean().item())
    return sums, means


@pytest.mark.parametrize("style", ["completion", "harness"])
@pytest.mark.parametrize("name", ["nanogpt2", "hf-gpt2"])
def test_batched_scores_equal_per_example_reference(name, style, examples):
    model = tiny_models()[name]
    tokenizer = load_tokenizer() if name == "nanogpt2" else load_tokenizer().to_hf()
    result = evaluate_hellaswag(model, tokenizer, examples, style=style, batch_size=16, progress=False)
    encode = load_tokenizer().encode_ordinary
    for example, prediction in zip(examples[:40], result["predictions"][:40]):
        sums, means = reference_losses(model, example, encode, style)
        assert max(abs(a - b) for a, b in zip(sums, prediction["sum_losses"])) < 1e-4
        assert max(abs(a - b) for a, b in zip(means, prediction["mean_losses"])) < 1e-5
        assert prediction["pred"] == min(range(4), key=sums.__getitem__)
    assert result["num_examples"] == 120 and result["style"] == style
    assert result["indomain"]["num_examples"] + result["zeroshot"]["num_examples"] == 120


def test_harness_preprocessing():
    # harness strips first, so a removed leading tag leaves its space (as lm-evaluation-harness does)
    assert harness_preprocess(" [header] How to bake bread [title] Mix the flour.  ") == \
        " How to bake bread. Mix the flour."
    assert harness_preprocess("Then [step] they  go.") == "Then they go."
    example = {"activity_label": "Baking cookies", "ctx_a": "A man pours flour.", "ctx_b": "then he",
               "ctx": "", "endings": ["adds eggs [title] Stir.", "b", "c", "d"], "label": 0}
    encode = load_tokenizer().encode_ordinary
    rows, starts, char_lengths = render_example(example, encode, "harness")
    assert load_tokenizer().decode(rows[0]) == "Baking cookies: A man pours flour. Then he adds eggs. Stir."
    assert char_lengths[0] == len("adds eggs. Stir.")
    assert load_tokenizer().decode(rows[0][starts[0]:]) == " adds eggs. Stir."


def test_sha256_check(hellaswag_file, tmp_path):
    verify_sha256(hellaswag_file, HELLASWAG_SHA256["validation"])
    altered = tmp_path / "hellaswag_val.jsonl"
    altered.write_bytes(hellaswag_file.read_bytes()[:-10])
    with pytest.raises(HellaSwagError, match="sha256"):
        verify_sha256(altered, HELLASWAG_SHA256["validation"])


def good_line(**changes):
    example = {"ind": 0, "activity_label": "x", "ctx_a": "a", "ctx_b": "b", "ctx": "a b",
               "endings": ["1", "2", "3", "4"], "label": 1, "split_type": "indomain"}
    example.update(changes)
    return json.dumps(example)


@pytest.mark.parametrize("lines,message", [
    ([good_line(), "{not json"], ":2: malformed JSON"),
    ([good_line(label=7)], ":1: label 7 is not one of 0..3"),
    ([good_line(), good_line(endings=["1", "2", "3"])], ":2: expected 4 endings"),
    ([good_line(ctx_b=None) .replace('"ctx_b": null, ', "")], "missing field 'ctx_b'"),
])
def test_bad_lines_name_file_and_line(lines, message, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HellaSwagError, match=message):
        load_hellaswag(path)


def test_missing_file_and_truncation(tmp_path, examples):
    with pytest.raises(HellaSwagError, match="does not exist"):
        load_hellaswag(tmp_path / "nope.jsonl")
    model = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=1, n_head=1, n_embd=16, n_positions=48)).eval()
    result = evaluate_hellaswag(model, load_tokenizer(), examples[:30], progress=False)
    assert 0 < result["num_truncated"] <= 30 and result["num_examples"] == 30


def test_cli_one_and_two_processes_agree(tmp_path, hellaswag_file):
    torch.manual_seed(0)
    save_model_checkpoint(NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=256)),
                          tmp_path / "ckpt")
    common = ["eval_hellaswag.py", "--model", str(tmp_path / "ckpt"), "--data_file", str(hellaswag_file),
              "--limit", "30", "--batch_size", "8"]
    outputs = {}
    for processes, launcher in ((1, [sys.executable]), (2, [sys.executable, "-m", "accelerate.commands.launch",
                                                            "--config_file", "accelerate_configs/cpu_2proc.yaml"])):
        out = tmp_path / f"results{processes}.json"
        preds = tmp_path / f"preds{processes}.jsonl"
        result = subprocess.run(launcher + common + ["--output_file", str(out), "--predictions_file", str(preds)],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[processes] = (json.loads(out.read_text()), preds.read_text().splitlines())
    (one, one_preds), (two, two_preds) = outputs[1], outputs[2]
    assert one["acc"] == two["acc"] and one["acc_norm"] == two["acc_norm"] and two["num_examples"] == 30
    assert [json.loads(p)["pred"] for p in one_preds] == [json.loads(p)["pred"] for p in two_preds]
    for key in ("acc", "acc_norm", "num_examples", "style", "model", "indomain", "zeroshot"):
        assert key in one


def test_cli_bad_model_path(hellaswag_file):
    result = subprocess.run([sys.executable, "eval_hellaswag.py", "--model", "/nonexistent/ckpt", "--data_file",
                             str(hellaswag_file), "--limit", "2"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "not a checkpoint directory" in result.stderr
