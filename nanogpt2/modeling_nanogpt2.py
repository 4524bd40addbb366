"""NanoGPT2ForCausalLM: GPT-2 (Radford et al. 2019) written the nanoGPT way, as a transformers model.

Reads top to bottom: attention -> MLP -> block -> the stack of blocks -> the language-model head.
Parameter names equal Hugging Face GPT-2's (`transformer.h.0.attn.c_attn.weight`, ...) except that
nn.Linear stores weights as (out, in) where GPT-2's Conv1D stores (in, out); see nanogpt2.convert.

This file imports only transformers, torch and its sibling config (relatively), so that a saved
checkpoint loads with `trust_remote_code=True` where nanogpt2 is not installed.
"""

import copy
from collections.abc import Callable

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_flash_attention_utils import FlashAttentionKwargs
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import TransformersKwargs, can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_nanogpt2 import NanoGPT2Config

# transformers 5.24 renamed the KV cache `past_key_values` -> `cache` (forward argument, output field and
# create_causal_mask keyword); 5.17-5.23 generate() passes and reads `past_key_values`. This file says
# `cache` everywhere and uses this one name where it meets transformers. A caller's `past_key_values=` works on
# every version, with one FutureWarning (transformers' deprecate_kwarg, as its own models since 5.24).
CACHE = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

# What a forward takes through **kwargs: the keywords of transformers' TransformersKwargs (attention, flash-attention
# varlen, output and loss keywords such as num_items_in_batch, which generate() and the Trainer pass), read from the
# installed transformers (as names: typing.get_type_hints fails on them), and the debugging switches that
# merge_with_config_defaults reads. Any other keyword (a typo such as `input_idz=`) is a TypeError, not ignored.
KWARGS_KEYWORDS = frozenset(TransformersKwargs.__annotations__) | frozenset(FlashAttentionKwargs.__annotations__)
KWARGS_KEYWORDS |= {"debug_io", "debug_io_dir", "prune_layers"}


def refuse_unknown_keywords(kwargs: dict):
    unknown = sorted(set(kwargs) - KWARGS_KEYWORDS)
    if unknown:
        what = "an unexpected keyword argument" if len(unknown) == 1 else "unexpected keyword arguments"
        names = ", ".join(map(repr, unknown))
        raise TypeError(f"NanoGPT2 forward() got {what} {names} (neither a forward argument nor a TransformersKwargs)")


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Plain softmax(QK^T * scaling + mask) V, used with attn_implementation="eager"."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    else:  # no mask object (e.g. a single query): still causal over the keys it sees
        q_len, k_len = query.shape[-2], key.shape[-2]
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


# -- the architecture options (NanoGPT2Config: position_embedding, normalization, qk_norm, mlp_activation) -----


def norm_layer(config: NanoGPT2Config, dim: int) -> nn.Module:
    if config.normalization == "rmsnorm":
        return nn.RMSNorm(dim, eps=config.layer_norm_epsilon)
    return nn.LayerNorm(dim, eps=config.layer_norm_epsilon, bias=config.bias)


