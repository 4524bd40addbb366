"""The seed's stepping stones as examples: the bigram model, the character-level GPT, the tokenization report."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The examples set PyTorch's thread count (tiny models run fastest on one); give the next test the old one."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bigram_reaches_the_bigram_loss(tinyshakespeare_file, capsys):
    import bigram

    losses = bigram.main(["--data_file", str(tinyshakespeare_file), "--max_iters", "2000", "--eval_iters", "50"])
    assert losses["val"] < 2.6 < math.log(65)  # a bigram model lands near 2.49; uniform is ln 65 = 4.17
    output = capsys.readouterr().out
    assert "val loss" in output and len(output.splitlines()) > 3  # losses, then a sample


def test_char_tokenizer_round_trips_and_saves_for_auto_tokenizer(tinyshakespeare_file, tmp_path):
    from char_data import CharTokenizer
    from transformers import AutoTokenizer

    text = tinyshakespeare_file.read_text()
    tokenizer = CharTokenizer.from_text(text)
    assert tokenizer.vocab_size == 65
    tokenizer.save_pretrained(tmp_path)
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    passage = text[:5000]
    assert hf_tokenizer(passage)["input_ids"] == tokenizer.encode(passage)
    assert hf_tokenizer.decode(tokenizer.encode(passage)) == passage
    assert CharTokenizer.from_pretrained(tmp_path).chars == tokenizer.chars
    with pytest.raises(ValueError, match="not in the 65-character vocabulary"):
        tokenizer.encode("café")


def test_gpt_char_learns_and_its_checkpoint_reloads(tinyshakespeare_file, tmp_path):
    import gpt_char
    from char_data import CharTokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    history, model = gpt_char.main([
        "--data_file", str(tinyshakespeare_file), "--n_layer", "1", "--n_head", "2", "--n_embd", "32",
        "--block_size", "32", "--batch_size", "8", "--max_iters", "150", "--eval_interval", "150",
        "--eval_iters", "5", "--warmup_iters", "10", "--num_threads", "1", "--output_dir", str(tmp_path / "ckpt")])
    assert history[0][1]["val"] == pytest.approx(math.log(65), abs=0.3)  # an untrained model is near uniform
    assert history[-1][1]["val"] < history[0][1]["val"] - 0.5

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    assert type(reloaded).__name__ == "NanoGPT2ForCausalLM"
    assert reloaded.config.vocab_size == reloaded.config.tokenizer_vocab_size == 65
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    prompt = "ROMEO:\nWhat light"
    ids = torch.tensor([hf_tokenizer(prompt)["input_ids"]])
    assert ids.tolist()[0] == CharTokenizer.from_text(tinyshakespeare_file.read_text()).encode(prompt)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model.eval()(ids).logits)
    generated = reloaded.generate(ids, max_new_tokens=10, do_sample=False)
    assert hf_tokenizer.decode(generated[0]).startswith(prompt) and generated.shape == (1, ids.shape[1] + 10)


def test_gpt_char_refuses_a_bad_config_in_one_line(capsys):
    import gpt_char

    with pytest.raises(SystemExit):
        gpt_char.parse_args(["--n_embd", "130", "--n_head", "4"])
    assert "--n_embd 130 must be a multiple of --n_head 4" in capsys.readouterr().err


@pytest.mark.slow
def test_tokenization_report_runs(tinyshakespeare_file, tmp_path):
    from nanogpt2.tokenizer import load_tokenizer

    out = tmp_path / "tokenization.md"
    result = subprocess.run([sys.executable, "examples/tokenization_report.py", "--vocab_size", "512",
                             "--data_file", str(tinyshakespeare_file), "--output_file", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = out.read_text()
    samples = sorted(p.stem for p in (REPO / "tests" / "fixtures" / "tokenization").glob("*.txt"))
    assert len(samples) >= 8 and all(f"| {name} |" in report for name in samples)
    assert "512 tokens trained on Tiny Shakespeare" in report
    assert "`encode(text)`: refused: `ValueError" in report  # tiktoken's guard against special tokens
    assert "`encode_ordinary(text)` (what prepare_fineweb.py uses): plain text" in report
    special = load_tokenizer().encoding.encode("Hello<|endoftext|>world", allowed_special="all")
    assert f"`tokenizer(text)`: the special token: `{special}`" in report  # transformers' default
    assert result.stdout.strip() == report.strip()
