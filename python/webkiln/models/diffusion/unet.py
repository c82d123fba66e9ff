"""diffusers' UNet2DConditionModel (Stable Diffusion 1.x / 2.x / Turbo) as a tvm.relax.frontend.nn module.

Covers CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D /
UpBlock2D, ResnetBlock2D with the time embedding, Transformer2DModel (GroupNorm,
proj_in / proj_out, self-attention, cross-attention, GEGLU feed-forward) and the sinusoidal
timestep embedding (flip_sin_to_cos, freq_shift). `proj_in` / `proj_out` are linears here
whether the checkpoint stores 1x1 convolutions or linears (`use_linear_projection`): the two
are the same map, and params.py reshapes conv weights.

Entry point (packed parameters last):
  unet(latents[B, in_channels, h, w], timestep[B] f32, text_embeds[B, 77, cross_attention_dim])
      -> noise[B, out_channels, h, w]
B (default 2) is 2 for classifier-free guidance (unconditional and conditional halves); h and w are
fixed at export and must be multiples of `UNetConfig.downscale`.
"""

from __future__ import annotations

import numpy as np
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from .config import UNetConfig
from .layers import (
    Conv2d,
    DiffusionShapeError,
    Downsample2D,
    Empty,
    GroupNorm,
    LayerNorm,
    Linear,
    ResnetBlock2D,
    Upsample2D,
    as_float32,
    attention,
    cast,
    concat_parts,
    from_tokens,
    near_equal_pieces,
    split_sizes,
    to_tokens,
)

TRANSFORMER_NORM_EPS = 1e-6  # Transformer2DModel's GroupNorm
BLOCK_NORM_EPS = 1e-5  # BasicTransformerBlock's LayerNorms


class Attention(nn.Module):
    """diffusers' Attention as BasicTransformerBlock uses it: q/k/v without bias, to_out.0 with."""

    def __init__(self, dim: int, context_dim: int, heads: int, dtype: str, max_binding: int | None = None) -> None:
        self.to_q = Linear(dim, dim, bias=False, dtype=dtype)
        self.to_k = Linear(context_dim, dim, bias=False, dtype=dtype)
        self.to_v = Linear(context_dim, dim, bias=False, dtype=dtype)
        self.to_out = nn.ModuleList([Linear(dim, dim, dtype=dtype)])
        self.heads, self.max_binding = heads, max_binding

    def forward(self, x, context=None):
        context = x if context is None else context
        return self.to_out[0](attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads,
                                        score_budget=self.max_binding))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int, dtype: str) -> None:
        self.proj = Linear(dim, inner * 2, dtype=dtype)

    def forward(self, x):
        hidden, gate = op.split(self.proj(x), 2, axis=-1)
        # gelu (erf) in float32, as PyTorch's f16 gelu computes internally (LLVM also takes over a
        # minute on the f16 erf kernel); cast, gelu, cast and multiply fuse into one kernel
        return hidden * cast(op.gelu(as_float32(gate)), gate.dtype)


