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
    """The storage format of every matrix, by module path (e.g. 'model.layers.3.mlp.down_proj').

    A fused matrix (qkv_proj, gate_up_proj) whose source tensors are kept in different
    formats (a GGUF Q4_K_M file mixes Q5_0 and Q8_0 in one layer's q/k/v) stores each
    source tensor as its own matrix: its entry is their formats joined by '+', in source
    order (e.g. 'q5_sym+q5_sym+q8_sym').
    """

    formats: tuple[tuple[str, str], ...]

    def formats_of(self, path: str) -> list[WeightFormat]:
        """One format per stored matrix: one for a fused matrix, one per source tensor for a split one."""
        return [FORMATS[name] for name in dict(self.formats)[path].split(SPLIT)]

    def format_of(self, path: str) -> WeightFormat:
        """The format of a matrix stored whole (embedding, lm_head, or a fused matrix not split)."""
        formats = self.formats_of(path)
        if len(formats) != 1:
            raise ValueError(f"{path} is stored as {len(formats)} matrices")
        return formats[0]


SPLIT = "+"
