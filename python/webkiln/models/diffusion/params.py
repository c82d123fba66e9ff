"""Exporting the three diffusion components to Relax, and mapping checkpoint tensors onto
their parameters.

Our parameter names are diffusers' / transformers' own. The converter only has to
  - strip transformers' `text_model.` prefix (CLIPTextModel checkpoints carry it),
  - accept the pre-0.14 diffusers names of the VAE attention (`query` / `key` / `value` /
    `proj_attn` for `to_q` / `to_k` / `to_v` / `to_out.0`), still found in many checkpoints,
  - reshape 1x1-convolution weights [out, in, 1, 1] into the linears we use for
    Transformer2DModel's proj_in / proj_out (use_linear_projection false) and the VAE
    attention (old checkpoints),
  - cast to the parameter dtype (norm weights stay float32),
and reject anything else with the tensor's name and both shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...model_source import SourceError
from .config import ClipTextConfig, UNetConfig, VaeConfig

COMPONENTS = ("text_encoder", "unet", "vae")
ENTRY_POINTS = {"text_encoder": "encode_text", "unet": "unet", "vae": "vae_decode"}

# Pre-0.14 diffusers names of the VAE attention projections (ours -> old).
_VAE_OLD_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

ParamSpec = tuple[str, tuple[int, ...], str]


def build(component: str, cfg: Any, dtype: str = "float32", latent_height: int | None = None,
          latent_width: int | None = None, batch: int = 2, text_len: int = 77, max_binding: int | None = None):
    """The nn.Module of one component. UNet latent sizes default to its sample_size, the VAE's
    to 64; `text_len` (the UNet's text_embeds length) is the text encoder's max_position_embeddings.
    `max_binding`: the most bytes an attention score tensor of the UNet / VAE may take (the build's
    per-binding limit); larger attentions are computed in query chunks (layers.attention_tiles).
    None: never chunked. CLIP's 77x77 scores never come near a limit."""
    # The modules import TVM (seconds) at their top; loading a pipeline (sources/) imports this
    # module for the parameter bindings only, so the modules are imported when one is built.
    if component == "text_encoder":
        from .clip import ClipTextModel

        assert isinstance(cfg, ClipTextConfig)
        return ClipTextModel(cfg, dtype)
    if component == "unet":
        from .unet import UNet2DConditionModel

        assert isinstance(cfg, UNetConfig)
        return UNet2DConditionModel(cfg, dtype, latent_height, latent_width, batch, text_len, max_binding)
    if component == "vae":
        from .vae import AutoencoderKLDecoder

        assert isinstance(cfg, VaeConfig)
        return AutoencoderKLDecoder(cfg, dtype, latent_height or 64, latent_width or 64, max_binding)
    raise ValueError(f"unknown component {component!r}; one of {COMPONENTS}")


def _specs(model) -> list[ParamSpec]:
    return [(n, tuple(int(d) for d in p.shape), str(p.dtype)) for n, p in model.named_parameters()]


def param_specs(component: str, cfg: Any, dtype: str = "float32") -> list[ParamSpec]:
    """(name, shape, dtype) of every parameter in the packed order, without exporting."""
    if component == "unet":  # any valid latent size: parameters do not depend on it
        return _specs(build(component, cfg, dtype, cfg.downscale, cfg.downscale))
    return _specs(build(component, cfg, dtype))


def export(component: str, cfg: Any, dtype: str = "float32", latent_height: int | None = None,
           latent_width: int | None = None, batch: int = 2, text_len: int = 77, max_binding: int | None = None):
    """-> (IRModule with the component's entry point, [(param name, shape, dtype)] in the packed order)."""
    model = build(component, cfg, dtype, latent_height, latent_width, batch, text_len, max_binding)
    mod, named = model.export_tvm(spec=model.spec())
    return mod, [(n, tuple(int(d) for d in p.shape), str(p.dtype)) for n, p in named]


def parameter_count(specs: Sequence[ParamSpec]) -> int:
    return int(sum(int(np.prod(shape, dtype=np.int64)) for _, shape, _ in specs))


# --- checkpoint names ----------------------------------------------------------------


def _is_1x1_linear(component: str, name: str) -> bool:
    if component == "unet":
        return name.endswith((".proj_in.weight", ".proj_out.weight"))
    return component == "vae" and ".attentions." in name and name.endswith(".weight") and "group_norm" not in name


def candidates(component: str, name: str) -> list[str]:
    """Checkpoint names that may hold our parameter `name`, in order of preference."""
    if component == "text_encoder":
        return [name, f"text_model.{name}"]
    if component == "vae" and ".attentions." in name:
        for new, old in _VAE_OLD_NAMES.items():
            if f".{new}." in name:
                return [name, name.replace(f".{new}.", f".{old}.")]
    return [name]


def allowed_shapes(component: str, name: str, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    if len(shape) == 2 and _is_1x1_linear(component, name):
        return [shape, (*shape, 1, 1)]
    return [shape]


@dataclass(frozen=True)
class Binding:
    """Where one of our parameters comes from."""

    param: str
    source: str
    shape: tuple[int, ...]  # ours
    dtype: str  # ours


def bind(component: str, specs: Sequence[ParamSpec], shapes: Mapping[str, tuple[int, ...]], where: str) -> list[Binding]:
    """Matches every parameter with a checkpoint tensor (`shapes`: checkpoint name -> shape).

    Raises SourceError naming the tensor for a missing tensor or a shape mismatch; `where`
    names the weight file(s) in messages. Extra checkpoint tensors (the VAE encoder,
    CLIP's position_ids buffer, text_projection) are ignored.
    """
    bindings = []
    for name, shape, dtype in specs:
        found = next((c for c in candidates(component, name) if c in shapes), None)
        if found is None:
            raise SourceError(
                f"{where}: tensor '{name}' (shape {list(shape)}) is missing. The {component} config describes a "
                "model with this tensor; the weights do not match the config (a different model, or an "
                "incomplete download).")
        actual = tuple(shapes[found])
        allowed = allowed_shapes(component, name, shape)
        if actual not in allowed:
            expected = " or ".join(str(list(s)) for s in allowed)
            raise SourceError(
                f"{where}: tensor '{found}' has shape {list(actual)} but the {component} config implies "
                f"{expected}. The weights do not match {component}/config.json (a different model size, or "
                "an edited config).")
        bindings.append(Binding(name, found, shape, dtype))
    return bindings


def convert(bindings: Sequence[Binding], read: Callable[[str], np.ndarray]) -> list[np.ndarray]:
    """Our parameter arrays in the packed order; `read(name)` gives a checkpoint tensor (any float dtype)."""
    out = []
    for b in bindings:
        value = np.asarray(read(b.source))
        value = value.reshape(b.shape).astype(b.dtype, copy=False)
        out.append(np.ascontiguousarray(value))
    return out
