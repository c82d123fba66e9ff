"""Building blocks shared by the CLIP text encoder, the UNet and the VAE decoder.

Parameter names follow diffusers / transformers (`to_out.0`, `ff.net.0.proj`,
`upsamplers.0.conv`, ...), so converting a checkpoint is a rename-free copy except
for the documented reshapes in params.py.

dtype: "float32" or "float16". Convolution and linear weights are stored in that dtype;
norm weights are always float32 and norms are computed in float32 (f16 statistics over
64x64x320 activations lose too much precision); attention scores and softmax are
float32 too (what diffusers' `upcast_attention` / `upcast_softmax` do, for every model).
In float16, matmuls (linear layers, probabilities @ V) and convolutions multiply f16 inputs but
accumulate in float32 and round to float16 once, after the bias (mixed precision, as PyTorch's
f16 GEMMs and convolutions do): TVM accumulates in the output dtype, and an f16 sum over SD's
up to 1280*9 conv terms loses most of its mantissa. float32 models build the same graph as ever.
"""

from __future__ import annotations

from tvm import relax, te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.core import wrap_nested

from ...errors import WebkilnError


def as_float32(x):
    return x if x.dtype == "float32" else x.astype("float32")


def cast(x, dtype: str):
    return x if x.dtype == dtype else x.astype(dtype)


def _acc(dtype: str) -> str | None:
    """The accumulator dtype for matmuls / convolutions on `dtype` inputs: float32 for float16
    (mixed precision); None (the input dtype, TVM's default) otherwise, so f32 graphs are unchanged."""
    return "float32" if dtype == "float16" else None


def matmul(a, b):
    """a @ b in a's dtype, accumulated in float32 when the inputs are float16 (one rounding at the end)."""
    acc = _acc(a.dtype)
    if acc is None:
        return op.matmul(a, b)
    return cast(op.matmul(a, b, out_dtype=acc), a.dtype)


def _conv2d_acc(x, weight, stride: int, padding: int):
    """conv2d of float16 x / weight with a float32 output (accumulator); nn.op.conv2d has no out_dtype."""
    expr = relax.op.nn.conv2d(x._expr, weight._expr, strides=stride, padding=padding, out_dtype="float32")
    return wrap_nested(expr, "conv2d")


class Linear(nn.Module):
    def __init__(self, in_f: int, out_f: int, bias: bool = True, dtype: str = "float32") -> None:
        self.weight = nn.Parameter((out_f, in_f), dtype)
        self.bias = nn.Parameter((out_f,), dtype) if bias else None

    def forward(self, x):
        w = op.permute_dims(self.weight, [1, 0])
        acc = _acc(x.dtype)
        if acc is None:
            y = op.matmul(x, w)
            return y if self.bias is None else y + self.bias
        y = op.matmul(x, w, out_dtype=acc)  # f32 accumulator; bias added in f32, rounded once
        return cast(y if self.bias is None else y + as_float32(self.bias), x.dtype)


class Conv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dtype: str = "float32") -> None:
        self.weight = nn.Parameter((cout, cin, kernel, kernel), dtype)
        self.bias = nn.Parameter((cout,), dtype)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        if _acc(x.dtype) is None:
            return op.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)
        y = _conv2d_acc(x, self.weight, self.stride, self.padding)  # f32 accumulator
        y = y + op.reshape(as_float32(self.bias), (1, int(self.bias.shape[0]), 1, 1))
        return cast(y, x.dtype)


