"""The architecture options of NanoGPT2Config (issue 24): each validated, each variant a real transformers model
(save, AutoModelForCausalLM load, cached greedy generation equal to the full forward with left padding, packed
position_ids), and refused by `convert to-gpt2` in one line naming the option. The defaults' oracle tests against
HF GPT-2 are in test_model.py."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from test_checkpoint import BLOCK_NANOGPT2, run_python
from transformers import AutoModelForCausalLM, pipeline

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.convert import main as convert_main
from nanogpt2.modeling_nanogpt2 import chunked_lm_loss

TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=1000, bos_token_id=0, eos_token_id=0)
MODERN = dict(position_embedding="rotary", normalization="rmsnorm", qk_norm=True, mlp_activation="relu2",
              bias=False, tie_word_embeddings=False, logit_softcap=15.0, zero_init_projections=True)
VARIANTS = {
    "rotary": dict(position_embedding="rotary", rotary_base=500.0),
    "rmsnorm": dict(normalization="rmsnorm"),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp_activation="relu2"),
    "no_bias": dict(bias=False),
    "untied": dict(tie_word_embeddings=False),
    "softcap": dict(logit_softcap=2.0),
    "zero_init": dict(zero_init_projections=True),
    "modern": MODERN,
}
EACH = pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())


def variant(**options):
    torch.manual_seed(0)
    model = NanoGPT2ForCausalLM(NanoGPT2Config(**TINY, **options)).eval()
    with torch.no_grad():  # zero-initialised projections would hide every difference below
        for module in model.modules():
            if getattr(module, "is_residual_projection", False):
                module.weight.normal_(0, 0.02)
    return model


@pytest.mark.parametrize("field, value", [("position_embedding", "alibi"), ("normalization", "batchnorm"),
                                          ("mlp_activation", "swiglu"), ("logit_softcap", 0.0),
                                          ("rotary_base", -1.0), ("qk_norm", "yes")])
def test_every_option_is_validated_naming_the_field(field, value):
    with pytest.raises(StrictDataclassError, match=field):
        NanoGPT2Config(**{field: value})


def test_rotary_needs_an_even_head_dim():
    with pytest.raises(StrictDataclassError, match="even head_dim"):
        NanoGPT2Config(n_embd=30, n_head=2, position_embedding="rotary")


def test_the_defaults_are_gpt2s():
    config = NanoGPT2Config()
    assert config.gpt2_differences() == []
    assert NanoGPT2ForCausalLM(NanoGPT2Config(**TINY)).transformer.wpe is not None


def test_each_option_changes_the_parameters_it_should():
    names = set(dict(variant(**MODERN).named_parameters()))
    assert not any("wpe" in n or n.endswith(".bias") for n in names)
    assert {"transformer.h.0.attn.q_norm.weight", "lm_head.weight"} <= names
    zero = NanoGPT2ForCausalLM(NanoGPT2Config(**TINY, zero_init_projections=True))
    assert not zero.transformer.h[1].mlp.c_proj.weight.any() and zero.transformer.h[1].mlp.c_fc.weight.any()


@EACH
def test_each_variant_saves_loads_and_generates_as_its_full_forward(options, tmp_path):
    model = variant(**options)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is NanoGPT2ForCausalLM and loaded.config.gpt2_differences() == model.config.gpt2_differences()
    ids = torch.randint(1, 1000, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
        # a left-padded batch of the prompt and a shorter one: each row generates as it does alone
        short = ids[:, 5:]
        batch = torch.cat([ids, torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1)])
        mask = torch.cat([torch.ones(1, 12), torch.cat([torch.zeros(1, 5), torch.ones(1, 7)], 1)]).long()
        generated = loaded.generate(batch, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        for row, prompt in enumerate([ids, short]):
            alone = loaded.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
            assert generated[row, -8:].tolist() == alone[0, -8:].tolist()
            # the cached greedy tokens are the full forward's argmax over the whole sequence
            full = loaded(alone).logits[0, prompt.shape[1] - 1:-1].argmax(-1)
            assert full.tolist() == alone[0, -8:].tolist()
        if model.config.logit_softcap is not None:
            assert loaded(ids).logits.abs().max() < model.config.logit_softcap


@EACH
def test_each_variant_runs_in_a_text_generation_pipeline(options):
    """pipeline("text-generation") over a saved variant: batched prompts (left-padded by the pipeline) give the
    text of the model's own greedy generation of each prompt alone."""
    from nanogpt2.tokenizer import gpt2_hf_tokenizer

    tokenizer = gpt2_hf_tokenizer()  # GPT-2's, from the shared files (what a checkpoint saves)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"  # batching, as with GPT-2 itself
    torch.manual_seed(0)
    model = NanoGPT2ForCausalLM(NanoGPT2Config(**{**TINY, "vocab_size": len(tokenizer)}, **options)).eval()
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    prompts = ["The meaning of life is", "Hello"]
    texts = [out[0]["generated_text"] for out in generator(prompts, max_new_tokens=6, do_sample=False, batch_size=2,
                                                           return_full_text=False)]
    for prompt, text in zip(prompts, texts):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        alone = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        assert text == tokenizer.decode(alone[0, ids.shape[1]:])


