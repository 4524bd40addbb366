"""build-nanogpt's optimizer recipe: decay groups and the warmup + cosine schedule."""

import copy
import math

import pytest
import torch

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.optim import build_optimizer, cosine_lr, parameter_groups


def test_schedule_values_of_the_124m_recipe():
    lr = lambda step: cosine_lr(step, max_lr=6e-4, warmup_steps=715, max_steps=19073)  # noqa: E731
    assert math.isclose(lr(0), 6e-4 / 715)
    assert math.isclose(lr(714), 6e-4)
    assert math.isclose(lr(715), 6e-4)
    # one step before the end the cosine is almost at its floor of 10%
    progress = (19072 - 715) / (19073 - 715)
    assert math.isclose(lr(19072), 6e-5 + 0.5 * (1 + math.cos(math.pi * progress)) * 5.4e-4)
    assert 6e-5 < lr(19072) < 6.0001e-5
    assert math.isclose(lr(19073), 6e-5) and math.isclose(lr(50000), 6e-5)
    midpoint = 715 + (19073 - 715) // 2
    assert abs(lr(midpoint) - 3.3e-4) < 1e-7


def test_decay_only_matrices_and_tied_embedding_once():
    model = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32))
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    decayed = {id(p) for p in decay["params"]}
    assert id(model.transformer.wte.weight) in decayed and id(model.transformer.h[0].attn.c_proj.weight) in decayed
    assert id(model.transformer.h[0].attn.c_proj.bias) not in decayed
    assert id(model.transformer.ln_f.weight) not in decayed
    n_params = sum(p.numel() for group in (decay, no_decay) for p in group["params"])
    assert n_params == sum(p.numel() for p in model.parameters())  # lm_head tied: counted once
    # 2 blocks x (c_attn, attn.c_proj, c_fc, mlp.c_proj) + wte + wpe
    assert len(decay["params"]) == 2 * 4 + 2


def test_optimizer_hyperparameters():
    model = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=1, n_head=1, n_embd=8, n_positions=8, vocab_size=16))
    optimizer = build_optimizer(model, learning_rate=6e-4, weight_decay=0.1)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-8
    assert not optimizer.defaults["fused"]  # fused only on CUDA


def test_lr_scheduler_types():
    from nanogpt2.optim import learning_rate_at

    def lr(schedule, step):
        return learning_rate_at(step, schedule, 1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, decay_ratio=0.2)

    for schedule in ("cosine", "linear", "constant", "warmup_stable_decay"):
        assert math.isclose(lr(schedule, 0), 0.1) and math.isclose(lr(schedule, 9), 1.0)  # the same warmup
    assert lr("cosine", 60) == cosine_lr(60, 1.0, 10, 110, 0.1)
    assert math.isclose(lr("linear", 60), 0.55) and math.isclose(lr("linear", 110), 0.1)
    assert lr("constant", 60) == lr("constant", 500) == 1.0
    # warmup_stable_decay: flat until the last 20% (22 of 110 steps), then a cosine down to the floor
    assert lr("warmup_stable_decay", 10) == lr("warmup_stable_decay", 88) == 1.0
    assert math.isclose(lr("warmup_stable_decay", 99), 0.55) and math.isclose(lr("warmup_stable_decay", 110), 0.1)
    assert 0.1 < lr("warmup_stable_decay", 109) < lr("warmup_stable_decay", 89) < 1.0


# -- --optim muon: Muon for the blocks' matrices, AdamW for the rest, in one optimizer object ---------------------

def muon_run_config(**overrides):
    from nanogpt2.run_config import RunConfig

    return RunConfig(**{"optim": "muon", "learning_rate": 1e-3, "muon_learning_rate": 0.02, **overrides})


def modern_tiny(tie=True, seed=0):
    torch.manual_seed(seed)
    return NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=64,
                                              tie_word_embeddings=tie, position_embedding="rotary" if tie else
                                              "learned"))


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_every_parameter_is_in_exactly_one_group(tie):
    from nanogpt2.optim import is_muon_parameter, muon_and_adamw_groups

    model = modern_tiny(tie)
    muon, adamw = muon_and_adamw_groups(model, 1e-3, 0.1, 0.02, 0.0)
    grouped = [id(p) for group in muon + adamw for p in group["params"]]
    assert len(grouped) == len(set(grouped)) and set(grouped) == {id(p) for p in model.parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = {names[id(p)] for p in muon[0]["params"]}
    assert in_muon == {n for n in names.values() if ".h." in n and n.endswith("weight") and "ln_" not in n}
    assert all(is_muon_parameter(n, p) == (n in in_muon) for n, p in model.named_parameters())
    assert "transformer.wte.weight" not in in_muon and "lm_head.weight" not in in_muon
    assert muon[0]["lr"] == 0.02 and {g["lr"] for g in adamw} == {1e-3}


def test_muon_with_adamw_steps_both_and_schedules_each_peak():
    from nanogpt2.optim import MuonWithAdamW, build_run_optimizer, set_learning_rates

    model = modern_tiny()
    optimizer = build_run_optimizer(model, muon_run_config())
    assert isinstance(optimizer, MuonWithAdamW) and isinstance(optimizer.muon, torch.optim.Muon)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 64, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n.endswith("weight"))
    set_learning_rates(optimizer, 5e-4, 1e-3)  # half the peak: each group at half its own peak
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4, 5e-4, 0.01]
    assert optimizer.muon.param_groups[0]["lr"] == 0.01 and optimizer.adamw.param_groups[0]["lr"] == 5e-4


def test_muon_with_adamw_state_dict_resumes_bit_exactly():
    from nanogpt2.optim import build_run_optimizer

    def steps(model, optimizer, seeds):
        for seed in seeds:
            ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(seed))
            optimizer.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()

    model = modern_tiny()
    optimizer = build_run_optimizer(model, muon_run_config())
    steps(model, optimizer, [1, 2])
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    steps(model, optimizer, [3, 4])

    resumed = modern_tiny(seed=1)
    resumed.load_state_dict(saved_model)
    resumed_optimizer = build_run_optimizer(resumed, muon_run_config())
    resumed_optimizer.load_state_dict(saved_optimizer)
    assert resumed_optimizer.param_groups[-1] is resumed_optimizer.muon.param_groups[0]
    steps(resumed, resumed_optimizer, [3, 4])
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name


def test_muon_under_fsdp_is_refused_at_start_up():
    """FSDP2 shards every matrix (DTensors) and Muon orthogonalises whole ones: one line, before any model is built."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from nanogpt2.errors import SettingsError
    from nanogpt2.training import PretrainingLoop

    loop = SimpleNamespace(config=muon_run_config(), accelerator=SimpleNamespace(distributed_type=DistributedType.FSDP))
    with pytest.raises(SettingsError, match="--optim muon does not run under FSDP") as error:
        PretrainingLoop._build_model_and_optimizer(loop)
    assert len(str(error.value).splitlines()) == 1
