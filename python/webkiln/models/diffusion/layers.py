"""Building blocks shared by the CLIP text encoder, the UNet and the VAE decoder.

Parameter names follow diffusers / transformers (`to_out.0`, `ff.net.0.proj`,
`upsamplers.0.conv`, ...), so converting a checkpoint is a rename-free copy except
for the documented reshapes in params.py.

dtype: "float32" or "float16". Convolution and linear weights are stored in that dtype;
norm weights are always float32 and norms are computed in float32 (f16 statistics over
64x64x320 activations lose too much precision); attention scores and softmax are
float32 too (what diffusers' `upcast_attention` / `upcast_softmax` do, for every model).
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op


def _f32(x):
    return x if x.dtype == "float32" else x.astype("float32")


def _to(x, dtype: str):
    return x if x.dtype == dtype else x.astype(dtype)


class Linear(nn.Module):
    def __init__(self, in_f: int, out_f: int, bias: bool = True, dtype: str = "float32") -> None:
        self.weight = nn.Parameter((out_f, in_f), dtype)
        self.bias = nn.Parameter((out_f,), dtype) if bias else None

    def forward(self, x):
        y = op.matmul(x, op.permute_dims(self.weight, [1, 0]))
        return y if self.bias is None else y + self.bias


class Conv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dtype: str = "float32") -> None:
        self.weight = nn.Parameter((cout, cin, kernel, kernel), dtype)
        self.bias = nn.Parameter((cout,), dtype)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        return op.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


class GroupNorm(nn.Module):
    """GroupNorm over [B, C, ...] (channel axis 1), computed in float32."""

    def __init__(self, groups: int, channels: int, eps: float) -> None:
        self.weight = nn.Parameter((channels,), "float32")
        self.bias = nn.Parameter((channels,), "float32")
        self.groups, self.eps = groups, eps

    def forward(self, x):
        y = op.group_norm(_f32(x), self.groups, self.weight, self.bias, eps=self.eps, channel_axis=1,
                          axes=list(range(2, len(x.shape))))
        return _to(y, x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        self.weight = nn.Parameter((dim,), "float32")
        self.bias = nn.Parameter((dim,), "float32")
        self.dim, self.eps = dim, eps

    def forward(self, x):
        return _to(op.layer_norm(_f32(x), self.dim, self.weight, self.bias, eps=self.eps), x.dtype)


class Empty(nn.Module):
    """A parameter-free slot (diffusers' Dropout at `ff.net.1`), so indices match diffusers."""

    def forward(self, x):
        return x


def _causal_mask(scores):
    """scores[b, h, i, j] with j > i set to the most negative float32 (softmax gives exactly 0)."""

    def compute(s):
        lowest = tirx.min_value("float32")
        return te.compute(s.shape, lambda b, h, i, j: tirx.Select(j > i, lowest, s[b, h, i, j]),
                          name="causal_mask")

    return op.tensor_expr_op(compute, "causal_mask", [scores])


def attention(q, k, v, heads: int, causal: bool = False):
    """Multi-head scaled dot-product attention on [B, S, C] / [B, T, C] -> [B, S, C].

    Scores and softmax in float32; the probabilities go back to the input dtype for @V.
    """
    b, s, c = (int(d) for d in q.shape)
    t = int(k.shape[1])
    d = c // heads
    dtype = q.dtype
    q = op.permute_dims(op.reshape(q, (b, s, heads, d)), [0, 2, 1, 3])  # B H S D
    k = op.permute_dims(op.reshape(k, (b, t, heads, d)), [0, 2, 3, 1])  # B H D T
    v = op.permute_dims(op.reshape(v, (b, t, heads, d)), [0, 2, 1, 3])  # B H T D
    scores = op.matmul(_f32(q), _f32(k)) * (d**-0.5)  # B H S T
    if causal:
        scores = _causal_mask(scores)
    probs = _to(op.softmax(scores, axis=-1), dtype)
    out = op.matmul(probs, v)  # B H S D
    return op.reshape(op.permute_dims(out, [0, 2, 1, 3]), (b, s, c))


def upsample_nearest2x(x):
    """[B, C, H, W] -> [B, C, 2H, 2W], each pixel repeated (torch's interpolate(scale_factor=2, 'nearest'))."""

    def compute(a):
        n, c, h, w = a.shape
        return te.compute((n, c, h * 2, w * 2), lambda i, j, y, z: a[i, j, y // 2, z // 2], name="upsample")

    return op.tensor_expr_op(compute, "upsample_nearest2x", [x])


def to_tokens(x):
    """[B, C, H, W] -> [B, H*W, C]."""
    b, c, h, w = (int(d) for d in x.shape)
    return op.reshape(op.permute_dims(x, [0, 2, 3, 1]), (b, h * w, c))


def from_tokens(x, h: int, w: int):
    """[B, H*W, C] -> [B, C, H, W]."""
    b, _, c = (int(d) for d in x.shape)
    return op.permute_dims(op.reshape(x, (b, h, w, c)), [0, 3, 1, 2])


class ResnetBlock2D(nn.Module):
    """diffusers' ResnetBlock2D (resnet_time_scale_shift "default"), optionally with a time embedding."""

    def __init__(self, cin: int, cout: int, temb_channels: int | None, groups: int, eps: float,
                 output_scale_factor: float, dtype: str) -> None:
        self.norm1 = GroupNorm(groups, cin, eps)
        self.conv1 = Conv2d(cin, cout, 3, padding=1, dtype=dtype)
        self.time_emb_proj = Linear(temb_channels, cout, dtype=dtype) if temb_channels else None
        self.norm2 = GroupNorm(groups, cout, eps)
        self.conv2 = Conv2d(cout, cout, 3, padding=1, dtype=dtype)
        self.conv_shortcut = Conv2d(cin, cout, 1, dtype=dtype) if cin != cout else None
        self.cout, self.scale = cout, output_scale_factor

    def forward(self, x, temb=None):
        h = self.conv1(op.silu(self.norm1(x)))
        if temb is not None and self.time_emb_proj is not None:
            t = self.time_emb_proj(op.silu(temb))
            h = h + op.reshape(t, (int(t.shape[0]), self.cout, 1, 1))
        h = self.conv2(op.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = shortcut + h
        return out if self.scale == 1.0 else out * (1.0 / self.scale)


class Downsample2D(nn.Module):
    def __init__(self, channels: int, padding: int, dtype: str) -> None:
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding, dtype=dtype)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels: int, dtype: str) -> None:
        self.conv = Conv2d(channels, channels, 3, padding=1, dtype=dtype)

    def forward(self, x):
        return self.conv(upsample_nearest2x(x))
