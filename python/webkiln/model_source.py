"""The in-memory description every model source produces: config, tensors, tokenizer.

Sources (GGUF file, Hugging Face folder, hub id) differ in layout; after
loading they all look like this, with Hugging Face tensor names and shapes, so
models/ and quant/ never care where weights came from.

A module of its own, below sources/, models/ and quant/: the loaders (sources/) need the
diffusion models' configs and parameter bindings (models/), and models/ and quant/ need
these types, so keeping them inside sources/ would make those packages import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import WebkilnError


class SourceError(WebkilnError, ValueError):
    """A model source is missing, malformed or unsupported. The message names the
    file or field and says how to fix it; the CLI prints it and exits non-zero."""


SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3", "phi3")


def _family(**kwargs: Any) -> Any:
    """A field only some families set: None elsewhere, and then left out of the manifest."""
    return field(default=None, metadata={"optional": True}, **kwargs)


@dataclass(frozen=True)
class LlmConfig:
    architecture: str  # one of SUPPORTED_ARCHITECTURES
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    context_length: int  # the model's trained maximum
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    attention_bias: bool  # q/k/v projections have biases (Qwen2)
    qk_norm: bool = False  # an RMSNorm over each head of q and k before rope (Qwen3)
    # Rope frequency scaling as transformers names it, or None: {"rope_type": "llama3", "factor",
    # "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"} (Llama 3.1+), or
    # {"rope_type": "longrope", "short_factor", "long_factor", "original_max_position_embeddings",
    # "attention_factor"} (Phi-3/3.5/4-mini)
    rope_scaling: dict[str, Any] | None = None
    # Gemma 3 (text). Each is None for the other families, which keeps their manifests as before.
    hidden_act: str | None = _family()  # the gate's activation: None is SiLU; "gelu_pytorch_tanh" (GeGLU)
    norm_weight_offset: float | None = _family()  # RMSNorm scales by offset + weight (Gemma: 1)
    sandwich_norms: bool | None = _family()  # norms after attention and before/after the MLP
    embedding_multiplier: float | None = _family()  # embeddings are scaled by it (Gemma: sqrt(hidden))
    attention_scale: float | None = _family()  # softmax scale; None: head_dim ** -0.5
    final_logit_softcapping: float | None = _family()  # logits = cap * tanh(logits / cap)
    sliding_window: int | None = _family()  # keys a sliding-window layer sees, the query's own included
    layer_types: tuple[str, ...] | None = _family()  # per layer: "sliding_attention" | "full_attention"
    rope_local_theta: float | None = _family()  # rope base of the sliding-window layers
    # Phi-4-mini: rope turns only the first `rotary_dim` dims of each head (None: all of them).
    rotary_dim: int | None = _family()

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types is not None and self.layer_types[layer] == "sliding_attention"

    def layer_rope_theta(self, layer: int) -> float:
        return self.rope_local_theta if self.is_sliding(layer) and self.rope_local_theta else self.rope_theta


# GGML block types we keep as they are (see quant/); anything else is dequantized.
KEPT_GGML_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")


@dataclass
class SourceTensor:
    """One weight, named and shaped as in Hugging Face (`[out_features, in_features]` for linears).

    `ggml_type` is set for GGUF tensors ("F32", "F16", "Q4_1", "Q6_K", ...), None otherwise.
    `raw()` gives, for KEPT_GGML_TYPES, the GGML blocks as uint8 `[rows, bytes_per_row]`
    (rows = shape[0], already un-permuted like the dequantized values); for float
    tensors, the array in its stored dtype. `dequantize()` always gives float32 of `shape`,
    equal to what the `gguf` package's dequantization gives.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: str | None
    raw: Callable[[], np.ndarray]
    dequantize: Callable[[], np.ndarray]


@dataclass
class ModelSource:
    kind: str  # "gguf" | "hf-folder" | "hub"
    origin: str  # path or hub id, for messages and the manifest
    name: str  # suggested model id, e.g. "SmolLM2-135M-Instruct"
    config: LlmConfig
    tensors: dict[str, SourceTensor]
    tokenizer_json: str  # Hugging Face tokenizers format
    chat_template: str | None
    bos_token_id: int | None
    eos_token_ids: list[int]  # generation stops at any of these
    generation_defaults: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, ...
    files: list[Path] = field(default_factory=list)  # input files, hashed into the build record
