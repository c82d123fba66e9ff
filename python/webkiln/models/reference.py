"""A NumPy forward pass of the chat models (models/llm.py's families), over a whole token
sequence at once: the logits at every position.

It is the build's yardstick, not a runtime: package/quality.py runs it twice, on the source's
full-precision weights and on the packaged ones (what the kernels see), to say how much the
quantization moved the next-token distributions. It needs no compiler, runs in a second or two
for a 0.5B model on 64 tokens, and is checked against transformers in tests/test_quality.py.

Weights come from a callable, by Hugging Face name, so a caller can dequantize them one
layer at a time instead of holding two float copies of the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..model_source import LlmConfig

Weights = Callable[[str], np.ndarray]


def inverse_frequencies(cfg: LlmConfig, layer: int = 0) -> np.ndarray:
    """Rope's per-pair frequencies (float64) at `layer`'s base, with Llama 3's scaling when the
    config has it (Gemma 3's sliding layers take their own base, unscaled)."""
    d = cfg.rotary_dim or cfg.head_dim
    freq = 1.0 / cfg.layer_rope_theta(layer) ** (np.arange(0, d, 2, dtype=np.float64) / d)
    scaling = cfg.rope_scaling
    if not scaling or cfg.is_sliding(layer) and cfg.rope_local_theta is not None:
        return freq
    if scaling["rope_type"] == "longrope":  # the short divisors: contexts stay within the original
        return freq / np.asarray(scaling["short_factor"], dtype=np.float64)
    if scaling["rope_type"] != "llama3":
        raise ValueError(f"rope scaling {scaling['rope_type']!r} has no reference here")
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / freq
    # Long wavelengths are slowed by `factor`, short ones kept, those between blended.
    smooth = np.clip((original / wavelength - low) / (high - low), 0.0, 1.0)
    return (1 - smooth) * freq / factor + smooth * freq


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, offset: float | None = None) -> np.ndarray:
    scale = weight + np.float32(offset) if offset else weight
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x**3)))


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Hugging Face's "rotate half": pairs (i, i + r/2) of the first r = cos.shape[-1] dims of
    each head, the rest passed through. x [heads, seq, d]."""
    r = cos.shape[-1]
    turned, rest = x[..., :r], x[..., r:]
    half = r // 2
    rotated = np.concatenate([-turned[..., half:], turned[..., :half]], axis=-1)
    return np.concatenate([turned * cos + rotated * sin, rest], axis=-1)


def forward(cfg: LlmConfig, weights: Weights, ids: Sequence[int]) -> np.ndarray:
    """Logits [len(ids), vocab] (float32) at every position, causal attention."""
    f32 = np.float32
    n = len(ids)
    heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    offset = cfg.norm_weight_offset
    causal = np.triu(np.full((n, n), -np.inf, dtype=f32), k=1)
    # A sliding-window layer's query sees itself and the window - 1 keys before it.
    window = np.tril(np.full((n, n), -np.inf, dtype=f32), k=-cfg.sliding_window) if cfg.sliding_window else 0
    x = weights("model.embed_tokens.weight")[np.asarray(ids)].astype(f32)
    if cfg.embedding_multiplier is not None:
        x = x * f32(cfg.embedding_multiplier)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        angles = np.arange(n, dtype=np.float64)[:, None] * inverse_frequencies(cfg, i)[None, :]
        scale = (cfg.rope_scaling or {}).get("attention_factor", 1.0)  # LongRoPE's
        cos = (np.concatenate([np.cos(angles)] * 2, axis=-1) * scale).astype(f32)
        sin = (np.concatenate([np.sin(angles)] * 2, axis=-1) * scale).astype(f32)
        mask = causal + window if cfg.is_sliding(i) else causal

        def norm(name: str, h: np.ndarray) -> np.ndarray:
            return _rms_norm(h, weights(p + name + ".weight"), cfg.rms_norm_eps, offset).astype(f32)

        def linear(name: str, h: np.ndarray) -> np.ndarray:
            y = h @ weights(p + name + ".weight").astype(f32).T
            return y + weights(p + name + ".bias").astype(f32) if cfg.attention_bias and name in (
                "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj") else y

        h = norm("input_layernorm", x)
        q = linear("self_attn.q_proj", h).reshape(n, heads, d).transpose(1, 0, 2)
        k = linear("self_attn.k_proj", h).reshape(n, kv_heads, d).transpose(1, 0, 2)
        v = linear("self_attn.v_proj", h).reshape(n, kv_heads, d).transpose(1, 0, 2)
        if cfg.qk_norm:
            q, k = norm("self_attn.q_norm", q), norm("self_attn.k_norm", k)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        group = heads // kv_heads
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        scale = f32(cfg.attention_scale if cfg.attention_scale is not None else 1 / math.sqrt(d))
        scores = q @ k.transpose(0, 2, 1) * scale + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = (scores / scores.sum(-1, keepdims=True)) @ v
        out = linear("self_attn.o_proj", attention.transpose(1, 0, 2).reshape(n, heads * d))
        if cfg.sandwich_norms:
            x = x + norm("post_attention_layernorm", out)
            h = norm("pre_feedforward_layernorm", x)
        else:
            x = x + out
            h = norm("post_attention_layernorm", x)
        gate, up = linear("mlp.gate_proj", h), linear("mlp.up_proj", h)
        act = _gelu_tanh(gate) if cfg.hidden_act == "gelu_pytorch_tanh" else gate / (1 + np.exp(-gate))
        out = linear("mlp.down_proj", act * up)
        x = x + (norm("post_feedforward_layernorm", out) if cfg.sandwich_norms else out)
    x = _rms_norm(x, weights("model.norm.weight"), cfg.rms_norm_eps, offset).astype(f32)
    head = weights("model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight")
    logits = (x @ head.astype(f32).T).astype(f32)
    cap = cfg.final_logit_softcapping
    return (np.tanh(logits / f32(cap)) * f32(cap)).astype(f32) if cap is not None else logits
