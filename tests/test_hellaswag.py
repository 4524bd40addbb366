"""HellaSwag: batched scoring equals a plain per-example reference, both styles, bad inputs, 2 processes."""

import contextlib
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from user_errors import two_process_launch

from eval_hellaswag import PREDICTION_FIELDS, load_model_and_tokenizer
from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.checkpoint import save_model_checkpoint
from nanogpt2.errors import ConversionError, DataError, HellaSwagError
from nanogpt2.fileio import verify_sha256
from nanogpt2.hellaswag import (
    evaluate_hellaswag,
    harness_preprocess,
    load_hellaswag,
    render_example,
)
from nanogpt2.sources import HELLASWAG_SHA256
from nanogpt2.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
NUM_EXAMPLES = 48  # both split types (indomain, zeroshot); the reference scores each ending alone


@pytest.fixture(scope="module")
def examples(hellaswag_file):
    return load_hellaswag(hellaswag_file, limit=NUM_EXAMPLES)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def tiny_model(name):
    torch.manual_seed(0)
    if name == "nanogpt2":
        return NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=256)).eval()
    if name == "hf-gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=256)).eval()
    # a model type scored through its own forward (not the head-on-hidden-states path)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2,
                                        max_position_embeddings=256)).eval()


@contextlib.contextmanager
def one_thread():
    """Single-row forwards of a tiny model are fastest on one thread (no OpenMP spinning on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def reference_losses(model, example, encode, style):
    """One forward per ending, no batching, no padding: summed and mean ending losses, and token counts."""
    rows, starts, _ = render_example(example, encode, style)
    sums, means, counts = [], [], []
    for row, start in zip(rows, starts):
        ids = torch.tensor([row])
        ending = ids[0, start:]
        logits = model(ids, logits_to_keep=len(ending) + 1).logits[0, :-1, :50257]
        losses = torch.nn.functional.cross_entropy(logits.float(), ending, reduction="none")
        sums.append(losses.sum().item())
        means.append(losses.mean().item())
        counts.append(len(ending))
    return sums, means, counts


def assert_matches_reference(model, examples, predictions, encode, style):
    with one_thread():
        for example, prediction in zip(examples, predictions, strict=True):
            sums, means, counts = reference_losses(model, example, encode, style)
            assert prediction["ind"] == example["ind"] and prediction["label"] == example["label"]
            for ours, theirs, count in zip(prediction["sum_losses"], sums, counts):
                assert abs(ours - theirs) <= 1e-5 * count, (example["ind"], ours, theirs)  # 1e-5 per token
            assert max(abs(a - b) for a, b in zip(prediction["mean_losses"], means)) < 1e-5, example["ind"]
            assert prediction["pred"] == min(range(4), key=sums.__getitem__)
            if style == "completion":
                assert prediction["pred_norm"] == min(range(4), key=means.__getitem__)
            else:
                char_lengths = render_example(example, encode, style)[2]
                assert prediction["pred_norm"] == min(range(4), key=lambda i: sums[i] / char_lengths[i])


@pytest.mark.parametrize("style", ["completion", "harness"])
@pytest.mark.parametrize("name", ["nanogpt2", "hf-gpt2"])
def test_batched_scores_equal_per_example_reference(name, style, examples, tokenizer):
    model = tiny_model(name)
    given_tokenizer = tokenizer if name == "nanogpt2" else tokenizer.to_hf()
    result = evaluate_hellaswag(model, given_tokenizer, examples, style=style, batch_size=16, progress=False)
    assert_matches_reference(model, examples, result["predictions"], tokenizer.encode_ordinary, style)
    predictions = result["predictions"]
    assert result["num_examples"] == NUM_EXAMPLES and result["style"] == style and result["num_truncated"] == 0
    assert result["acc"] == sum(p["pred"] == p["label"] for p in predictions) / NUM_EXAMPLES
    assert result["acc_norm"] == sum(p["pred_norm"] == p["label"] for p in predictions) / NUM_EXAMPLES
    for split_type in ("indomain", "zeroshot"):
        mine = [p for p in predictions if p["split_type"] == split_type]
        assert result[split_type]["num_examples"] == len(mine) > 0
        assert result[split_type]["acc_norm"] == sum(p["pred_norm"] == p["label"] for p in mine) / len(mine)


def test_other_model_types_use_their_own_forward(examples, tokenizer):
    model = tiny_model("llama")
    result = evaluate_hellaswag(model, tokenizer.to_hf(), examples[:16], style="harness", batch_size=8,
                                progress=False)
    assert_matches_reference(model, examples[:16], result["predictions"], tokenizer.encode_ordinary, "harness")


def test_compiled_model_and_training_mode_restored(examples, tokenizer):
    model = tiny_model("nanogpt2").train()
    compiled = torch.compile(model, backend="eager")
    plain = evaluate_hellaswag(model, tokenizer, examples[:20], progress=False)
    assert model.training  # evaluation leaves the mode as it found it
    through_compile = evaluate_hellaswag(compiled, tokenizer, examples[:20], progress=False)
    assert [p["sum_losses"] for p in plain["predictions"]] == [p["sum_losses"] for p in through_compile["predictions"]]


def test_harness_preprocessing(tokenizer):
    # harness strips first, so a removed leading tag leaves its space (as lm-evaluation-harness does)
    assert harness_preprocess(" [header] How to bake bread [title] Mix the flour.  ") == \
        " How to bake bread. Mix the flour."
    assert harness_preprocess("Then [step] they  go.") == "Then they go."
    example = {"ind": 7, "activity_label": "Baking cookies", "ctx_a": "A man pours flour.", "ctx_b": "then he",
               "ctx": "", "endings": ["adds eggs [title] Stir.", "b", "c", "d"], "label": 0}
    rows, starts, char_lengths = render_example(example, tokenizer.encode_ordinary, "harness")
    assert tokenizer.decode(rows[0]) == "Baking cookies: A man pours flour. Then he adds eggs. Stir."
    assert char_lengths[0] == len("adds eggs. Stir.")
    assert tokenizer.decode(rows[0][starts[0]:]) == " adds eggs. Stir."
    # an empty ctx_b leaves a trailing space on the query, which moves to the continuation
    rows, starts, _ = render_example({**example, "ctx_b": ""}, tokenizer.encode_ordinary, "harness")
    assert tokenizer.decode(rows[1][:starts[1]]) == "Baking cookies: A man pours flour."
    assert tokenizer.decode(rows[1][starts[1]:]) == " b"


def test_harness_preprocessing_of_real_wikihow_example(hellaswag_file, tokenizer):
    wikihow = next(e for e in load_hellaswag(hellaswag_file) if "[title]" in e["ctx_a"] + e["ctx_b"])
    rows, starts, _ = render_example(wikihow, tokenizer.encode_ordinary, "harness")
    query = tokenizer.decode(rows[0][:starts[0]])
    assert query.startswith(wikihow["activity_label"] + ": ") and "[" not in query and "  " not in query
    assert ". " in query  # where " [title]" was


def test_harness_style_equals_lm_evaluation_harness_code(hellaswag_file, tokenizer):
    """lm-evaluation-harness's own hellaswag process_docs and _encode_pair (lm_eval is in the dev extra)."""
    pytest.importorskip("lm_eval", reason="lm_eval is in the dev extra: pip install -e '.[dev]'")
    import datasets
    from lm_eval.api.model import TemplateLM
    from lm_eval.tasks.hellaswag.utils import process_docs

    from nanogpt2.hellaswag import harness_query_and_choices

    examples = load_hellaswag(hellaswag_file)
    fields = ("activity_label", "ctx_a", "ctx_b", "endings", "label")
    docs = process_docs(datasets.Dataset.from_list([{key: e[key] for key in fields} for e in examples]))
    assert [(doc["query"], doc["choices"]) for doc in docs] == [harness_query_and_choices(e) for e in examples]
    harness_lm = types.SimpleNamespace(backend="causal", tok_encode=tokenizer.encode_ordinary)
    for example, doc in zip(examples[::50], docs.select(range(0, len(examples), 50))):
        rows, starts, char_lengths = render_example(example, tokenizer.encode_ordinary, "harness")
        for row, start, length, choice in zip(rows, starts, char_lengths, doc["choices"]):
            context, continuation = TemplateLM._encode_pair(harness_lm, doc["query"], " " + choice)
            assert (row[:start], row[start:], length) == (context, continuation, len(choice))