class FeedForward(nn.Module):
    """GEGLU then a linear, token by token. When the GEGLU projection of all tokens
    ([B, S, 8 * dim]: 180 MiB in f32 for SD 2.1's first level at 768x768) would be over
    `max_binding`, the tokens go through in chunks whose projection fits (the same numbers)."""

    def __init__(self, dim: int, dtype: str, max_binding: int | None = None) -> None:
        self.net = nn.ModuleList([GEGLU(dim, dim * 4, dtype), Empty(), Linear(dim * 4, dim, dtype=dtype)])
        self.dim, self.max_binding = dim, max_binding

    def forward(self, x):
        b, s, _ = (int(d) for d in x.shape)
        token_bytes = b * 8 * self.dim * np.dtype(str(x.dtype)).itemsize  # one token's projection, whole batch
        if self.max_binding is None or s * token_bytes <= self.max_binding:
            return self.net[2](self.net[0](x))
        chunks = near_equal_pieces(s, max(1, self.max_binding // token_bytes))
        return concat_parts([self.net[2](self.net[0](part)) for part in split_sizes(x, chunks, 1)], 1)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, cross_dim: int, dtype: str, max_binding: int | None = None) -> None:
        self.norm1 = LayerNorm(dim, BLOCK_NORM_EPS)
        self.attn1 = Attention(dim, dim, heads, dtype, max_binding)
        self.norm2 = LayerNorm(dim, BLOCK_NORM_EPS)
        self.attn2 = Attention(dim, cross_dim, heads, dtype, max_binding)
        self.norm3 = LayerNorm(dim, BLOCK_NORM_EPS)
        self.ff = FeedForward(dim, dtype, max_binding)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    def __init__(self, channels: int, heads: int, cross_dim: int, layers: int, groups: int, dtype: str,
                 max_binding: int | None = None) -> None:
        self.norm = GroupNorm(groups, channels, TRANSFORMER_NORM_EPS)
        self.proj_in = Linear(channels, channels, dtype=dtype)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, cross_dim, dtype, max_binding) for _ in range(layers)])
        self.proj_out = Linear(channels, channels, dtype=dtype)

    def forward(self, x, context):
        _, _, h, w = (int(d) for d in x.shape)
        tokens = self.proj_in(to_tokens(self.norm(x)))
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return from_tokens(self.proj_out(tokens), h, w) + x


