"""diffusers' AutoencoderKL decoder as a tvm.relax.frontend.nn module.

post_quant_conv, conv_in, a mid block (resnet, single-head spatial self-attention, resnet),
UpDecoderBlock2D blocks (layers_per_block + 1 resnets, nearest-2x upsample + conv), then
GroupNorm + SiLU + conv_out. The caller applies the latent scaling:
`vae_decode(latents / scaling_factor + shift_factor)`; the image comes out in [-1, 1]
(not clamped).

Entry point (packed parameters last):
  vae_decode(latents[1, latent_channels, h, w]) -> image[1, out_channels, h * upscale, w * upscale]
"""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from .config import VaeConfig
from .layers import (
    Conv2d,
    GroupNorm,
    Linear,
    ResnetBlock2D,
    Upsample2D,
    attention,
    cast,
    conv2d_parts,
    from_tokens,
    group_norm_parts,
    resnet_parts,
    to_tokens,
    upsample_parts,
)

EPS = 1e-6  # every norm of the decoder


class SpatialAttention(nn.Module):
    """The decoder mid block's attention: GroupNorm, q/k/v/out with biases, residual."""

    def __init__(self, channels: int, groups: int, dtype: str, max_binding: int | None = None) -> None:
        self.group_norm = GroupNorm(groups, channels, EPS)
        self.to_q = Linear(channels, channels, dtype=dtype)
        self.to_k = Linear(channels, channels, dtype=dtype)
        self.to_v = Linear(channels, channels, dtype=dtype)
        self.to_out = nn.ModuleList([Linear(channels, channels, dtype=dtype)])
        self.max_binding = max_binding

    def forward(self, x):
        _, _, h, w = (int(d) for d in x.shape)
        t = to_tokens(self.group_norm(x))
        # heads = channels // attention_head_dim, and the decoder sets attention_head_dim = channels.
        out = self.to_out[0](attention(self.to_q(t), self.to_k(t), self.to_v(t), 1,
                                                  score_budget=self.max_binding))
        return from_tokens(out, h, w) + x


class MidBlock(nn.Module):
    def __init__(self, cfg: VaeConfig, dtype: str, max_binding: int | None = None) -> None:
        c, g = cfg.block_out_channels[-1], cfg.norm_num_groups
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, None, g, EPS, 1.0, dtype) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialAttention(c, g, dtype, max_binding)]) if cfg.mid_block_add_attention else None

    def forward(self, x):
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class UpDecoderBlock2D(nn.Module):
    def __init__(self, cfg: VaeConfig, cin: int, cout: int, upsample: bool, dtype: str) -> None:
        g = cfg.norm_num_groups
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, None, g, EPS, 1.0, dtype)
                                      for j in range(cfg.layers_per_block + 1)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout, dtype)]) if upsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class Decoder(nn.Module):
    def __init__(self, cfg: VaeConfig, dtype: str, max_binding: int | None = None) -> None:
        self.groups, self.max_binding = cfg.norm_num_groups, max_binding
        rev = list(reversed(cfg.block_out_channels))
        self.conv_in = Conv2d(cfg.latent_channels, rev[0], 3, padding=1, dtype=dtype)
        self.mid_block = MidBlock(cfg, dtype, max_binding)
        blocks, cout = [], rev[0]
        for i in range(len(rev)):
            cin, cout = cout, rev[i]
            blocks.append(UpDecoderBlock2D(cfg, cin, cout, i != len(rev) - 1, dtype))
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, rev[-1], EPS)
        self.conv_out = Conv2d(rev[-1], cfg.out_channels, 3, padding=1, dtype=dtype)

    def forward(self, z):
        # The up blocks carry channel-split maps (layers.channel_parts) so that no feature map is
        # over max_binding in float32: at 512x512 pixels SD's [1, 256, 512, 512] maps are 256 MiB.
        parts = [self.mid_block(self.conv_in(z))]
        for block in self.up_blocks:
            for resnet in block.resnets:
                parts = resnet_parts(resnet, parts, self.groups, self.max_binding)
            if block.upsamplers is not None:
                parts = upsample_parts(block.upsamplers[0], parts, self.groups, self.max_binding)
        parts = [op.silu(p) for p in group_norm_parts(self.conv_norm_out, parts)]
        return conv2d_parts(self.conv_out, parts, [int(self.conv_out.weight.shape[0])])[0]


class AutoencoderKLDecoder(nn.Module):
    def __init__(self, cfg: VaeConfig, dtype: str = "float32", latent_height: int = 64,
                 latent_width: int = 64, max_binding: int | None = None) -> None:
        self.cfg, self.dtype, self.height, self.width = cfg, dtype, latent_height, latent_width
        c = cfg.latent_channels
        self.post_quant_conv = Conv2d(c, c, 1, dtype=dtype) if cfg.use_post_quant_conv else None
        self.decoder = Decoder(cfg, dtype, max_binding)

    def vae_decode(self, latents):
        z = latents if self.post_quant_conv is None else self.post_quant_conv(latents)
        return cast(self.decoder(z), self.dtype)

    def spec(self):
        shape = [1, self.cfg.latent_channels, self.height, self.width]
        return {"vae_decode": {"latents": nn.spec.Tensor(shape, self.dtype),
                               "$": {"param_mode": "packed", "effect_mode": "none"}}}