class ReLUSquared(nn.Module):
    """relu(x)^2 (So et al. 2021, Primer)."""

    def forward(self, x):
        return nn.functional.relu(x).square()


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype):
    """cos and sin of RoPE's angles (Su et al. 2021) at `position_ids` (batch, seq): (batch, 1, seq, head_dim) each,
    the frequencies repeated over the two halves of a head (rotate_half convention, as Llama's)."""
    exponents = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (base**exponents)
    angles = position_ids[..., None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # x is bf16 under autocast, cos and sin the weights' fp32
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class NanoGPT2Attention(nn.Module):
    """Causal multi-head self-attention with one fused QKV projection."""

    def __init__(self, config: NanoGPT2Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        if config.qk_norm:
            self.q_norm, self.k_norm = norm_layer(config, self.head_dim), norm_layer(config, self.head_dim)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, attention_mask=None, cache: Cache | None = None, rotary=None, **kwargs):
        batch, seq_len, _ = hidden_states.shape
        query, key, value = (
            t.view(batch, seq_len, -1, self.head_dim).transpose(1, 2)
            for t in self.c_attn(hidden_states).split(self.config.n_embd, dim=2)
        )
        if self.config.qk_norm:  # under autocast a norm returns fp32: back to the values' dtype for attention
            query, key = self.q_norm(query).to(value.dtype), self.k_norm(key).to(value.dtype)
        if rotary is not None:  # keys enter the cache rotated at their own positions
            query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = self.resid_dropout(self.c_proj(output.reshape(batch, seq_len, -1)))
        return output, weights


class NanoGPT2MLP(nn.Module):
    """Position-wise feed-forward: 4x expansion, GELU with the tanh approximation (GPT-2's gelu_new)."""

    def __init__(self, config: NanoGPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = ReLUSquared() if config.mlp_activation == "relu2" else nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states):
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class NanoGPT2Block(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: NanoGPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = norm_layer(config, config.n_embd)
        self.attn = NanoGPT2Attention(config, layer_idx)
        self.ln_2 = norm_layer(config, config.n_embd)
        self.mlp = NanoGPT2MLP(config)

    def forward(self, hidden_states, attention_mask=None, cache: Cache | None = None, rotary=None, **kwargs):
        attn_output, _ = self.attn(self.ln_1(hidden_states), attention_mask=attention_mask, cache=cache,
                                   rotary=rotary, **kwargs)
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class NanoGPT2PreTrainedModel(PreTrainedModel):
    config: NanoGPT2Config
    config_class = NanoGPT2Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NanoGPT2Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": NanoGPT2Block,
        "attentions": OutputRecorder(NanoGPT2Attention, index=1),
    }
    if not hasattr(PreTrainedModel, "activation_checkpointing_enable"):  # its name from transformers 5.24
        activation_checkpointing_enable = PreTrainedModel.gradient_checkpointing_enable

    def _init_weights(self, module):
        """GPT-2 init: N(0, 0.02) weights, zero biases; the two residual projections of every block
        get std 0.02 / sqrt(2 * n_layer) (GPT-2 paper, section 2.3: 'scale the weights of residual
        layers at initialization by a factor of 1/sqrt(N) where N is the number of residual layers')."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):
                std = 0.0 if self.config.zero_init_projections else std * (2 * self.config.n_layer) ** -0.5
            if std == 0.0:
                init.zeros_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):
            init.ones_(module.weight)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Every save carries the two code files and an `auto_map` naming every head, so any Auto class
        loads it with `trust_remote_code=True` where nanogpt2 is not installed."""
        self.config.auto_map = {"AutoConfig": f"configuration_nanogpt2.{type(self.config).__name__}"} | {
            auto_class: f"modeling_nanogpt2.{model_class.__name__}" for auto_class, model_class in AUTO_CLASSES.items()
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """As transformers', and `tokenizer_vocab_size` follows: `new_num_tokens` real tokens (rows that
        `pad_to_multiple_of` adds stay padding whose logits are -inf)."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        real = new_num_tokens if new_num_tokens is not None else self.config.tokenizer_vocab_size
        self.config.tokenizer_vocab_size = min(real, self.config.vocab_size)
        return embeddings


def position_ids_from_attention_mask(attention_mask: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Positions that skip padding, so a left-padded row sees the same positions as the unpadded one."""
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, 0)
    return positions[:, -seq_len:]


class NanoGPT2Model(NanoGPT2PreTrainedModel):
    """Token + learned position embeddings (or rotary ones in attention), n_layer blocks, final LayerNorm."""

    def __init__(self, config: NanoGPT2Config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd) if config.position_embedding == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([NanoGPT2Block(config, i) for i in range(config.n_layer)])
        self.ln_f = norm_layer(config, config.n_embd)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    def check_context(self, position_ids: torch.Tensor, positions_end=None):
        """One clear error for positions past the n_positions learned ones. The limit is on positions, not on the
        row's length: a packed row of short documents may be longer. Where the bound needs a tensor read, it is
        not checked under torch.compile (a data-dependent branch); generate() checks its length before it starts."""
        if positions_end is None or isinstance(positions_end, torch.Tensor):
            if torch.compiler.is_compiling() or position_ids.numel() == 0:
                return
            positions_end = int(position_ids.max()) + 1
        if positions_end > self.config.n_positions:
            raise ValueError(
                f"position {positions_end - 1} is past the model's context (n_positions={self.config.n_positions}): "
                f"truncate the input to at most {self.config.n_positions} tokens per document"
            )

    @deprecate_kwarg("past_key_values", version="5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        refuse_unknown_keywords(kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        seq_len = inputs_embeds.shape[1]

        # A cache made here holds nothing yet: the mask is built as without one, so that packed documents
        # (position_ids restarting at 0, no attention_mask) are told apart as in training.
        mask_cache = cache
        if use_cache and cache is None and not (self.gradient_checkpointing and self.training):
            cache = DynamicCache(config=self.config)
        # Plain causal attention over a fresh, unpadded batch (pretraining): no mask object, so SDPA keeps
        # is_causal=True, and transformers' packed-sequence detection (a host sync) never runs.
        plain_causal = attention_mask is None and position_ids is None and mask_cache is None
        plain_causal = plain_causal and self.config._attn_implementation != "flex_attention"
        positions_end = None  # one past the last position, where it is known without reading a tensor
        if position_ids is None and (attention_mask is None or attention_mask.ndim != 2):
            past_len = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(seq_len, device=inputs_embeds.device) + past_len).unsqueeze(0)
            positions_end = past_len + seq_len  # an int (a 0-d tensor for a static cache)
        elif position_ids is None:
            position_ids = position_ids_from_attention_mask(attention_mask, seq_len)
        else:  # flash attention reads packed documents from the caller's positions
            kwargs["position_ids"] = position_ids
        self.check_context(position_ids, positions_end)

        mask = None if plain_causal else create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{CACHE: mask_cache},
        )
        rotary = None
        if self.wpe is not None:
            hidden_states = inputs_embeds + self.wpe(position_ids)
        else:
            hidden_states = inputs_embeds
            rotary = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rotary_base, inputs_embeds.dtype)
        if token_type_ids is not None:  # as GPT2Model: segment ids are embedded with the token table
            hidden_states = hidden_states + self.wte(token_type_ids)
        hidden_states = self.drop(hidden_states)
        for block in self.h:
            hidden_states = block(hidden_states, attention_mask=mask, cache=cache, rotary=rotary, **kwargs)
        hidden_states = self.ln_f(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **{CACHE: cache if use_cache else None})


