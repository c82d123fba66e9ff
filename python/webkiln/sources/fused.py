"""Fused weight matrices read as the separate ones every other family stores."""

from __future__ import annotations

from ..model_source import LlmConfig, SourceError, SourceTensor


def split_fused(tensors: dict[str, SourceTensor], config: LlmConfig) -> dict[str, SourceTensor]:
    """Phi-3 stores q/k/v as one `qkv_proj` and gate/up as one `gate_up_proj` (llama.cpp:
    `attn_qkv`, `ffn_up`); they become the Llama names (row blocks of the fused matrix, read
    lazily), which the build fuses again. A block-quantized GGUF matrix splits exactly too:
    GGML blocks never straddle rows."""
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    ffn = config.intermediate_size
    parts = {"self_attn.qkv_proj": [("self_attn.q_proj", q), ("self_attn.k_proj", kv), ("self_attn.v_proj", kv)],
             "mlp.gate_up_proj": [("mlp.gate_proj", ffn), ("mlp.up_proj", ffn)]}
    out: dict[str, SourceTensor] = {}
    for name, tensor in tensors.items():
        fused = next((f for f in parts if name.endswith(f".{f}.weight")), None)
        if fused is None:
            out[name] = tensor
            continue
        prefix, start = name[: -len(f"{fused}.weight")], 0
        for part, rows in parts[fused]:
            out[f"{prefix}{part}.weight"] = _rows(tensor, f"{prefix}{part}.weight", start, rows)
            start += rows
    return out


def _rows(tensor: SourceTensor, name: str, start: int, rows: int) -> SourceTensor:
    if tensor.shape[0] < start + rows:
        raise SourceError(f"{tensor.name} has {tensor.shape[0]} rows, fewer than the config's q/k/v or gate/up "
                          "need; the weights do not match the config.")
    return SourceTensor(name=name, shape=(rows, *tensor.shape[1:]), ggml_type=tensor.ggml_type,
                        raw=lambda: tensor.raw()[start:start + rows],
                        dequantize=lambda: tensor.dequantize()[start:start + rows])
