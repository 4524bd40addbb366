"""The seed's stepping stones: bigram, character-level GPT, a trained BPE tokenizer end to end, the report."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))


def test_bigram_reaches_bigram_loss(tinyshakespeare_file):
    import bigram

    losses = bigram.main(["--data_file", str(tinyshakespeare_file), "--max_iters", "1500", "--eval_iters", "50"])
    assert losses["val"] < 2.6  # uniform over 65 characters would be 4.17


def test_gpt_char_learns_and_its_checkpoint_reloads(tinyshakespeare_file, tmp_path):
    import gpt_char
    from char_data import CharTokenizer
    from transformers import AutoModelForCausalLM

    history = gpt_char.main(["--data_file", str(tinyshakespeare_file), "--n_layer", "1", "--n_head", "2",
                             "--n_embd", "32", "--block_size", "32", "--batch_size", "8", "--max_iters", "150",
                             "--eval_interval", "150", "--eval_iters", "5", "--warmup_iters", "10",
                             "--output_dir", str(tmp_path / "ckpt")])
    assert history[-1][1]["val"] < history[0][1]["val"] - 0.5
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    tokenizer = CharTokenizer.from_pretrained(tmp_path / "ckpt")
    assert model.config.vocab_size == tokenizer.vocab_size == 65
    ids = torch.tensor([tokenizer.encode("ROMEO:")])
    assert model(ids).logits.shape == (1, 6, 65)


@pytest.fixture(scope="module")
def shakespeare_tokenizer(tmp_path_factory, tinyshakespeare_file):
    out = tmp_path_factory.mktemp("tok")
    result = subprocess.run([sys.executable, "train_tokenizer.py", "--files", str(tinyshakespeare_file),
                             "--vocab_size", "1024", "--output_dir", str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_trained_tokenizer_round_trips_and_has_the_asked_size(shakespeare_tokenizer, tinyshakespeare_file):
    from nanogpt2.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(shakespeare_tokenizer)
    assert tokenizer.vocab_size == 1024 and tokenizer.eot_token_id == 0
    lines = tinyshakespeare_file.read_text().split("\n")
    encoded = tokenizer.encode_ordinary_batch(lines)
    assert all(tokenizer.decode(ids) == line for ids, line in zip(encoded, lines))
    assert 0 not in tokenizer.encode_ordinary("a<|endoftext|>b")  # special-token text stays text


def test_trained_tokenizer_through_prepare_and_pretraining(shakespeare_tokenizer, tinyshakespeare_file, tmp_path):
    from nanogpt2.tokenizer import load_tokenizer

    data = tmp_path / "data"
    prepare = subprocess.run([sys.executable, "prepare_fineweb.py", "--data_files", str(tinyshakespeare_file),
                              "--tokenizer", str(shakespeare_tokenizer), "--shard_size", "100000",
                              "--output_dir", str(data)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert prepare.returncode == 0, prepare.stderr[-2000:]
    import json

    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["settings"]["tokenizer"]["vocab_size"] == 1024
    train = subprocess.run([sys.executable, "run_pretrain.py", "--preset", "tiny", "--tokenizer",
                            str(shakespeare_tokenizer), "--data_dir", str(data), "--n_layer", "1", "--max_steps", "3",
                            "--micro_batch_size", "4", "--sequence_length", "32", "--total_batch_size", "128",
                            "--skip_hellaswag", "--eval_tokens", "512", "--report_to", "none",
                            "--output_dir", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = tmp_path / "run" / "checkpoint-3"
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert (model.config.vocab_size, model.config.tokenizer_vocab_size) == (1024, 1024)
    hf_tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    text = "ROMEO: What light through yonder window breaks?"
    assert hf_tokenizer(text)["input_ids"] == load_tokenizer(shakespeare_tokenizer).encode_ordinary(text)
    # data made with one tokenizer is refused by a run with another
    wrong = subprocess.run([sys.executable, "run_pretrain.py", "--preset", "tiny", "--data_dir", str(data),
                            "--max_steps", "1", "--output_dir", str(tmp_path / "wrong")], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1 and "made with another tokenizer" in wrong.stderr


def test_tokenization_report_runs(tinyshakespeare_file, tmp_path):
    out = tmp_path / "tokenization.md"
    result = subprocess.run([sys.executable, "examples/tokenization_report.py", "--vocab_size", "512",
                             "--data_file", str(tinyshakespeare_file), "--output_file", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = out.read_text()
    assert "| english_prose |" in report and "| chinese |" in report and "refused with ValueError" in report