class DownBlock(nn.Module):
    """CrossAttnDownBlock2D (with attentions) or DownBlock2D."""

    def __init__(self, cfg: UNetConfig, i: int, cin: int, cout: int, dtype: str,
                 max_binding: int | None = None) -> None:
        cross = cfg.down_block_types[i] == "CrossAttnDownBlock2D"
        n = cfg.layers_per_block[i]
        t = cfg.time_embed_dim
        self.resnets = nn.ModuleList([
            ResnetBlock2D(cin if j == 0 else cout, cout, t, cfg.norm_num_groups, cfg.norm_eps,
                          cfg.resnet_out_scale_factor, dtype) for j in range(n)])
        self.attentions = nn.ModuleList([
            Transformer2DModel(cout, cfg.num_attention_heads[i], cfg.cross_attention_dim,
                               cfg.transformer_layers_per_block[i], cfg.norm_num_groups, dtype,
                               max_binding) for _ in range(n)]) if cross else None
        last = i == len(cfg.block_out_channels) - 1
        self.downsamplers = None if last else nn.ModuleList([Downsample2D(cout, 1, dtype)])

    def forward(self, x, temb, context):
        skips = []
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[j](x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """CrossAttnUpBlock2D (with attentions) or UpBlock2D."""

    def __init__(self, cfg: UNetConfig, i: int, cin: int, cprev: int, cout: int, dtype: str,
                 max_binding: int | None = None) -> None:
        n_blocks = len(cfg.block_out_channels)
        cross = cfg.up_block_types[i] == "CrossAttnUpBlock2D"
        rev = n_blocks - 1 - i  # the matching down block
        n = cfg.layers_per_block[rev] + 1
        t = cfg.time_embed_dim
        resnets = []
        for j in range(n):
            skip = cin if j == n - 1 else cout
            resnet_in = cprev if j == 0 else cout
            resnets.append(ResnetBlock2D(resnet_in + skip, cout, t, cfg.norm_num_groups, cfg.norm_eps,
                                         cfg.resnet_out_scale_factor, dtype))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList([
            Transformer2DModel(cout, cfg.num_attention_heads[rev], cfg.cross_attention_dim,
                               cfg.transformer_layers_per_block[rev], cfg.norm_num_groups, dtype,
                               max_binding) for _ in range(n)]) if cross else None
        last = i == n_blocks - 1
        self.upsamplers = None if last else nn.ModuleList([Upsample2D(cout, dtype)])
        self.n = n

    def forward(self, x, skips, temb, context):
        for j, resnet in enumerate(self.resnets):
            x = resnet(op.concat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[j](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet, then (attention, resnet) once."""

    def __init__(self, cfg: UNetConfig, dtype: str, max_binding: int | None = None) -> None:
        c = cfg.block_out_channels[-1]
        self.resnets = nn.ModuleList([
            ResnetBlock2D(c, c, cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps, cfg.mid_block_scale_factor,
                          dtype) for _ in range(2)])
        self.attentions = nn.ModuleList([
            Transformer2DModel(c, cfg.num_attention_heads[-1], cfg.cross_attention_dim,
                               cfg.transformer_layers_per_block[-1], cfg.norm_num_groups, dtype,
                               max_binding)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin: int, dim: int, dtype: str) -> None:
        self.linear_1 = Linear(cin, dim, dtype=dtype)
        self.linear_2 = Linear(dim, dim, dtype=dtype)

    def forward(self, x):
        return self.linear_2(op.silu(self.linear_1(x)))


class UNet2DConditionModel(nn.Module):
    def __init__(self, cfg: UNetConfig, dtype: str = "float32", latent_height: int | None = None,
                 latent_width: int | None = None, batch: int = 2, text_len: int = 77,
                 max_binding: int | None = None) -> None:
        self.cfg, self.dtype, self.batch, self.text_len = cfg, dtype, batch, text_len
        self.height = latent_height or cfg.sample_size
        self.width = latent_width or cfg.sample_size
        for name, size in (("latent height", self.height), ("latent width", self.width)):
            if size % cfg.downscale:
                raise DiffusionShapeError(f"{name} {size} is not a multiple of {cfg.downscale} (the UNet halves it "
                                 f"{len(cfg.block_out_channels) - 1} times)")
        ch = cfg.block_out_channels
        self.conv_in = Conv2d(cfg.in_channels, ch[0], 3, padding=1, dtype=dtype)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim, dtype)
        down, cout = [], ch[0]
        for i in range(len(ch)):
            cin, cout = cout, ch[i]
            down.append(DownBlock(cfg, i, cin, cout, dtype, max_binding))
        self.down_blocks = nn.ModuleList(down)
        self.mid_block = MidBlock(cfg, dtype, max_binding)
        rev = list(reversed(ch))
        up, cout = [], rev[0]
        for i in range(len(ch)):
            cprev, cout = cout, rev[i]
            cin = rev[min(i + 1, len(ch) - 1)]
            up.append(UpBlock(cfg, i, cin, cprev, cout, dtype, max_binding))
        self.up_blocks = nn.ModuleList(up)
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, ch[0], cfg.norm_eps)
        self.conv_out = Conv2d(ch[0], cfg.out_channels, 3, padding=1, dtype=dtype)

    def unet(self, latents, timestep, text_embeds):
        c = self.cfg
        t = op.get_timestep_embedding(timestep, c.block_out_channels[0], flip_sin_to_cos=c.flip_sin_to_cos,
                                      downscale_freq_shift=c.freq_shift)
        t = t if self.dtype == "float32" else t.astype(self.dtype)
        temb = self.time_embedding(t)
        x = self.conv_in(latents)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, text_embeds)
            skips.extend(block_skips)
        x = self.mid_block(x, temb, text_embeds)
        for block in self.up_blocks:
            x = block(x, skips, temb, text_embeds)
        assert not skips
        return self.conv_out(op.silu(self.conv_norm_out(x)))

    def spec(self):
        c, b = self.cfg, self.batch
        return {"unet": {
            "latents": nn.spec.Tensor([b, c.in_channels, self.height, self.width], self.dtype),
            "timestep": nn.spec.Tensor([b], "float32"),
            "text_embeds": nn.spec.Tensor([b, self.text_len, c.cross_attention_dim], self.dtype),
            "$": {"param_mode": "packed", "effect_mode": "none"},
        }}
