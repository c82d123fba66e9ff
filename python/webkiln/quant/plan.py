"""Which weight format each matrix of a chat model is stored in, and which source tensors it fuses.

Shared by the model definition (models/llm.py reads the plan to build each linear) and the
weight conversion (quant/convert.py fills the matrices), so it lives below both: the model
does not import the conversion and the conversion does not import the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formats import FORMATS, WeightFormat

# Linear layers of one decoder layer, with the source weights fused into each.
LAYER_LINEARS = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attn.o_proj": ("self_attn.o_proj",),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj": ("mlp.down_proj",),
}


@dataclass(frozen=True)
class WeightPlan:
    """The storage format of every matrix, by module path (e.g. 'model.layers.3.mlp.down_proj')."""

    formats: tuple[tuple[str, str], ...]

    def format_of(self, path: str) -> WeightFormat:
        return FORMATS[dict(self.formats)[path]]
