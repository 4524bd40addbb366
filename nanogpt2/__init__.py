"""nanogpt2: GPT-2 (124M) pretraining from scratch, native to the Hugging Face stack.

`import nanogpt2` registers the model with AutoConfig / AutoModelForCausalLM.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_nanogpt2 import (
    EOT_TOKEN_ID,
    GPT2_VOCAB_SIZE,
    PADDED_VOCAB_SIZE,
    PRESETS,
    NanoGPT2Config,
)
from .modeling_nanogpt2 import NanoGPT2ForCausalLM, NanoGPT2Model, NanoGPT2PreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(NanoGPT2Config.model_type, NanoGPT2Config, exist_ok=True)
AutoModelForCausalLM.register(NanoGPT2Config, NanoGPT2ForCausalLM, exist_ok=True)

__all__ = [
    "NanoGPT2Config",
    "NanoGPT2ForCausalLM",
    "NanoGPT2Model",
    "NanoGPT2PreTrainedModel",
    "PRESETS",
    "GPT2_VOCAB_SIZE",
    "PADDED_VOCAB_SIZE",
    "EOT_TOKEN_ID",
]
