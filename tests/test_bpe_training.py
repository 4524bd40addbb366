"""train_tokenizer.py: a GPT-2-style byte-level BPE trained with `tokenizers`, and pretraining with it end to end."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt2.tokenizer import GPT2_PATTERN, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_tokenizer  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "tokenization"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}  # tiny models, busy CPUs


def run(*args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=ONE_THREAD)


@pytest.fixture(scope="module")
def shakespeare_tokenizer(tmp_path_factory, tinyshakespeare_file):
    out = tmp_path_factory.mktemp("tokenizer")
    argv = ["--files", str(tinyshakespeare_file), "--vocab_size", "1024", "--output_dir", str(out)]
    assert train_tokenizer.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]  # no temporary left
    return out


def test_trained_tokenizer_round_trips_every_line_and_has_the_asked_size(shakespeare_tokenizer, tinyshakespeare_file):
    tokenizer = load_tokenizer(shakespeare_tokenizer)
    assert tokenizer.vocab_size == 1024
    assert tokenizer.decode([tokenizer.eot_token_id]) == "<|endoftext|>"
    lines = tinyshakespeare_file.read_text().split("\n")
    lines += [line for path in sorted(FIXTURES.glob("*.txt")) for line in path.read_text().split("\n")]
    encoded = [tokenizer.encode_ordinary(line) for line in lines]
    assert [tokenizer.decode(ids) for ids in encoded] == lines  # also text it never saw: every byte is a token
    assert all(max(ids, default=0) < 1024 for ids in encoded)
    # it learned Shakespeare: far fewer tokens than bytes on the training text
    text = tinyshakespeare_file.read_text()[:20000]
    assert len(tokenizer.encode_ordinary(text)) < 0.5 * len(text.encode())
    assert tokenizer.eot_token_id not in tokenizer.encode_ordinary("a<|endoftext|>b")  # special-token text is text


def test_trained_tokenizer_splits_text_with_gpt2_regex(shakespeare_tokenizer):
    import regex
    from tokenizers import Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    char_to_byte = {c: b for b, c in bytes_to_unicode().items()}
    pre_tokenizer = Tokenizer.from_file(str(shakespeare_tokenizer / "tokenizer.json")).pre_tokenizer
    texts = [path.read_text() for path in sorted(FIXTURES.glob("*.txt"))]
    texts += ["I'm   here,\n\n  she'll say 'twas 3.14!\t ", "  leading and trailing  ", "we've\r\nDON'T"]
    for text in texts:
        pieces = [bytes(char_to_byte[c] for c in piece).decode() for piece, _ in pre_tokenizer.pre_tokenize_str(text)]
        assert pieces == regex.findall(GPT2_PATTERN, text)  # the `regex` module, as tiktoken and OpenAI use it


def test_train_tokenizer_errors_name_the_flag_or_file(tmp_path, capsys):
    def train(*args):
        code = train_tokenizer.main([*map(str, args), "--output_dir", str(tmp_path / "tok")])
        return code, capsys.readouterr().err

    code, err = train("--files", tmp_path / "missing.txt")
    assert code == 1 and "missing.txt does not exist" in err and len(err.strip().splitlines()) == 1
    sample = FIXTURES / "german.txt"
    code, err = train("--files", sample, "--vocab_size", 200)
    assert code == 1 and "--vocab_size 200 is too small" in err
    code, err = train("--files", sample, "--vocab_size", 2000)
    assert code == 0 and "too few distinct pairs" in err
    assert load_tokenizer(tmp_path / "tok").vocab_size < 2000


@pytest.mark.slow
def test_trained_tokenizer_through_prepare_and_pretraining(shakespeare_tokenizer, english_mix_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nanogpt2.data import open_token_shards
    from nanogpt2.errors import DataError

    data = tmp_path / "data"
    prepare = run("prepare_fineweb.py", "--data_files", english_mix_file, "--tokenizer", shakespeare_tokenizer,
                  "--shard_size", 50_000, "--max_tokens", 200_000, "--num_proc", 2, "--output_dir", data)
    assert prepare.returncode == 0, prepare.stderr[-2000:]
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["settings"]["tokenizer"]["fingerprint"] == load_tokenizer(shakespeare_tokenizer).fingerprint
    assert manifest["settings"]["tokenizer"]["vocab_size"] == 1024

    train = run("run_pretrain.py", "--preset", "tiny", "--tokenizer", shakespeare_tokenizer, "--data_dir", data,
                "--n_layer", 1, "--max_steps", 3, "--micro_batch_size", 4, "--sequence_length", 32,
                "--total_batch_size", 128, "--warmup_steps", 1, "--eval_steps", 3, "--eval_tokens", 512,
                "--skip_hellaswag", "--num_samples", 0, "--report_to", "none", "--output_dir", tmp_path / "run")
    assert train.returncode == 0, train.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first_loss = next(m["train_loss"] for m in metrics if "train_loss" in m)
    assert first_loss == pytest.approx(math.log(1024), abs=0.5)  # an untrained model over the 1,024 tokens
    assert any(math.isfinite(m.get("val_loss", math.nan)) for m in metrics)

    checkpoint = tmp_path / "run" / "checkpoint-3"
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert (model.config.vocab_size, model.config.tokenizer_vocab_size) == (1024, 1024)
    hf_tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    text = "ROMEO: What light through yonder window breaks?"
    assert hf_tokenizer(text)["input_ids"] == load_tokenizer(shakespeare_tokenizer).encode_ordinary(text)

    # the shards know their tokenizer: training with another one (here GPT-2's) is refused
    with pytest.raises(DataError, match="another tokenizer"):
        open_token_shards(data, "train", tokenizer=load_tokenizer())
