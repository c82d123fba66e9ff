"""Configs of the Stable Diffusion-family components webkiln builds, parsed from diffusers /
transformers `config.json` files and checked against what models/diffusion implements.

Every rejection is a SourceError naming the file, the field, its value and the supported
values, so a user with an SDXL or ControlNet folder learns what is missing in one line.
No TVM import here: the folder loader and the CLI use these without compiling anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...model_source import SourceError

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCKS = ("UNetMidBlock2DCrossAttn",)
VAE_UP_BLOCKS = ("UpDecoderBlock2D",)
CLIP_ACTS = ("quick_gelu", "gelu")

# UNet config fields that select features we do not implement: field -> the values we accept
# (a missing field counts as its diffusers default, which is always accepted).
_UNET_FIXED: dict[str, tuple[Any, ...]] = {
    "mid_block_type": MID_BLOCKS,
    "attention_type": ("default",),
    "time_embedding_type": ("positional",),
    "resnet_time_scale_shift": ("default",),
    "act_fn": ("silu",),
    "class_embed_type": (None,),
    "addition_embed_type": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "time_cond_proj_dim": (None,),
    "num_class_embeds": (None,),
    "dual_cross_attention": (False,),
    "center_input_sample": (False,),
    "resnet_skip_time_act": (False,),
    "cross_attention_norm": (None,),
    "timestep_post_act": (None,),
    "time_embedding_act_fn": (None,),
    "time_embedding_dim": (None,),
    "mid_block_only_cross_attention": (None, False),
    "class_embeddings_concat": (False,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "downsample_padding": (1,),
    "reverse_transformer_layers_per_block": (None,),
}


def _fmt(values) -> str:
    return ", ".join("null" if v is None else repr(v).replace("'", '"') for v in values)


class _Fields:
    """Reads fields of one config file with errors that name the file and field."""

    def __init__(self, raw: dict[str, Any], file: str) -> None:
        self.raw, self.file = raw, file

    def need(self, field: str) -> Any:
        if field not in self.raw:
            raise SourceError(f"{self.file}: required field '{field}' is missing; the config is incomplete "
                              "(save the component with diffusers' save_pretrained).")
        return self.raw[field]

    def get(self, field: str, default: Any) -> Any:
        value = self.raw.get(field, default)
        return default if value is None and default is not None else value

    def int_(self, field: str, default: Any = ...) -> int:
        value = self.need(field) if default is ... else self.get(field, default)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SourceError(f"{self.file}: field '{field}' must be a positive integer, got {value!r}.")
        return value

    def float_(self, field: str, default: float) -> float:
        value = self.get(field, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SourceError(f"{self.file}: field '{field}' must be a number, got {value!r}.")
        return float(value)

    def ints(self, field: str, length: int, default: Any = ...) -> tuple[int, ...]:
        """An int or a list of `length` ints (diffusers allows both), as a tuple."""
        value = self.need(field) if default is ... else self.get(field, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value] * length
        if (not isinstance(value, (list, tuple)) or len(value) != length
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            raise SourceError(f"{self.file}: field '{field}' must be a positive integer or a list of "
                              f"{length} positive integers (one per block), got {value!r}.")
        return tuple(value)

    def block_types(self, field: str, supported: tuple[str, ...], kind: str) -> list[str]:
        """A required, non-empty list of block types, each one of `supported` (`kind` names the
        models those are, for the message)."""
        values = self.need(field)
        if not isinstance(values, (list, tuple)) or not values:
            raise SourceError(f"{self.file}: field '{field}' must be a non-empty list of block types.")
        for value in values:
            if value not in supported:
                raise SourceError(f"{self.file}: unsupported {field} entry {json_value(value)}; webkiln supports "
                                  f"{_fmt(supported)} ({kind}).")
        return list(values)

    def one_of(self, field: str, supported: tuple[Any, ...], default: Any) -> Any:
        value = self.raw.get(field, default)
        if value not in supported:
            raise SourceError(f"{self.file}: unsupported {field} {json_value(value)}; webkiln supports "
                              f"{_fmt(supported)}.")
        return value


def json_value(value: Any) -> str:
    return "null" if value is None else repr(value).replace("'", '"')


@dataclass(frozen=True)
class ClipTextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int  # also the prompt length (77 for every SD text encoder)
    hidden_act: str  # one of CLIP_ACTS
    layer_norm_eps: float
    bos_token_id: int | None
    eos_token_id: int | None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def parse_clip_config(raw: dict[str, Any], file: str) -> ClipTextConfig:
    f = _Fields(raw, file)
    model_type = raw.get("model_type", "clip_text_model")
    if model_type not in ("clip_text_model", "clip"):
        raise SourceError(f"{file}: unsupported text encoder model_type {json_value(model_type)}; webkiln "
                          "supports \"clip_text_model\" (CLIPTextModel / CLIPTextModelWithProjection).")
    if model_type == "clip":  # a full CLIP config: the text part is nested
        f = _Fields(raw.get("text_config") or {}, f"{file} (text_config)")
    cfg = ClipTextConfig(
        vocab_size=f.int_("vocab_size"),
        hidden_size=f.int_("hidden_size"),
        intermediate_size=f.int_("intermediate_size"),
        num_hidden_layers=f.int_("num_hidden_layers"),
        num_attention_heads=f.int_("num_attention_heads"),
        max_position_embeddings=f.int_("max_position_embeddings", 77),
        hidden_act=f.one_of("hidden_act", CLIP_ACTS, "quick_gelu"),
        layer_norm_eps=f.float_("layer_norm_eps", 1e-5),
        bos_token_id=f.raw.get("bos_token_id"),
        eos_token_id=f.raw.get("eos_token_id"),
    )
    if cfg.hidden_size % cfg.num_attention_heads:
        raise SourceError(f"{file}: hidden_size {cfg.hidden_size} is not divisible by num_attention_heads "
                          f"{cfg.num_attention_heads}.")
    return cfg


@dataclass(frozen=True)
class UNetConfig:
    sample_size: int  # latent height/width the model was trained at
    in_channels: int
    out_channels: int
    flip_sin_to_cos: bool
    freq_shift: float
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    block_out_channels: tuple[int, ...]
    layers_per_block: tuple[int, ...]  # per down block
    transformer_layers_per_block: tuple[int, ...]  # per down block
    num_attention_heads: tuple[int, ...]  # per down block (diffusers' attention_head_dim quirk resolved)
    cross_attention_dim: int
    norm_num_groups: int
    norm_eps: float
    use_linear_projection: bool
    upcast_attention: bool
    mid_block_scale_factor: float
    resnet_out_scale_factor: float

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @property
    def downscale(self) -> int:
        """Latent height and width must be multiples of this."""
        return 2 ** (len(self.block_out_channels) - 1)


def parse_unet_config(raw: dict[str, Any], file: str) -> UNetConfig:
    f = _Fields(raw, file)
    down = f.block_types("down_block_types", DOWN_BLOCKS, "Stable Diffusion 1.x / 2.x / Turbo UNets")
    up = f.block_types("up_block_types", UP_BLOCKS, "Stable Diffusion 1.x / 2.x / Turbo UNets")
    for field, supported in _UNET_FIXED.items():
        f.one_of(field, supported, supported[0])
    only_cross = raw.get("only_cross_attention", False)
    if only_cross not in (False, None) and not (isinstance(only_cross, list) and not any(only_cross)):
        raise SourceError(f"{file}: unsupported only_cross_attention {json_value(only_cross)}; webkiln "
                          "supports false.")
    n = len(down)
    channels = f.ints("block_out_channels", n)
    if len(up) != n:
        raise SourceError(f"{file}: up_block_types has {len(up)} entries but down_block_types has {n}; "
                          "they must match.")
    cross = f.need("cross_attention_dim")
    if not isinstance(cross, int) or isinstance(cross, bool):
        raise SourceError(f"{file}: unsupported cross_attention_dim {json_value(cross)}; webkiln supports "
                          "a single integer (one text encoder).")
    heads_field = "num_attention_heads" if raw.get("num_attention_heads") is not None else "attention_head_dim"
    heads = f.ints(heads_field, n, 8)
    groups = f.int_("norm_num_groups", 32)
    cfg = UNetConfig(
        sample_size=f.int_("sample_size", 64),
        in_channels=f.int_("in_channels", 4),
        out_channels=f.int_("out_channels", 4),
        flip_sin_to_cos=bool(f.get("flip_sin_to_cos", True)),
        freq_shift=f.float_("freq_shift", 0),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=channels,
        layers_per_block=f.ints("layers_per_block", n, 2),
        transformer_layers_per_block=f.ints("transformer_layers_per_block", n, 1),
        num_attention_heads=heads,
        cross_attention_dim=cross,
        norm_num_groups=groups,
        norm_eps=f.float_("norm_eps", 1e-5),
        use_linear_projection=bool(f.get("use_linear_projection", False)),
        upcast_attention=bool(f.get("upcast_attention", False)),
        mid_block_scale_factor=f.float_("mid_block_scale_factor", 1.0),
        resnet_out_scale_factor=f.float_("resnet_out_scale_factor", 1.0),
    )
    for c, h in zip(channels, heads):
        if c % groups:
            raise SourceError(f"{file}: block_out_channels entry {c} is not divisible by norm_num_groups {groups}.")
        if c % h:
            raise SourceError(f"{file}: block_out_channels entry {c} is not divisible by its {heads_field} {h} "
                              "(the number of attention heads).")
    return cfg


@dataclass(frozen=True)
class VaeConfig:
    in_channels: int
    out_channels: int
    latent_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    norm_num_groups: int
    use_post_quant_conv: bool
    mid_block_add_attention: bool
    scaling_factor: float  # applied by the caller: decode(latents / scaling_factor + shift_factor)
    shift_factor: float

    @property
    def upscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def parse_vae_config(raw: dict[str, Any], file: str) -> VaeConfig:
    f = _Fields(raw, file)
    up = f.block_types("up_block_types", VAE_UP_BLOCKS, "AutoencoderKL")
    f.one_of("act_fn", ("silu",), "silu")
    f.one_of("norm_type", ("group",), "group")
    channels = f.ints("block_out_channels", len(up))
    groups = f.int_("norm_num_groups", 32)
    for c in channels:
        if c % groups:
            raise SourceError(f"{file}: block_out_channels entry {c} is not divisible by norm_num_groups {groups}.")
    return VaeConfig(
        in_channels=f.int_("in_channels", 3),
        out_channels=f.int_("out_channels", 3),
        latent_channels=f.int_("latent_channels", 4),
        block_out_channels=channels,
        layers_per_block=f.int_("layers_per_block", 1),
        norm_num_groups=groups,
        use_post_quant_conv=bool(f.get("use_post_quant_conv", True)),
        mid_block_add_attention=bool(f.get("mid_block_add_attention", True)),
        scaling_factor=f.float_("scaling_factor", 0.18215),
        shift_factor=f.float_("shift_factor", 0.0),
    )
