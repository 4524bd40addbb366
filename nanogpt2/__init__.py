"""nanogpt2: GPT-2 (124M) pretraining from scratch, native to the Hugging Face stack.

`import nanogpt2` registers the config and every model class with its Auto class (AutoModel,
AutoModelForCausalLM, ...ForSequenceClassification, ...ForTokenClassification, ...ForQuestionAnswering).
"""

import transformers
from transformers import AutoConfig

from .configuration_nanogpt2 import (
    EOT_TOKEN_ID,
    GPT2_VOCAB_SIZE,
    PADDED_VOCAB_SIZE,
    PRESETS,
    NanoGPT2Config,
)
from .modeling_nanogpt2 import (
    AUTO_CLASSES,
    NanoGPT2ForCausalLM,
    NanoGPT2ForQuestionAnswering,
    NanoGPT2ForSequenceClassification,
    NanoGPT2ForTokenClassification,
    NanoGPT2Model,
    NanoGPT2PreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(NanoGPT2Config.model_type, NanoGPT2Config, exist_ok=True)
for _auto_class, _model_class in AUTO_CLASSES.items():
    getattr(transformers, _auto_class).register(NanoGPT2Config, _model_class, exist_ok=True)

__all__ = [
    "NanoGPT2Config",
    "NanoGPT2ForCausalLM",
    "NanoGPT2Model",
    "NanoGPT2ForSequenceClassification",
    "NanoGPT2ForTokenClassification",
    "NanoGPT2ForQuestionAnswering",
    "NanoGPT2PreTrainedModel",
    "PRESETS",
    "GPT2_VOCAB_SIZE",
    "PADDED_VOCAB_SIZE",
    "EOT_TOKEN_ID",
]
