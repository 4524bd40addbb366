"""The offline GPT-2 tokenizer: tiktoken (vendored ranks), the generated HF tokenizer, and OpenAI's
original encoder.json/vocab.bpe must give identical ids on real text."""

import json

import pytest
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from transformers import AutoTokenizer

from nanogpt2.errors import DataError
from nanogpt2.tokenizer import GPT2_PATTERN, gpt2_hf_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def openai_encoding(gpt2_tokenizer_dir):
    """OpenAI's original files, read the way tiktoken's own `gpt2` loader reads them (independent path)."""
    ranks = data_gym_to_mergeable_bpe_ranks(str(gpt2_tokenizer_dir / "vocab.bpe"),
                                            str(gpt2_tokenizer_dir / "encoder.json"))
    return tiktoken.Encoding("gpt2-openai", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


@pytest.fixture(scope="module")
def hellaswag_contexts(hellaswag_file):
    return [json.loads(line)["ctx"] for line in hellaswag_file.read_text().splitlines()]


def test_known_ids():
    tok = load_tokenizer()
    assert tok.encode_ordinary("Hello world") == [15496, 995]
    assert tok.encode_ordinary(" The quick brown fox jumps over the lazy dog.") == [
        383, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]
    assert (tok.eot_token_id, tok.vocab_size) == (50256, 50257)
    assert tok.decode(tok.encode_ordinary("naïve café — 日本語")) == "naïve café — 日本語"


def test_endoftext_in_text_is_plain_text():
    tok = load_tokenizer()
    assert 50256 not in tok.encode_ordinary("a<|endoftext|>b")


@pytest.mark.slow  # the whole corpus
def test_all_hellaswag_contexts_agree(openai_encoding, hellaswag_contexts):
    assert len(hellaswag_contexts) == 10042
    ours = [load_tokenizer().encode_ordinary(text) for text in hellaswag_contexts]
    assert ours == openai_encoding.encode_ordinary_batch(hellaswag_contexts)
    assert ours == gpt2_hf_tokenizer()(hellaswag_contexts)["input_ids"]


@pytest.mark.slow  # the whole corpus
def test_tiny_shakespeare_agrees(openai_encoding, tinyshakespeare_file, hf_gpt2_fixture_dir):
    text = tinyshakespeare_file.read_text()
    ours = load_tokenizer().encode_ordinary(text)
    assert len(ours) == 338025
    assert ours == openai_encoding.encode_ordinary(text)
    assert ours == gpt2_hf_tokenizer()(text)["input_ids"]
    # the tokenizer.json published with HF GPT-2 checkpoints (in the shared fixture) agrees too
    assert ours == AutoTokenizer.from_pretrained(hf_gpt2_fixture_dir)(text)["input_ids"]


def test_saved_hf_tokenizer_files(tmp_path):
    load_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.bos_token == tok.eos_token == tok.unk_token == "<|endoftext|>"
    assert len(tok) == 50257


def test_missing_tokenizer_path_is_clear(tmp_path):
    with pytest.raises(DataError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "nope")
