"""NanoGPT2ForCausalLM against Hugging Face GPT2LMHeadModel as an oracle, and its HF integration."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.convert import gpt2_state_to_nanogpt2
from nanogpt2.modeling_nanogpt2 import CACHE

ODD_SIZES = [
    dict(n_layer=1, n_head=1, n_embd=8, n_positions=32, vocab_size=37),
    dict(n_layer=3, n_head=3, n_embd=48, n_positions=64, vocab_size=101),
    dict(n_layer=2, n_head=5, n_embd=40, n_positions=50, vocab_size=257),
]


def make_pair(size, attn_implementation="sdpa", seed=0):
    """A random HF GPT-2 (dropout 0) and a nanogpt2 model with the same weights."""
    torch.manual_seed(seed)
    hf_config = GPT2Config(**size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    hf_config._attn_implementation = attn_implementation
    hf = GPT2LMHeadModel(hf_config).eval()
    # perturb biases and LayerNorms so that they are tested too (GPT-2 init leaves them trivial)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    ours = NanoGPT2ForCausalLM(NanoGPT2Config(**size, tokenizer_vocab_size=None, bos_token_id=0, eos_token_id=0,
                                              attn_implementation=attn_implementation)).eval()
    missing, unexpected = ours.load_state_dict(gpt2_state_to_nanogpt2(hf.state_dict()), strict=False)
    assert missing == ["lm_head.weight"] and unexpected == []
    assert ours.lm_head.weight is ours.transformer.wte.weight
    return hf, ours


@pytest.mark.parametrize("size", ODD_SIZES)
def test_logits_loss_and_greedy_generate_match_hf_gpt2(size):
    hf, ours = make_pair(size)
    ids = torch.randint(0, size["vocab_size"], (3, size["n_positions"] - 12))
    with torch.no_grad():
        expected, got = hf(ids, labels=ids), ours(ids, labels=ids)
    assert (expected.logits - got.logits).abs().max() < 1e-5
    assert abs(expected.loss.item() - got.loss.item()) < 1e-5
    prompt = ids[:, :4]
    mask = torch.ones_like(prompt)
    kwargs = dict(max_new_tokens=8, do_sample=False, attention_mask=mask, pad_token_id=0)
    assert torch.equal(hf.generate(prompt, **kwargs), ours.generate(prompt, **kwargs))


def test_hidden_states_match_hf_gpt2():
    hf, ours = make_pair(ODD_SIZES[1])
    ids = torch.randint(0, 101, (2, 20))
    with torch.no_grad():
        expected = hf(ids, output_hidden_states=True).hidden_states
        got = ours(ids, output_hidden_states=True).hidden_states
    assert len(got) == len(expected) == 3 + 1
    for a, b in zip(expected, got):
        assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_cached_step_logits_equal_full_forward(attn_implementation):
    _, ours = make_pair(ODD_SIZES[1], attn_implementation)
    ids = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        full = ours(ids).logits
        out = ours(ids[:, :10], use_cache=True)
        steps = [out.logits]
        cache = getattr(out, CACHE)  # `past_key_values` before transformers 5.24
        assert cache is not None and cache.get_seq_length() == 10
        for t in range(10, 24):
            out = ours(ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = getattr(out, CACHE)  # `past_key_values` before transformers 5.24
            steps.append(out.logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5


def test_eager_and_sdpa_agree():
    _, sdpa = make_pair(ODD_SIZES[2], "sdpa")
    _, eager = make_pair(ODD_SIZES[2], "eager")
    ids = torch.randint(0, 257, (2, 30))
    with torch.no_grad():
        assert (sdpa(ids).logits - eager(ids).logits).abs().max() < 1e-5


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_left_padded_batch_equals_unpadded_rows(attn_implementation):
    _, ours = make_pair(ODD_SIZES[1], attn_implementation)
    rows = [torch.randint(1, 101, (n,)) for n in (12, 7, 3)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    with torch.no_grad():
        batch = ours(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = ours(row[None]).logits[0]
            assert (batch[i, width - len(row) :] - alone).abs().max() < 1e-5
        generated = ours.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        for i, row in enumerate(rows):
            alone = ours.generate(row[None], max_new_tokens=6, do_sample=False, pad_token_id=0)
            assert torch.equal(generated[i, width:], alone[0, len(row) :])


def test_gradient_checkpointing_gives_same_gradients():
    _, ours = make_pair(ODD_SIZES[1])
    ids = torch.randint(0, 101, (2, 16))
    ours.train()
    ours.zero_grad()
    ours(ids, labels=ids).loss.backward()
    plain = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    ours.activation_checkpointing_enable()
    assert ours.transformer.gradient_checkpointing
    ours(ids, labels=ids).loss.backward()
    for name, param in ours.named_parameters():
        assert torch.allclose(param.grad, plain[name], atol=1e-6), name


def test_shift_labels_equal_labels_loss():
    _, ours = make_pair(ODD_SIZES[0])
    window = torch.randint(0, 37, (2, 17))
    x, y = window[:, :-1], window[:, 1:]
    with torch.no_grad():
        shifted = ours(x, shift_labels=y).loss
        manual = torch.nn.functional.cross_entropy(ours(x).logits.reshape(-1, 37), y.reshape(-1))
    assert abs(shifted.item() - manual.item()) < 1e-6


def test_gpt2_init_scales_residual_projections():
    config = NanoGPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=64, vocab_size=512)
    model = NanoGPT2ForCausalLM(config)
    residual_std = 0.02 * (2 * 12) ** -0.5
    for block in model.transformer.h:
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            assert abs(proj.weight.std().item() - residual_std) < 0.05 * residual_std
            assert torch.count_nonzero(proj.bias) == 0
        for linear in (block.attn.c_attn, block.mlp.c_fc):
            assert abs(linear.weight.std().item() - 0.02) < 0.05 * 0.02
        assert torch.all(block.ln_1.weight == 1) and torch.count_nonzero(block.ln_1.bias) == 0
    assert abs(model.transformer.wte.weight.std().item() - 0.02) < 0.001
    assert abs(model.transformer.wpe.weight.std().item() - 0.02) < 0.001


def test_parameter_counts_of_gpt2_124m():
    def count(**overrides):
        with torch.device("meta"):
            model = NanoGPT2ForCausalLM(NanoGPT2Config.from_preset("gpt2-124m", **overrides))
        return sum(p.numel() for p in model.parameters())

    assert count(vocab_size=50257) == 124_439_808
    assert count() == 124_475_904  # padded to 50304


def test_padded_vocab_rows_never_win():
    torch.manual_seed(0)
    model = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32)).eval()
    assert model.config.vocab_size == 50304 and model.config.tokenizer_vocab_size == 50257
    with torch.no_grad():
        model.lm_head.weight[50257:] = 100.0  # make the padding rows overwhelmingly likely
        ids = torch.randint(0, 50257, (2, 5))
        logits = model(ids).logits
        assert logits.shape[-1] == 50304 and torch.all(logits[..., 50257:] == float("-inf"))
        greedy = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=50256)
        sampled = model.generate(ids, max_new_tokens=10, do_sample=True, top_k=0, temperature=2.0, pad_token_id=50256)
    assert greedy.max() < 50257 and sampled.max() < 50257


def test_sequence_longer_than_context_is_a_clear_error():
    model = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=1, n_head=1, n_embd=8, n_positions=8, vocab_size=16))
    with pytest.raises(ValueError, match="n_positions=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def reference_loss(model, x, y, num_items_in_batch=None):
    """Today's evaluation path: full logits, -inf on the padded rows, transformers' ForCausalLMLoss."""
    model.eval()
    try:
        return model(x, shift_labels=y, num_items_in_batch=num_items_in_batch).loss
    finally:
        model.train()


@pytest.mark.parametrize("num_items_in_batch", [None, 40])
def test_training_fast_path_equals_full_logits_loss_and_gradients(num_items_in_batch):
    torch.manual_seed(0)
    config = NanoGPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=128,
                            tokenizer_vocab_size=100, bos_token_id=0, eos_token_id=0)
    model = NanoGPT2ForCausalLM(config).train()
    window = torch.randint(0, 100, (3, 33))
    x, y = window[:, :-1], window[:, 1:].clone()
    y[0, :5] = -100  # ignored targets count in neither loss
    fast = model(x, shift_labels=y, num_items_in_batch=num_items_in_batch)
    assert fast.logits is None and getattr(fast, CACHE) is None
    fast.loss.backward()
    fast_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    expected = reference_loss(model, x, y, num_items_in_batch)
    expected.backward()
    assert abs(fast.loss.item() - expected.item()) < 1e-6
    for name, param in model.named_parameters():
        assert torch.allclose(fast_grads[name], param.grad, rtol=0, atol=1e-6), name
    with torch.no_grad():  # HF `labels` (shifted inside) take the same fast path
        by_labels = model(window, labels=window).loss
        assert abs(by_labels.item() - reference_loss(model, x, window[:, 1:]).item()) < 1e-6


def test_return_logits_picks_the_path_in_either_mode():
    """return_logits=False: the chunked loss in eval mode too (validation without the full logits); True: the
    logits in training too; the loss is the same on both paths."""
    torch.manual_seed(0)
    config = NanoGPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=128,
                            tokenizer_vocab_size=100, bos_token_id=0, eos_token_id=0, logit_softcap=15.0)
    model = NanoGPT2ForCausalLM(config)
    window = torch.randint(0, 100, (3, 33))
    x, y = window[:, :-1], window[:, 1:]
    with torch.no_grad():
        full = model.eval()(x, shift_labels=y)  # eval mode: the logits and transformers' loss
        light = model(x, shift_labels=y, return_logits=False)
        assert full.logits.shape == (3, 32, 128) and light.logits is None
        assert abs(light.loss.item() - full.loss.item()) < 1e-6
        trained = model.train()(x, shift_labels=y, return_logits=True)
        assert trained.logits.shape == (3, 32, 128) and abs(trained.loss.item() - full.loss.item()) < 1e-6


def test_training_fast_path_builds_no_mask_or_cache(monkeypatch):
    import nanogpt2.modeling_nanogpt2 as modeling

    def no_mask(**kwargs):
        raise AssertionError("the training path must not build a mask (packed-sequence detection syncs)")

    monkeypatch.setattr(modeling, "create_causal_mask", no_mask)
    model = NanoGPT2ForCausalLM(NanoGPT2Config.from_preset("tiny", n_layer=2)).train()
    ids = torch.randint(0, 50257, (2, 16))
    model(input_ids=ids[:, :-1], shift_labels=ids[:, 1:]).loss.backward()
    with pytest.raises(AssertionError, match="must not build a mask"):  # the spy does fire where a mask is due
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)


def test_compiled_training_graph_keeps_causal_sdpa_and_returns_only_the_loss():
    """The graph torch.compile traces (fullgraph: no break, so no host sync): every SDPA call is
    is_causal=True with no mask tensor, and the graph outputs no (rows, vocab) logits."""
    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch.manual_seed(0)
    model = NanoGPT2ForCausalLM(NanoGPT2Config.from_preset("tiny", n_layer=2, attn_implementation="sdpa")).train()
    ids = torch.randint(0, 50257, (2, 33))
    compiled = torch.compile(model, backend=capture, fullgraph=True)
    loss = compiled(input_ids=ids[:, :-1], shift_labels=ids[:, 1:]).loss
    eager = model(input_ids=ids[:, :-1], shift_labels=ids[:, 1:]).loss
    assert torch.allclose(loss, eager, atol=1e-6)
    (graph,) = graphs
    sdpa = [n for n in graph.graph.nodes if n.target is torch.nn.functional.scaled_dot_product_attention]
    assert len(sdpa) == 2
    assert all(n.kwargs["is_causal"] is True and n.kwargs.get("attn_mask") is None for n in sdpa)
    (output,) = [n for n in graph.graph.nodes if n.op == "output"]
    assert all(v.meta["example_value"].numel() < 32 * 50257 for v in output.all_input_nodes), "logits output"


def test_generate_feeds_one_token_per_step_through_the_cache():
    """generate() must reuse the cache (it passes `cache` from transformers 5.24, `past_key_values` before)."""
    _, ours = make_pair(ODD_SIZES[1])
    seen = []

    def record(module, args, kwargs):
        cache = kwargs["cache"] if kwargs.get("cache") is not None else kwargs.get("past_key_values")
        seen.append((kwargs["input_ids"].shape[1], None if cache is None else cache.get_seq_length()))

    ours.transformer.register_forward_pre_hook(record, with_kwargs=True)
    ids = torch.randint(0, 101, (1, 7))
    ours.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert [length for length, _ in seen] == [7, 1, 1, 1]
    assert [past for _, past in seen[1:]] == [7, 8, 9]
