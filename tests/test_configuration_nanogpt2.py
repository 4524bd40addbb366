"""NanoGPT2Config: presets, aliases, validation that names the field."""

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub.errors import StrictDataclassError

import nanogpt2.configuration_nanogpt2
from nanogpt2 import PRESETS, NanoGPT2Config


def test_defaults_are_gpt2_124m_with_padded_vocab():
    config = NanoGPT2Config()
    assert (config.n_layer, config.n_head, config.n_embd, config.n_positions) == (12, 12, 768, 1024)
    assert (config.vocab_size, config.tokenizer_vocab_size) == (50304, 50257)
    assert config.tie_word_embeddings is True
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers,
            config.max_position_embeddings) == (768, 12, 12, 1024)


def test_small_vocab_defaults_to_itself():
    assert NanoGPT2Config(vocab_size=65).tokenizer_vocab_size == 65


@pytest.mark.parametrize("name,shape", [("gpt2-124m", (12, 12, 768)), ("gpt2-350m", (24, 16, 1024)),
                                        ("gpt2-774m", (36, 20, 1280)), ("gpt2-1558m", (48, 25, 1600))])
def test_presets(name, shape):
    config = NanoGPT2Config.from_preset(name)
    assert (config.n_layer, config.n_head, config.n_embd) == shape
    assert "tiny" in PRESETS


@pytest.mark.parametrize("kwargs,field", [
    (dict(n_embd=100, n_head=3), "n_embd"),
    (dict(n_layer=0), "n_layer"),
    (dict(n_head=-2), "n_head"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(n_positions=0), "n_positions"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(vocab_size=100, tokenizer_vocab_size=101), "tokenizer_vocab_size"),
    (dict(n_layer="12"), "n_layer"),
    (dict(bias=1), "bias"),
])
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(StrictDataclassError, match=field):
        NanoGPT2Config(**kwargs)
    with pytest.raises(ValueError, match=field) as error:  # the path run_pretrain.py turns into one line
        NanoGPT2Config.from_preset("tiny", **kwargs)
    assert "\n" not in str(error.value)


def test_presets_are_read_from_the_recipes():
    from nanogpt2.configuration_nanogpt2 import ARCHITECTURE, RECIPE_DIR

    assert list(PRESETS) == ["gpt2-124m", "gpt2-124m-modern", "gpt2-350m", "gpt2-774m", "gpt2-1558m", "tiny",
                             "tiny-modern"]
    assert sorted(path.stem for path in RECIPE_DIR.glob("*.yaml")) == sorted(PRESETS)
    for name, shape in PRESETS.items():
        recipe = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())
        assert shape == {key: recipe[key] for key in ARCHITECTURE if key in recipe}
        config = NanoGPT2Config.from_preset(name)
        assert {key: getattr(config, key) for key in shape} == shape


def test_from_preset_as_remote_code_without_the_recipes(tmp_path):
    """A checkpoint ships configuration_nanogpt2.py alone: it imports, and from_preset says what is missing."""
    copied = tmp_path / "configuration_nanogpt2.py"
    shutil.copy(Path(nanogpt2.configuration_nanogpt2.__file__), copied)
    spec = importlib.util.spec_from_file_location("remote_configuration_nanogpt2", copied)
    remote = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(remote)
    assert remote.PRESETS == {} and remote.NanoGPT2Config(n_layer=2).n_layer == 2
    with pytest.raises(ValueError, match="no preset recipes here") as error:
        remote.NanoGPT2Config.from_preset("tiny")
    assert "\n" not in str(error.value)


def test_unknown_preset():
    with pytest.raises(ValueError, match="gpt2-124m"):
        NanoGPT2Config.from_preset("gpt5")


def test_round_trip(tmp_path):
    config = NanoGPT2Config.from_preset("tiny", dropout=0.1)
    config.save_pretrained(tmp_path)
    again = NanoGPT2Config.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize("argv,value,on_cuda,on_cpu", [
    ([], "auto", True, False),
    (["--compile"], "true", True, True),
    (["--compile", "true"], "true", True, True),
    (["--compile", "False"], "false", False, False),
    (["--no-compile"], "false", False, False),
    (["--compile", "auto"], "auto", True, False),
])
def test_compile_defaults_to_auto_on_for_cuda_only(argv, value, on_cuda, on_cpu):
    from nanogpt2.run_config import compile_enabled, resolve_config

    config = resolve_config(["--preset", "tiny", *argv])
    assert config.torch_compile == value
    assert (compile_enabled(config, "cuda"), compile_enabled(config, "cpu")) == (on_cuda, on_cpu)
    config.torch_compile = {"true": True, "false": False}.get(value, value)  # a RunConfig made in code
    assert (compile_enabled(config, "cuda"), compile_enabled(config, "cpu")) == (on_cuda, on_cpu)


def test_compile_from_a_config_file(tmp_path):
    from nanogpt2.run_config import resolve_config

    (tmp_path / "run.yaml").write_text("compile: false\n")
    assert resolve_config(["--config_file", str(tmp_path / "run.yaml")]).torch_compile == "false"
    (tmp_path / "bad.json").write_text('{"compile": "sometimes"}')
    with pytest.raises(ValueError, match="bad.json: compile 'sometimes' is not a choice: auto, true, false"):
        resolve_config(["--config_file", str(tmp_path / "bad.json")])
