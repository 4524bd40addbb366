"""GPT-2 interop both ways: logits preserved against HF GPT2LMHeadModel, the third-party fixture, errors."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import nanogpt2  # noqa: F401  (registers the Auto classes)
from nanogpt2.convert import convert_from_gpt2, convert_to_gpt2
from nanogpt2.errors import ConversionError

IDS = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(0))


def max_logit_difference(a, b, ids=IDS):
    with torch.no_grad():
        return (a.eval()(ids).logits[..., :50257] - b.eval()(ids).logits[..., :50257]).abs().max().item()


def test_fixture_round_trip(hf_gpt2_fixture_dir, tmp_path):
    reference = GPT2LMHeadModel.from_pretrained(hf_gpt2_fixture_dir)
    convert_from_gpt2(str(hf_gpt2_fixture_dir), str(tmp_path / "ours"))
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "ours")
    assert type(ours).__name__ == "NanoGPT2ForCausalLM"
    assert max_logit_difference(reference, ours) < 1e-4
    convert_to_gpt2(str(tmp_path / "ours"), str(tmp_path / "back"))
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "back")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "gpt2"
    assert max_logit_difference(reference, back) < 1e-4


@pytest.mark.slow
def test_random_gpt2_with_padding_both_ways(tmp_path):
    torch.manual_seed(1)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    reference = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    reference.save_pretrained(tmp_path / "gpt2")
    convert_from_gpt2(str(tmp_path / "gpt2"), str(tmp_path / "ours"), pad_vocab_multiple=64)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "ours")
    assert (ours.config.vocab_size, ours.config.tokenizer_vocab_size) == (50304, 50257)
    assert max_logit_difference(reference, ours) < 1e-4
    # CLI, to-gpt2 trims the padded rows; the result loads with no nanogpt2 code at all
    subprocess.run([sys.executable, "-m", "nanogpt2.convert", "to-gpt2", str(tmp_path / "ours"),
                    str(tmp_path / "back")],
                   check=True, capture_output=True)
    assert load_file(tmp_path / "back" / "model.safetensors")["transformer.wte.weight"].shape == (50257, 64)
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "back")
    assert max_logit_difference(reference, back) < 1e-4


def test_bias_free_model_exports_with_zero_biases(tmp_path):
    torch.manual_seed(2)
    model = nanogpt2.NanoGPT2ForCausalLM(nanogpt2.NanoGPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64,
                                                                  bias=False))
    from nanogpt2.checkpoint import save_model_checkpoint
    save_model_checkpoint(model, tmp_path / "ours")
    convert_to_gpt2(str(tmp_path / "ours"), str(tmp_path / "gpt2"))
    assert max_logit_difference(model, GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")) < 1e-4


def test_mismatched_checkpoint_names_the_keys(hf_gpt2_fixture_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((hf_gpt2_fixture_dir / "config.json").read_text())
    state = load_file(hf_gpt2_fixture_dir / "model.safetensors")
    del state["transformer.h.0.mlp.c_fc.bias"]
    state["transformer.h.0.attn.extra"] = torch.zeros(1)
    save_file(state, broken / "model.safetensors")
    with pytest.raises(ConversionError, match=r"missing keys \['transformer.h.0.mlp.c_fc.bias'\].*"
                                              r"unexpected keys \['transformer.h.0.attn.extra'\]"):
        convert_from_gpt2(str(broken), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_unknown_checkpoints_are_refused(hf_gpt2_fixture_dir, tmp_path):
    with pytest.raises(ConversionError, match="expected 'nanogpt2'"):
        convert_to_gpt2(str(hf_gpt2_fixture_dir), str(tmp_path / "x"))
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConversionError, match="expected 'gpt2'"):
        convert_from_gpt2(str(llama), str(tmp_path / "y"))
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    (bin_only / "config.json").write_text((hf_gpt2_fixture_dir / "config.json").read_text())
    (bin_only / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ConversionError, match="only safetensors"):
        convert_from_gpt2(str(bin_only), str(tmp_path / "z"))


@pytest.mark.slow
def test_offline_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = subprocess.run([sys.executable, "-m", "nanogpt2.convert", "from-gpt2", "openai-community/gpt2",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "local checkpoint directory" in result.stderr
