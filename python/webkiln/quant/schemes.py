"""The quantization schemes `build_web --quantization` accepts, as one table."""

from __future__ import annotations

from dataclasses import dataclass

from .formats import QuantizationError


@dataclass(frozen=True)
class Scheme:
    name: str
    weight_format: str  # format for weights we quantize ourselves (see formats.FORMATS)
    activation_dtype: str  # "float32" runs everywhere; "float16" needs shader-f16
    keep_ggml: bool  # keep GGUF Q4_0/Q4_1/Q8_0 blocks as they are
    description: str


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("q4f32", "q4_sym", "float32", True, "4-bit weights (groups of 32), f32 activations; no shader-f16 needed"),
        Scheme("q4f16", "q4_sym", "float16", True, "4-bit weights (groups of 32), f16 activations; needs shader-f16"),
        Scheme("q0f32", "float", "float32", False, "unquantized f32 weights and activations"),
        Scheme("q0f16", "f16_packed", "float16", False,
               "unquantized f16 weights; f16 activations with shader-f16, f32 without"),
    )
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise QuantizationError(
            f"unknown quantization '{name}'; choose one of: "
            + ", ".join(f"{s.name} ({s.description})" for s in SCHEMES.values())
        ) from None