def test_sha256_check(hellaswag_file, tmp_path):
    verify_sha256(hellaswag_file, HELLASWAG_SHA256["validation"], "HellaSwag")
    altered = tmp_path / "hellaswag_val.jsonl"
    altered.write_bytes(hellaswag_file.read_bytes()[:-10])
    with pytest.raises(DataError, match="sha256"):
        verify_sha256(altered, HELLASWAG_SHA256["validation"], "HellaSwag")


def test_default_file_comes_from_cache_checked_or_fails_fast_offline(hellaswag_file, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT2_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="--data_file"):
        load_hellaswag(limit=3)
    cached = tmp_path / "hellaswag_val.jsonl"
    cached.write_bytes(hellaswag_file.read_bytes()[:-10])
    with pytest.raises(DataError, match="sha256"):
        load_hellaswag(limit=3)
    shutil.copyfile(hellaswag_file, cached)
    assert load_hellaswag(limit=3) == load_hellaswag(hellaswag_file, limit=3)


def good_line(**changes):
    example = {"ind": 0, "activity_label": "x", "ctx_a": "a", "ctx_b": "b", "ctx": "a b",
               "endings": ["1", "2", "3", "4"], "label": 1, "split_type": "indomain"}
    example.update(changes)
    return json.dumps({key: value for key, value in example.items() if value is not ...})