class NanoGPT2ForCausalLM(NanoGPT2PreTrainedModel, GenerationMixin):
    """GPT-2 with its language-model head tied to the token embedding (stored once), or its own head where
    config.tie_word_embeddings is False."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: NanoGPT2Config):
        super().__init__(config)
        self.transformer = NanoGPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """`GenerationMixin.generate`, refusing before any forward a request longer than the learned positions."""
        config = copy.deepcopy(generation_config or self.generation_config)
        config.update(**{key: value for key, value in kwargs.items() if key in ("max_length", "max_new_tokens")})
        prompt = inputs if inputs is not None else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        prompt_length = prompt.shape[1] if prompt is not None else 0
        length = prompt_length + config.max_new_tokens if config.max_new_tokens is not None else config.max_length
        if length > self.config.n_positions:
            raise ValueError(
                f"prompt ({prompt_length} tokens) + max_new_tokens ({length - prompt_length}) "
                f"exceeds the context of {self.config.n_positions} positions; shorten the prompt (tokenizer "
                "truncation_side='left', max_length=...) or lower max_new_tokens; pipelines crop the prompt "
                "with handle_long_generation='hole'"
            )
        return super().generate(inputs, generation_config, **kwargs)

    if CACHE == "past_key_values":  # transformers 5.17-5.23: generate() passes the cache by its old name

        def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, past_key_values=None,
                                          attention_mask=None, inputs_embeds=None, is_first_iteration=False, **kwargs):
            inputs = super().prepare_inputs_for_generation(
                input_ids, next_sequence_length=next_sequence_length, past_key_values=past_key_values,
                attention_mask=attention_mask, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration,
                **kwargs,
            )
            if "past_key_values" in inputs:
                inputs["cache"] = inputs.pop("past_key_values")
            return inputs

    @deprecate_kwarg("past_key_values", version="5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        token_type_ids: torch.LongTensor | None = None,
        return_logits: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        """`labels` are the inputs themselves (shifted inside, -100 ignored); pass `shift_labels`
        (already shifted targets, e.g. the next-token windows of pretraining) to skip the shift.

        Training with targets takes the fast path: no KV cache, and the loss is computed in chunks over
        the real vocabulary; `logits` is then None (nothing for Accelerate to convert to fp32).
        `return_logits=False` takes that path in eval mode too (a validation loss without the (batch, length,
        vocabulary) logits and their fp32 copies: 33 GB at 64 x 1,024 tokens); `True` returns logits in
        training as well; None (the default) returns them except when training with targets."""
        shift_labels = kwargs.pop("shift_labels", None)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        has_targets = labels is not None or shift_labels is not None
        if has_targets and use_cache is None:
            use_cache = False  # scoring whole sequences: nothing to cache
        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            token_type_ids=token_type_ids,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        real_vocab = self.config.tokenizer_vocab_size

        if has_targets and (return_logits is False or (return_logits is None and self.training)):
            if shift_labels is None:
                shift_labels = nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
            loss = chunked_lm_loss(hidden_states, self.lm_head.weight, shift_labels, real_vocab, num_items_in_batch,
                                   softcap=self.config.logit_softcap)
            return CausalLMOutputWithPast(loss=loss, hidden_states=outputs.hidden_states, attentions=outputs.attentions)

        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices])
        if self.config.logit_softcap is not None:
            logits = softcap_logits(logits, self.config.logit_softcap)
        if real_vocab < self.config.vocab_size:
            # Rows past the real vocabulary only pad the matmul: no token there may ever win.
            logits[..., real_vocab:] = float("-inf")
        loss = None
        if has_targets:
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                vocab_size=self.config.vocab_size,
                shift_labels=None if shift_labels is None else shift_labels.contiguous(),
                num_items_in_batch=num_items_in_batch,
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE: getattr(outputs, CACHE)},
        )


# -- the language-model losses over the real vocabulary (training, chunked; HellaSwag scoring) ---------------


def softcap_logits(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(logits / cap): logits bounded in (-cap, cap) (Gemma 2; modded-nanogpt, nanochat use 15)."""
    return cap * torch.tanh(logits / cap)


