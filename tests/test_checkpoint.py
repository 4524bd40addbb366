"""Checkpoints: Auto classes in a fresh process, remote code without nanogpt2, tied weights, atomic writes."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.checkpoint import save_model_checkpoint
from nanogpt2.fileio import atomic_directory

# Makes `import nanogpt2` fail, as in an environment where the package is not installed.
BLOCK_NANOGPT2 = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "nanogpt2" or name.startswith("nanogpt2."):
                raise ImportError("nanogpt2 is not installed here")
    sys.meta_path.insert(0, _Block())
""")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)).eval()
    directory = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model_checkpoint(model, directory)
    ids = torch.tensor([[15496, 995, 11, 314, 716]])
    with torch.no_grad():
        logits = model(ids).logits
    torch.save({"ids": ids, "logits": logits}, directory.parent / "expected.pt")
    return directory


def run_python(code, cwd):
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Do you wish to run the custom code?" not in result.stdout, result.stdout  # asked, then refused
    return result.stdout


def test_layout_ties_and_single_copy_of_embedding(checkpoint):
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "modeling_nanogpt2.py", "configuration_nanogpt2.py"} <= names
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "nanogpt2"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_nanogpt2.NanoGPT2Config",
        "AutoModel": "modeling_nanogpt2.NanoGPT2Model",
        "AutoModelForCausalLM": "modeling_nanogpt2.NanoGPT2ForCausalLM",
        "AutoModelForSequenceClassification": "modeling_nanogpt2.NanoGPT2ForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_nanogpt2.NanoGPT2ForTokenClassification",
        "AutoModelForQuestionAnswering": "modeling_nanogpt2.NanoGPT2ForQuestionAnswering"}
    with safe_open(checkpoint / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys
    assert not any(p.name.startswith(".tmp-") for p in checkpoint.parent.iterdir())


@pytest.mark.slow
def test_auto_classes_reload_in_fresh_process(checkpoint):
    out = run_python(textwrap.dedent(f"""
        import torch, nanogpt2
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}).eval()
        assert type(model).__name__ == "NanoGPT2ForCausalLM"
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
        expected = torch.load({str(checkpoint.parent / 'expected.pt')!r}, weights_only=True)
        with torch.no_grad():
            assert torch.equal(model(expected["ids"]).logits, expected["logits"])
        tok = AutoTokenizer.from_pretrained({str(checkpoint)!r})
        assert tok("Hello world")["input_ids"] == [15496, 995]
        assert tok.eos_token == tok.bos_token == "<|endoftext|>"
        print("ok")
    """), cwd=checkpoint.parent)
    assert out.strip().endswith("ok")


@pytest.mark.slow
def test_trust_remote_code_without_nanogpt2_installed(checkpoint):
    out = run_python(BLOCK_NANOGPT2 + textwrap.dedent(f"""
        import torch
        try:
            import nanogpt2
            raise SystemExit("nanogpt2 should be unimportable")
        except ImportError:
            pass
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
        expected = torch.load({str(checkpoint.parent / 'expected.pt')!r}, weights_only=True)
        with torch.no_grad():
            assert torch.equal(model(expected["ids"]).logits, expected["logits"])
        tok = AutoTokenizer.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        out = model.generate(**tok("Hello world", return_tensors="pt"), max_new_tokens=5, do_sample=False)
        assert out.shape == (1, 7) and out.max() < 50257
        print("ok")
    """), cwd=checkpoint.parent)
    assert out.strip().endswith("ok")


def test_atomic_directory_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "checkpoint-1"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("half written")
            raise RuntimeError("killed mid-save")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
