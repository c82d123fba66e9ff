"""CLIP text encoder (transformers' CLIPTextModel) as a tvm.relax.frontend.nn module.

Token + position embeddings, pre-LayerNorm transformer layers with a causal mask,
quick_gelu (SD 1.x, OpenAI CLIP) or exact gelu (SD 2.x, OpenCLIP) MLPs and a final
LayerNorm. The output is `last_hidden_state`, what Stable Diffusion pipelines feed to
the UNet's cross-attention.

Entry point (packed parameters last):
  encode_text(input_ids[1, max_position_embeddings] int32) -> [1, 77, hidden]
"""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from .config import ClipTextConfig
from .layers import LayerNorm, Linear, attention, cast


class ClipAttention(nn.Module):
    def __init__(self, cfg: ClipTextConfig, dtype: str) -> None:
        h = cfg.hidden_size
        self.q_proj = Linear(h, h, dtype=dtype)
        self.k_proj = Linear(h, h, dtype=dtype)
        self.v_proj = Linear(h, h, dtype=dtype)
        self.out_proj = Linear(h, h, dtype=dtype)
        self.heads = cfg.num_attention_heads

    def forward(self, x):
        return self.out_proj(attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, causal=True))


class ClipMLP(nn.Module):
    def __init__(self, cfg: ClipTextConfig, dtype: str) -> None:
        self.fc1 = Linear(cfg.hidden_size, cfg.intermediate_size, dtype=dtype)
        self.fc2 = Linear(cfg.intermediate_size, cfg.hidden_size, dtype=dtype)
        self.act = cfg.hidden_act

    def forward(self, x):
        h = self.fc1(x)
        if self.act == "quick_gelu":
            h = h * op.sigmoid(h * 1.702)
        else:
            h = op.gelu(h)
        return self.fc2(h)


class ClipLayer(nn.Module):
    def __init__(self, cfg: ClipTextConfig, dtype: str) -> None:
        self.layer_norm1 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.self_attn = ClipAttention(cfg, dtype)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.mlp = ClipMLP(cfg, dtype)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Table(nn.Module):
    """An embedding table (`.weight`), indexed explicitly."""

    def __init__(self, rows: int, dim: int, dtype: str) -> None:
        self.weight = nn.Parameter((rows, dim), dtype)


class ClipEmbeddings(nn.Module):
    def __init__(self, cfg: ClipTextConfig, dtype: str) -> None:
        self.token_embedding = Table(cfg.vocab_size, cfg.hidden_size, dtype)
        self.position_embedding = Table(cfg.max_position_embeddings, cfg.hidden_size, dtype)

    def forward(self, input_ids):
        b, s = (int(d) for d in input_ids.shape)
        tokens = op.take(self.token_embedding.weight, op.reshape(input_ids, (b * s,)), axis=0)
        hidden = int(self.token_embedding.weight.shape[1])
        # The spec fixes the prompt length to max_position_embeddings: every position is used.
        positions = op.reshape(self.position_embedding.weight, (1, s, hidden))
        return op.reshape(tokens, (b, s, hidden)) + positions


class ClipTextModel(nn.Module):
    def __init__(self, cfg: ClipTextConfig, dtype: str = "float32") -> None:
        self.cfg, self.dtype = cfg, dtype
        self.embeddings = ClipEmbeddings(cfg, dtype)
        self.encoder = ClipEncoder(cfg, dtype)
        self.final_layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def encode_text(self, input_ids):
        x = self.encoder(self.embeddings(input_ids))
        return cast(self.final_layer_norm(x), self.dtype)

    def spec(self):
        ids = nn.spec.Tensor([1, self.cfg.max_position_embeddings], "int32")
        return {"encode_text": {"input_ids": ids, "$": {"param_mode": "packed", "effect_mode": "none"}}}


class ClipEncoder(nn.Module):
    def __init__(self, cfg: ClipTextConfig, dtype: str) -> None:
        self.layers = nn.ModuleList([ClipLayer(cfg, dtype) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