def real_vocab_cross_entropy(hidden, head_weight, targets, real_vocab: int, reduction="sum", ignore_index=-100,
                             softcap: float | None = None):
    """Cross-entropy (fp32) of `targets` under the logits `hidden @ head_weight[:real_vocab].T` (soft-capped
    where `softcap` is set): padded vocabulary rows never enter (no -inf fill), and the fp32 copy is of these
    rows' logits only."""
    logits = nn.functional.linear(hidden, head_weight[:real_vocab]).float()
    if softcap is not None:
        logits = softcap_logits(logits, softcap)
    return nn.functional.cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)


class LinearCrossEntropy(torch.autograd.Function):
    """The summed cross-entropy of `targets` under the logits `hidden @ weight[:real_vocab].T`, a chunk of
    rows at a time, with each chunk's gradients computed in forward (softmax - one-hot, as Liger-Kernel's
    fused linear cross-entropy): the (rows, vocab) logits never exist whole, in bf16 or fp32, and backward
    recomputes nothing. Padded vocabulary rows never enter, so no -inf fill."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, real_vocab: int, chunks: int, ignore_index: int, softcap=None,
                wants_grad: bool = True):
        head = weight[:real_vocab]
        wants_grad = wants_grad and (ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        grad_hidden = torch.empty_like(hidden) if wants_grad else None
        grad_head = torch.zeros(head.shape, dtype=torch.float32, device=head.device) if wants_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_chunks = grad_hidden.chunk(chunks) if wants_grad else [None] * chunks
        for rows, row_targets, grad_rows in zip(hidden.chunk(chunks), targets.chunk(chunks), grad_chunks):
            logits = (rows @ head.T).float()
            if softcap is not None:
                logits = softcap_logits(logits, softcap)
            valid = row_targets != ignore_index
            safe = row_targets.masked_fill(~valid, 0).unsqueeze(1)
            log_probs = logits.log_softmax(-1)
            total = total - (log_probs.gather(1, safe).squeeze(1) * valid).sum()
            if wants_grad:
                grad = log_probs.exp_().scatter_add_(1, safe, torch.full_like(safe, -1, dtype=logits.dtype))
                if softcap is not None:  # d(cap * tanh(z / cap))/dz = 1 - tanh^2
                    grad = grad * (1 - (logits / softcap).square())
                grad = (grad * valid.unsqueeze(1)).to(rows.dtype)
                grad_rows.copy_(grad @ head)
                grad_head += (grad.T @ rows).float()
        if wants_grad:
            ctx.save_for_backward(grad_hidden, grad_head)
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_head = ctx.saved_tensors
        grad_weight = torch.zeros(ctx.weight_shape, dtype=ctx.weight_dtype, device=grad_head.device)
        grad_weight[: grad_head.shape[0]] = grad_head * grad_total
        return grad_hidden * grad_total.to(grad_hidden.dtype), grad_weight, None, None, None, None, None, None


def chunked_lm_loss(hidden, head_weight, targets, real_vocab: int, num_items_in_batch=None, chunks=8,
                    softcap: float | None = None):
    """The mean next-token loss (or sum / num_items_in_batch, as transformers' loss) through
    LinearCrossEntropy: memory of one chunk's logits, the compute of a plain head and loss."""
    hidden, targets = hidden.flatten(0, -2), targets.flatten()
    # needs_input_grad follows requires_grad even under torch.no_grad: the grad mode is read here
    total = LinearCrossEntropy.apply(hidden, head_weight, targets, real_vocab, chunks, -100, softcap,
                                     torch.is_grad_enabled())
    count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
    return total / count


# -- the other GPT-2 heads (same parameter names and conventions as transformers' GPT2For*) -----------


class NanoGPT2ForSequenceClassification(NanoGPT2PreTrainedModel):
    """A linear `score` (no bias) on the last non-padding token of each row, as GPT-2's."""

    def __init__(self, config: NanoGPT2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = NanoGPT2Model(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                **kwargs) -> SequenceClassifierOutputWithPast:
        outputs = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   inputs_embeds=inputs_embeds, use_cache=False, return_dict=True,
                                   **kwargs)
        logits = self.score(outputs.last_hidden_state)
        batch_size = logits.shape[0]
        pad_token_id = self.config.pad_token_id
        if pad_token_id is None and batch_size != 1:
            raise ValueError("a batch of more than one row needs config.pad_token_id to find each row's last token")
        if pad_token_id is None or input_ids is None:
            last_token = torch.full((batch_size,), -1, device=logits.device)
        else:  # the rightmost non-pad token: works for left and right padding
            non_pad = (input_ids != pad_token_id).to(logits.device, torch.int32)
            positions = torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32)
            last_token = (positions * non_pad).argmax(-1)
        pooled_logits = logits[torch.arange(batch_size, device=logits.device), last_token]
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=pooled_logits, config=self.config)
        return SequenceClassifierOutputWithPast(loss=loss, logits=pooled_logits, hidden_states=outputs.hidden_states,
                                                attentions=outputs.attentions)


