"""The weight formats, as one table: how a linear/embedding matrix `[out, in]` can be
stored, and which GGUF block types are kept in which format without requantizing.

Group formats (32-value groups, plain floats, f16 pairs) are group_formats.py; the GGUF
k-quants (256-value super-blocks) are kquant_formats.py. Every format has the same
interface (`WeightFormat`): `param_specs`, `quantize`, `from_ggml`, `dequantize` (the
NumPy reference) and `value_te` (the same arithmetic as a TIR expression, which the
fused matmul kernels inline).
"""

from __future__ import annotations

from .group_formats import GROUP, GROUP_FORMATS, QuantizationError, WeightFormat
from .kquant_formats import KQUANT_FORMATS

__all__ = ["FORMATS", "GGML_KEPT", "GROUP", "QuantizationError", "WeightFormat"]

FORMATS: dict[str, WeightFormat] = {f.name: f for f in (*GROUP_FORMATS, *KQUANT_FORMATS)}

# GGUF block type -> the format that keeps it bit for bit.
GGML_KEPT: dict[str, str] = {
    "Q4_0": "q4_sym", "Q4_1": "q4_affine", "Q5_0": "q5_sym", "Q5_1": "q5_affine", "Q8_0": "q8_sym",
    **{f.ggml_type: f.name for f in KQUANT_FORMATS},
}