@pytest.mark.parametrize("lines,message", [
    ([good_line(), "{not json"], ":2: malformed JSON"),
    ([good_line(label=7)], ":1: label 7 is not one of 0..3"),
    ([good_line(label=-1)], ":1: label -1 is not one of 0..3"),
    ([good_line(), good_line(endings=["1", "2", "3"])], ":2: expected a list of 4 endings, got 3"),
    ([good_line(endings=["1", "2", "3", "4", "5"])], ":1: expected a list of 4 endings, got 5"),
    ([good_line(endings=["1", 2, "3", "4"])], ":1: every ending must be a string"),
    ([good_line(), good_line(), good_line(ctx_b=...)], ":3: missing field 'ctx_b'"),
    (["[1, 2]"], ":1: expected a JSON object"),
])
def test_bad_lines_name_file_and_line(lines, message, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HellaSwagError, match=f"bad.jsonl{message}"):
        load_hellaswag(path)


def test_missing_file_and_example_that_cannot_be_scored(tmp_path, tokenizer):
    with pytest.raises(HellaSwagError, match="nope.jsonl does not exist"):
        load_hellaswag(tmp_path / "nope.jsonl")
    path = tmp_path / "empty_ctx.jsonl"
    path.write_text(good_line(ind=41, ctx="") + "\n")
    with pytest.raises(HellaSwagError, match="ind=41: an empty context"):
        evaluate_hellaswag(tiny_model("nanogpt2"), tokenizer, load_hellaswag(path), progress=False)