class NanoGPT2ForTokenClassification(NanoGPT2PreTrainedModel):
    """Dropout then a linear `classifier` on every position, as GPT-2's (dropout: config.classifier_dropout,
    else 0.1)."""

    def __init__(self, config: NanoGPT2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = NanoGPT2Model(config)
        classifier_dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(0.1 if classifier_dropout is None else classifier_dropout)
        self.classifier = nn.Linear(config.n_embd, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                **kwargs) -> TokenClassifierOutput:
        outputs = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   inputs_embeds=inputs_embeds, use_cache=False, return_dict=True,
                                   **kwargs)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = self.loss_function(logits, labels, self.config) if labels is not None else None
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                     attentions=outputs.attentions)


class NanoGPT2ForQuestionAnswering(NanoGPT2PreTrainedModel):
    """Extractive QA: a linear `qa_outputs` gives each position a span-start and a span-end logit."""

    def __init__(self, config: NanoGPT2Config):
        super().__init__(config)
        self.transformer = NanoGPT2Model(config)
        self.qa_outputs = nn.Linear(config.n_embd, 2)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                start_positions=None, end_positions=None, **kwargs) -> QuestionAnsweringModelOutput:
        outputs = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   inputs_embeds=inputs_embeds, use_cache=False, return_dict=True,
                                   **kwargs)
        start_logits, end_logits = (t.contiguous() for t in self.qa_outputs(outputs.last_hidden_state).unbind(-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                            hidden_states=outputs.hidden_states, attentions=outputs.attentions)


AUTO_CLASSES = {
    "AutoModel": NanoGPT2Model,
    "AutoModelForCausalLM": NanoGPT2ForCausalLM,
    "AutoModelForSequenceClassification": NanoGPT2ForSequenceClassification,
    "AutoModelForTokenClassification": NanoGPT2ForTokenClassification,
    "AutoModelForQuestionAnswering": NanoGPT2ForQuestionAnswering,
}
# Class-level state, set at import so that every save in this process copies the code files.
NanoGPT2Config.register_for_auto_class()
for _auto_class, _model_class in AUTO_CLASSES.items():
    _model_class.register_for_auto_class(_auto_class)

__all__ = ["NanoGPT2ForCausalLM", "NanoGPT2Model", "NanoGPT2PreTrainedModel", "NanoGPT2ForSequenceClassification",
           "NanoGPT2ForTokenClassification", "NanoGPT2ForQuestionAnswering", "AUTO_CLASSES"]