class GroupNorm(nn.Module):
    """GroupNorm over [B, C, ...] (channel axis 1), computed in float32."""

    def __init__(self, groups: int, channels: int, eps: float) -> None:
        self.weight = nn.Parameter((channels,), "float32")
        self.bias = nn.Parameter((channels,), "float32")
        self.groups, self.eps = groups, eps

    def forward(self, x):
        y = op.group_norm(as_float32(x), self.groups, self.weight, self.bias, eps=self.eps, channel_axis=1,
                          axes=list(range(2, len(x.shape))))
        return cast(y, x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        self.weight = nn.Parameter((dim,), "float32")
        self.bias = nn.Parameter((dim,), "float32")
        self.dim, self.eps = dim, eps

    def forward(self, x):
        return cast(op.layer_norm(as_float32(x), self.dim, self.weight, self.bias, eps=self.eps), x.dtype)


class Empty(nn.Module):
    """A parameter-free slot (diffusers' Dropout at `ff.net.1`), so indices match diffusers."""

    def forward(self, x):
        return x


def _causal_mask(scores, offset: int = 0):
    """scores[b, h, i, j] with j > offset + i set to the most negative float32 (softmax gives exactly 0);
    `offset` is the position of the first query row (a chunk of the queries)."""

    def compute(s):
        lowest = tirx.min_value("float32")
        return te.compute(s.shape, lambda b, h, i, j: tirx.Select(j > i + offset, lowest, s[b, h, i, j]),
                          name="causal_mask")

    return op.tensor_expr_op(compute, "causal_mask", [scores])


SCORE_BYTES = 4  # scores and softmax are float32


class DiffusionShapeError(WebkilnError, ValueError):
    """A diffusion module cannot be built at the asked size or within the binding budget; the
    message names the size or tensor."""


class AttentionTooLarge(DiffusionShapeError):
    """Even one query row of one head does not fit the score budget."""


def near_equal_pieces(n: int, most: int) -> list[int]:
    """`n` split into the fewest near-equal pieces of at most `most` (larger pieces first)."""
    count = -(-n // most)
    base, extra = divmod(n, count)
    return [base + 1] * extra + [base] * (count - extra)


def attention_tiles(b: int, heads: int, s: int, t: int, budget: int | None) -> tuple[list[int], list[int], list[int]]:
    """How attention over [B, H, S, T] float32 scores is tiled so that no score / probability tensor
    exceeds `budget` bytes: (batch pieces, head pieces, query pieces). Queries are chunked first
    (each chunk's scores are [B, H, chunk, T]); only when one query row of every batch and head is
    over the budget are heads, then the batch, split too. None: no limit (one tile)."""
    if budget is None or b * heads * s * t * SCORE_BYTES <= budget:
        return [b], [heads], [s]
    row = t * SCORE_BYTES  # one query row of one head
    if row > budget:
        raise AttentionTooLarge(
            f"one attention score row [{t}] float32 is {row} bytes, more than the {budget}-byte budget")
    if b * heads * row <= budget:
        b_sizes, h_sizes = [b], [heads]
    elif b * row <= budget:
        b_sizes, h_sizes = [b], near_equal_pieces(heads, budget // (b * row))
    else:
        b_sizes, h_sizes = near_equal_pieces(b, budget // row), [1] * heads
    return b_sizes, h_sizes, near_equal_pieces(s, budget // (b_sizes[0] * h_sizes[0] * row))


def split_sizes(x, sizes: list[int], axis: int):
    if len(sizes) == 1:
        return [x]
    indices, at = [], 0
    for size in sizes[:-1]:
        at += size
        indices.append(at)
    out = op.split(x, indices, axis=axis)
    return list(out)


def concat_parts(parts, axis: int):
    return parts[0] if len(parts) == 1 else op.concat(parts, dim=axis)


def attention(q, k, v, heads: int, causal: bool = False, score_budget: int | None = None):
    """Multi-head scaled dot-product attention on [B, S, C] / [B, T, C] -> [B, S, C].

    Scores and softmax in float32; the probabilities go back to the input dtype for @V (which
    accumulates in float32 for float16 inputs, see matmul).
    `score_budget` (bytes): when the [B, H, S, T] float32 scores would be larger, the attention
    is computed in tiles (query chunks; heads and batch too if one row is still too large, see
    attention_tiles) whose results are concatenated: the same numbers, but no kernel binds a
    score or probability tensor over the budget (WebGPU's per-binding limit).
    """
    b, s, c = (int(d) for d in q.shape)
    t = int(k.shape[1])
    d = c // heads
    q = op.permute_dims(op.reshape(q, (b, s, heads, d)), [0, 2, 1, 3])  # B H S D
    k = op.permute_dims(op.reshape(k, (b, t, heads, d)), [0, 2, 3, 1])  # B H D T
    v = op.permute_dims(op.reshape(v, (b, t, heads, d)), [0, 2, 1, 3])  # B H T D
    b_sizes, h_sizes, s_sizes = attention_tiles(b, heads, s, t, score_budget)
    q_b, k_b, v_b = (split_sizes(x, b_sizes, 0) for x in (q, k, v))
    out_b = []
    for qb, kb, vb in zip(q_b, k_b, v_b):
        q_h, k_h, v_h = (split_sizes(x, h_sizes, 1) for x in (qb, kb, vb))
        out_h = []
        for qh, kh, vh in zip(q_h, k_h, v_h):
            out_s, offset = [], 0
            for qs, rows in zip(split_sizes(qh, s_sizes, 2), s_sizes):
                out_s.append(_attend(qs, kh, vh, d, offset if causal else None))
                offset += rows
            out_h.append(concat_parts(out_s, 2))
        out_b.append(concat_parts(out_h, 1))
    out = concat_parts(out_b, 0)  # B H S D
    return op.reshape(op.permute_dims(out, [0, 2, 1, 3]), (b, s, c))


def _attend(q, k, v, d: int, causal_offset: int | None):
    """softmax(q k / sqrt(d)) v on one tile: q [b, h, s, D], k [b, h, D, T], v [b, h, T, D]."""
    scores = op.matmul(as_float32(q), as_float32(k)) * (d**-0.5)  # b h s T
    if causal_offset is not None:
        scores = _causal_mask(scores, causal_offset)
    probs = cast(op.softmax(scores, axis=-1), q.dtype)
    return matmul(probs, v)  # b h s D


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


# --- channel-split activations -----------------------------------------------------------------
# A feature map whose float32 size would exceed the build's per-binding limit (the SD VAE's
# [1, 256, 512, 512] at 512x512 pixels is 256 MiB) is carried as a list of channel groups
# ("parts", each [B, c_i, H, W]). Every op on it is exact per part: GroupNorm per part (parts
# hold whole norm groups), SiLU and nearest upsampling per part, and a convolution as the sum
# over input parts of the convolution with the matching slice of its weight, one output part
# at a time. No kernel then binds more than one part.


def channel_parts(channels: int, h: int, w: int, groups: int, budget: int | None, batch: int = 1) -> list[int]:
    """Channel counts of the parts of a [batch, channels, h, w] map: one part when its float32 size
    fits `budget` (None: always), else the fewest parts of whole norm groups (`groups` groups over
    the channels) that fit."""
    group = channels // groups
    plane = batch * h * w * SCORE_BYTES
    if budget is None or channels * plane <= budget:
        return [channels]
    per = budget // plane // group * group
    if per == 0:
        raise AttentionTooLarge(f"a [{batch}, {group}, {h}, {w}] feature map slice (one norm group) is "
                                f"{group * plane} bytes in float32, more than the {budget}-byte budget")
    return [min(per, channels - at) for at in range(0, channels, per)]


def resplit(parts: list, sizes: list[int]) -> list:
    """The same map with channel parts of `sizes`: every part split at the new boundaries inside it,
    then consecutive pieces concatenated into the new parts (no tensor larger than a new part)."""
    have = [int(p.shape[1]) for p in parts]
    if have == sizes:
        return parts
    assert sum(have) == sum(sizes), (have, sizes)
    bounds = {end for _, end in _offsets(sizes)}
    pieces = []  # (piece, end channel)
    for part, (start, end) in zip(parts, _offsets(have)):
        cuts = sorted(c for c in bounds if start < c < end) + [end]
        widths = [c - prev for prev, c in zip([start] + cuts[:-1], cuts)]
        pieces.extend(zip(split_sizes(part, widths, 1), cuts))
    out, group = [], []
    for piece, end in pieces:
        group.append(piece)
        if end in bounds:
            out.append(concat_parts(group, 1))
            group = []
    return out


def _offsets(sizes: list[int]) -> list[tuple[int, int]]:
    out, at = [], 0
    for n in sizes:
        out.append((at, at + n))
        at += n
    return out


def conv2d_parts(conv: Conv2d, parts: list, out_sizes: list[int]) -> list:
    """`conv` applied to a channel-split map, giving parts of `out_sizes` output channels.
    In float16 the per-part convolutions, their sum and the bias are float32 (one rounding per
    output part); each f32 partial sum is one output part, within the budget channel_parts
    sized in float32."""
    if len(parts) == 1 and len(out_sizes) == 1:
        return [conv(parts[0])]
    dtype = parts[0].dtype
    mixed = _acc(dtype) is not None
    in_sizes = [int(p.shape[1]) for p in parts]
    w_out = split_sizes(conv.weight, out_sizes, 0)
    b_out = split_sizes(conv.bias, out_sizes, 0)
    outs = []
    for w, bias in zip(w_out, b_out):
        acc = None
        for part, wi in zip(parts, split_sizes(w, in_sizes, 1)):
            if mixed:
                y = _conv2d_acc(part, wi, conv.stride, conv.padding)
            else:
                y = op.conv2d(part, wi, None, stride=conv.stride, padding=conv.padding)
            acc = y if acc is None else acc + y
        bias = as_float32(bias) if mixed else bias
        outs.append(cast(acc + op.reshape(bias, (1, int(bias.shape[0]), 1, 1)), dtype))
    return outs


def group_norm_parts(norm: GroupNorm, parts: list) -> list:
    """`norm` on a channel-split map whose parts hold whole groups."""
    if len(parts) == 1:
        return [norm(parts[0])]
    per_group = int(norm.weight.shape[0]) // norm.groups
    sizes = [int(p.shape[1]) for p in parts]
    out = []
    for part, w, b in zip(parts, split_sizes(norm.weight, sizes, 0), split_sizes(norm.bias, sizes, 0)):
        n = int(part.shape[1])
        assert n % per_group == 0, (n, per_group)
        y = op.group_norm(as_float32(part), n // per_group, w, b, eps=norm.eps, channel_axis=1,
                          axes=list(range(2, len(part.shape))))
        out.append(cast(y, part.dtype))
    return out


def resnet_parts(block: ResnetBlock2D, parts: list, groups: int, budget: int | None) -> list:
    """ResnetBlock2D (no time embedding) on a channel-split map -> the output's parts."""
    _, _, h, w = (int(d) for d in parts[0].shape)
    b = int(parts[0].shape[0])
    out_sizes = channel_parts(block.cout, h, w, groups, budget, b)
    x = conv2d_parts(block.conv1, [op.silu(p) for p in group_norm_parts(block.norm1, parts)], out_sizes)
    x = conv2d_parts(block.conv2, [op.silu(p) for p in group_norm_parts(block.norm2, x)], out_sizes)
    shortcut = parts if block.conv_shortcut is None else conv2d_parts(block.conv_shortcut, parts, out_sizes)
    shortcut = resplit(shortcut, out_sizes)
    out = [s + y for s, y in zip(shortcut, x)]
    return out if block.scale == 1.0 else [o * (1.0 / block.scale) for o in out]


def upsample_parts(block: Upsample2D, parts: list, groups: int, budget: int | None) -> list:
    """Upsample2D (nearest 2x, then its conv) on a channel-split map."""
    b, c = int(parts[0].shape[0]), sum(int(p.shape[1]) for p in parts)
    _, _, h, w = (int(d) for d in parts[0].shape)
    sizes = channel_parts(c, 2 * h, 2 * w, groups, budget, b)
    up = [upsample_nearest2x(p) for p in resplit(parts, sizes)]
    return conv2d_parts(block.conv, up, sizes)