@pytest.mark.parametrize("options", [VARIANTS["rotary"], MODERN], ids=["rotary", "modern"])
def test_packed_documents_see_their_own_positions(options):
    model = variant(**options)
    docs = [torch.randint(1, 1000, (n,), generator=torch.Generator().manual_seed(n)) for n in (20, 30)]
    position_ids = torch.cat([torch.arange(len(d)) for d in docs])[None]
    with torch.no_grad():
        packed = model(torch.cat(docs)[None], position_ids=position_ids).logits[0]
        alone = torch.cat([model(d[None]).logits[0] for d in docs])
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)


def test_softcapped_chunked_loss_and_gradients_equal_autograd():
    torch.manual_seed(0)
    hidden = torch.randn(24, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    targets = torch.randint(0, 37, (24,))
    loss = chunked_lm_loss(hidden, weight, targets, 37, chunks=3, softcap=3.0)
    grads = torch.autograd.grad(loss, (hidden, weight))
    logits = 3.0 * torch.tanh(hidden @ weight[:37].T / 3.0)
    expected = torch.nn.functional.cross_entropy(logits, targets)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, torch.autograd.grad(expected, (hidden, weight))):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["rotary", "rmsnorm", "qk_norm", "relu2", "untied", "softcap"])
def test_to_gpt2_refuses_a_variant_naming_the_option(name, tmp_path, capsys):
    variant(**VARIANTS[name]).save_pretrained(tmp_path / "ckpt")
    capsys.readouterr()
    assert convert_main(["to-gpt2", str(tmp_path / "ckpt"), str(tmp_path / "out")]) != 0
    message = capsys.readouterr().err.strip()
    option = next(iter(VARIANTS[name]))
    assert len(message.splitlines()) == 1 and option in message, message
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_modern_variant_loads_as_remote_code_without_nanogpt2(tmp_path):
    model = variant(**MODERN)
    model.save_pretrained(tmp_path / "ckpt")
    ids = [[5, 17, 99, 3]]
    expected = model.generate(torch.tensor(ids), max_new_tokens=5, do_sample=False, pad_token_id=0)[0].tolist()
    out = run_python(BLOCK_NANOGPT2 + f"""
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True)
assert type(model).__module__ != "nanogpt2.modeling_nanogpt2"
print(model.generate(torch.tensor({ids}), max_new_tokens=5, do_sample=False, pad_token_id=0)[0].tolist())
""", cwd=tmp_path)
    assert out.strip().splitlines()[-1] == str(expected)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_the_modern_variant_trains_and_generates_under_bf16_autocast(attn_implementation):
    """Norms return fp32 and rotary's cos/sin are fp32 under autocast: queries and keys go back to the values' dtype."""
    model = variant(**MODERN, attn_implementation=attn_implementation).train()
    ids = torch.randint(1, 1000, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, shift_labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and model.transformer.h[0].attn.q_norm.weight.grad is not None
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = model.generate(ids[:, :4], attention_mask=torch.ones(2, 4, dtype=torch.long), max_new_tokens=4,
                             do_sample=False, pad_token_id=0)
    assert out.shape == (2, 8)


def test_a_variants_model_card_names_its_options_and_offers_no_gpt2_conversion(tmp_path):
    from nanogpt2.model_card import build_model_card

    variant(**VARIANTS["rotary"]).save_pretrained(tmp_path)
    card = str(build_model_card(tmp_path))
    assert "not GPT-2's architecture: position_embedding='rotary'" in card and "to-gpt2" not in card
