"""NanoGPT2Config: the GPT-2 architecture as a Hugging Face config.

Field names follow OpenAI GPT-2 / nanoGPT (n_layer, n_head, n_embd, n_positions); the standard
transformers names (hidden_size, num_attention_heads, ...) are aliases through `attribute_map`.
Validated the way transformers' own GPT2Config is: huggingface_hub's `@strict` checks every field's
type on assignment, the field validators below check the values, and the `validate_*` methods the
fields' relations; errors name the field.
"""

import re
from pathlib import Path

import yaml
from huggingface_hub.dataclasses import as_validated_field, strict
from huggingface_hub.errors import StrictDataclassError
from transformers import PreTrainedConfig

GPT2_VOCAB_SIZE = 50257  # 50,000 BPE merges + 256 byte tokens + <|endoftext|>
PADDED_VOCAB_SIZE = 50304  # next multiple of 64 (build-nanogpt): faster matmuls on GPU
EOT_TOKEN_ID = 50256


def padded_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """`vocab_size` rounded up to a multiple (50257 -> 50304 for 64): embedding rows for faster matmuls."""
    return -(-vocab_size // multiple) * multiple


# The presets are the recipes in nanogpt2/recipes/<name>.yaml (run_pretrain.py settings, read by its --preset):
# the four OpenAI GPT-2 sizes (Radford et al. 2019, table 2) and a model for 2 CPU cores. The folder is absent
# where this file runs as a checkpoint's remote code: there PRESETS is empty and from_preset says so.
RECIPE_DIR = Path(__file__).with_name("recipes")
OPTIONS = ("position_embedding", "rotary_base", "normalization", "qk_norm", "mlp_activation", "bias",
           "tie_word_embeddings", "logit_softcap", "zero_init_projections")  # GPT-2's choice unless set
ARCHITECTURE = ("n_layer", "n_head", "n_embd", "n_positions", *OPTIONS)


def read_presets(folder: Path) -> dict[str, dict]:
    """{name: architecture} of the recipes in `folder`, in natural order (gpt2-124m, gpt2-350m, ..., tiny)."""
    files = sorted(folder.glob("*.yaml"), key=lambda path: [int(part) if part.isdigit() else part
                                                            for part in re.split(r"(\d+)", path.stem)])
    recipes = {path.stem: yaml.safe_load(path.read_text()) for path in files}
    return {name: {key: recipe[key] for key in ARCHITECTURE if key in recipe} for name, recipe in recipes.items()}


PRESETS = read_presets(RECIPE_DIR)


@as_validated_field
def positive(value):
    if value is not None and not value > 0:
        raise ValueError(f"must be positive, got {value!r}")


@as_validated_field
def probability(value):
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be in [0, 1), got {value!r}")


def one_of(*choices):
    @as_validated_field
    def validator(value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")

    return validator


# The options that GPT-2's architecture (and so `convert to-gpt2`) cannot express away from these values; bias=False
# and zero-initialised projections convert (zero biases; an init is no architecture).
GPT2_ARCHITECTURE = {"position_embedding": "learned", "normalization": "layernorm", "qk_norm": False,
                     "mlp_activation": "gelu_tanh", "logit_softcap": None, "tie_word_embeddings": True}


def gpt2_differences(config: dict) -> list[str]:
    """`name=value` of each option of a config (as a dict: config.json) that GPT-2's architecture cannot express."""
    return [f"{name}={config[name]!r}" for name, default in GPT2_ARCHITECTURE.items()
            if config.get(name, default) != default]


@strict
class NanoGPT2Config(PreTrainedConfig):
    """Configuration of a GPT-2 style decoder.

    `vocab_size` is the number of rows of the embedding (may be padded, e.g. 50304 for speed);
    `tokenizer_vocab_size` is the number of real tokens. Ids at or above it are never produced: their
    logits are set to -inf. Left as None it is 50257 (GPT-2's) for the padded 50304, else vocab_size.

    The architecture options default to GPT-2's choice; the others are those of the modded-nanogpt speedrun
    and nanochat (see nanogpt2/recipes/gpt2-124m-modern.yaml): `position_embedding` "learned" (a wpe table)
    or "rotary" (RoPE, Su et al. 2021, base `rotary_base`); `normalization` "layernorm" or "rmsnorm" (Zhang &
    Sennrich 2019); `qk_norm` normalises queries and keys per head (Henry et al. 2020); `mlp_activation`
    "gelu_tanh" or "relu2" (ReLU squared, So et al. 2021, Primer); `logit_softcap` C maps the logits to
    C * tanh(logits / C) (Gemma 2), None for none; `zero_init_projections` starts the residual projections
    at zero (modded-nanogpt), so every block starts as the identity.
    """

    model_type = "nanogpt2"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "n_positions",
    }

    n_layer: int = positive(default=12)
    n_head: int = positive(default=12)
    n_embd: int = positive(default=768)
    n_positions: int = positive(default=1024)
    vocab_size: int = positive(default=PADDED_VOCAB_SIZE)
    tokenizer_vocab_size: int | None = positive(default=None)
    bias: bool = True
    dropout: float | int = probability(default=0.0)
    layer_norm_epsilon: float = positive(default=1e-5)
    initializer_range: float = positive(default=0.02)
    tie_word_embeddings: bool = True
    position_embedding: str = one_of("learned", "rotary")(default="learned")
    rotary_base: float | int = positive(default=10000.0)
    normalization: str = one_of("layernorm", "rmsnorm")(default="layernorm")
    qk_norm: bool = False
    mlp_activation: str = one_of("gelu_tanh", "relu2")(default="gelu_tanh")
    logit_softcap: float | int | None = positive(default=None)
    zero_init_projections: bool = False
    use_cache: bool = True
    bos_token_id: int | None = EOT_TOKEN_ID
    eos_token_id: int | None = EOT_TOKEN_ID
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.tokenizer_vocab_size is None:
            padded_gpt2 = self.vocab_size == PADDED_VOCAB_SIZE
            self.tokenizer_vocab_size = GPT2_VOCAB_SIZE if padded_gpt2 else self.vocab_size
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    def validate_vocabulary(self):
        if self.tokenizer_vocab_size > self.vocab_size:
            raise ValueError(
                f"tokenizer_vocab_size ({self.tokenizer_vocab_size}) must not exceed vocab_size ({self.vocab_size})"
            )

    def validate_rotary(self):
        if self.position_embedding == "rotary" and self.head_dim % 2:
            raise ValueError(f"position_embedding='rotary' needs an even head_dim, got {self.head_dim}")

    def gpt2_differences(self) -> list[str]:
        """The options set away from GPT-2's architecture, as `name=value` (empty for a plain GPT-2)."""
        return gpt2_differences(self.to_dict())

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "NanoGPT2Config":
        """A config for a named size, the architecture of its recipe nanogpt2/recipes/<name>.yaml: gpt2-124m,
        gpt2-350m, gpt2-774m, gpt2-1558m or tiny. An invalid override raises ValueError with a one-line message
        naming the field."""
        if not PRESETS:
            raise ValueError(f"no preset recipes here: {RECIPE_DIR} is absent (a checkpoint's remote code ships "
                             "without them); install nanogpt2, or pass the sizes to NanoGPT2Config(n_layer=...)")
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        try:
            return cls(**{**PRESETS[name], **overrides})
        except StrictDataclassError as error:
            raise ValueError(f"NanoGPT2Config: {' '.join(str(error).split())}") from error


__all__ = ["NanoGPT2Config", "OPTIONS", "PRESETS", "RECIPE_DIR", "GPT2_VOCAB_SIZE", "PADDED_VOCAB_SIZE", "EOT_TOKEN_ID",
           "padded_vocab_size"]