def test_long_contexts_are_truncated_from_the_left_and_counted(examples, tokenizer):
    window = 48
    model = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=1, n_head=1, n_embd=16, n_positions=window)).eval()
    result = evaluate_hellaswag(model, tokenizer, examples[:30], batch_size=4, progress=False)
    too_long = sum(max(len(row) for row in render_example(e, tokenizer.encode_ordinary, "completion")[0]) - 1 > window
                   for e in examples[:30])
    assert 0 < too_long < 30 and result["num_truncated"] == too_long and result["num_examples"] == 30
    assert all(all(loss == loss for loss in p["sum_losses"]) for p in result["predictions"])  # no NaN


def run_cli(*args, launcher=(sys.executable,)):
    return subprocess.run([*launcher, "eval_hellaswag.py", *map(str, args), "--no_progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.two_processes
def test_cli_one_and_two_processes_agree(tmp_path, hellaswag_file):
    torch.manual_seed(0)
    save_model_checkpoint(NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=256)),
                          tmp_path / "ckpt")
    two_processes = tuple(two_process_launch())
    outputs = {}
    for processes, launcher in ((1, (sys.executable,)), (2, two_processes)):
        out, preds = tmp_path / f"results{processes}.json", tmp_path / f"preds{processes}.jsonl"
        completed = run_cli("--model", tmp_path / "ckpt", "--data_file", hellaswag_file, "--limit", 30,
                            "--batch_size", 8, "--output_file", out, "--predictions_file", preds, launcher=launcher)
        assert completed.returncode == 0, completed.stderr[-3000:]
        outputs[processes] = json.loads(out.read_text()), [json.loads(line) for line in preds.read_text().splitlines()]
    (one, one_preds), (two, two_preds) = outputs[1], outputs[2]
    for key in ("acc", "acc_norm", "num_examples", "style", "model", "indomain", "zeroshot", "num_truncated"):
        assert one[key] == two[key], key
    assert one["num_examples"] == 30 and one["style"] == "completion"
    expected_inds = [example["ind"] for example in load_hellaswag(hellaswag_file, limit=30)]
    assert [p["ind"] for p in one_preds] == [p["ind"] for p in two_preds] == expected_inds
    for a, b in zip(one_preds, two_preds):
        assert set(a) == set(PREDICTION_FIELDS)
        assert (a["pred"], a["pred_norm"], a["label"]) == (b["pred"], b["pred_norm"], b["label"])
        assert max(abs(x - y) for x, y in zip(a["mean_losses"], b["mean_losses"])) < 1e-5


@pytest.mark.parametrize("model_path", ["/nonexistent/ckpt", "runs/no-such-run/checkpoint-1"])
def test_model_path_that_does_not_exist(model_path):
    with pytest.raises(HellaSwagError, match=f"--model {model_path} is not a checkpoint directory"):
        load_model_and_tokenizer(model_path)


def test_directory_without_safetensors_weights(tmp_path):
    with pytest.raises(ConversionError, match=f"no \\*.safetensors weights in --model {tmp_path}; pass a checkpoint"):
        load_model_and_tokenizer(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ConversionError, match=rf"--model {tmp_path} holds only pickle weights \(pytorch_model.bin\), "
                                             "refused as unsafe"):
        load_model_and_tokenizer(str(tmp_path))


@pytest.mark.slow
def test_cli_reports_bad_input_in_one_line(hellaswag_file):
    completed = run_cli("--model", "/nonexistent/ckpt", "--data_file", hellaswag_file, "--limit", 2)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.strip() == ("error: --model /nonexistent/ckpt is not a checkpoint directory (no such "
                                        "directory); pass a directory written by save_pretrained or a Hub id such "
                                        "as openai-community/gpt2")


@pytest.mark.slow
def test_throughput_benchmark_contenders_agree(hellaswag_file):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import hellaswag_throughput
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    results = hellaswag_throughput.main(["--data_file", str(hellaswag_file), "--limit", "3", "--batch_size", "2",
                                         "--device", "cpu"])
    assert len(results) == 3 and len({r["acc_norm"] for r in results.values()}) == 1
    assert all(r["examples_per_sec"] > 0 for r in results.values())
