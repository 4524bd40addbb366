"""NanoGPT2Config: the GPT-2 architecture as a Hugging Face config.

Field names follow OpenAI GPT-2 / nanoGPT (n_layer, n_head, n_embd, n_positions); the standard
transformers names (hidden_size, num_attention_heads, ...) are aliases through `attribute_map`.
"""

from transformers import PretrainedConfig

GPT2_VOCAB_SIZE = 50257  # 50,000 BPE merges + 256 byte tokens + <|endoftext|>
PADDED_VOCAB_SIZE = 50304  # next multiple of 64 (build-nanogpt): faster matmuls on GPU
EOT_TOKEN_ID = 50256

# The four OpenAI GPT-2 sizes (Radford et al. 2019, table 2) and a model for 2 CPU cores.
PRESETS = {
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-350m": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-774m": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-1558m": dict(n_layer=48, n_head=25, n_embd=1600),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, n_positions=256),
}


class NanoGPT2Config(PretrainedConfig):
    """Configuration of a GPT-2 style decoder.

    `vocab_size` is the number of rows of the embedding (may be padded, e.g. 50304 for speed);
    `tokenizer_vocab_size` is the number of real tokens. Ids at or above it are never produced: their
    logits are set to -inf. Left as None it is 50257 (GPT-2's) for the padded 50304, else vocab_size.
    """

    model_type = "nanogpt2"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "n_positions",
    }

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_positions: int = 1024
    vocab_size: int = PADDED_VOCAB_SIZE
    tokenizer_vocab_size: int | None = None
    bias: bool = True
    dropout: float = 0.0
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = EOT_TOKEN_ID
    eos_token_id: int | None = EOT_TOKEN_ID
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.tokenizer_vocab_size is None:
            padded_gpt2 = self.vocab_size == PADDED_VOCAB_SIZE
            self.tokenizer_vocab_size = GPT2_VOCAB_SIZE if padded_gpt2 else self.vocab_size
        self._validate()
        super().__post_init__(**kwargs)

    def _validate(self):
        for name in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "tokenizer_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"NanoGPT2Config.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"NanoGPT2Config.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.tokenizer_vocab_size > self.vocab_size:
            raise ValueError(
                f"NanoGPT2Config.tokenizer_vocab_size ({self.tokenizer_vocab_size}) must not exceed "
                f"vocab_size ({self.vocab_size})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"NanoGPT2Config.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("layer_norm_epsilon", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"NanoGPT2Config.{name} must be positive, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "NanoGPT2Config":
        """A config for a named size: gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1558m or tiny."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


__all__ = ["NanoGPT2Config", "PRESETS", "GPT2_VOCAB_SIZE", "PADDED_VOCAB_SIZE", "EOT_TOKEN_ID"]
