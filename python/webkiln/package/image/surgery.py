"""The one Relax module of an image model: the three components exported with
`tvm.relax.frontend.nn` and merged into one IRModule (entry points `encode_text`, `unet`,
`vae_decode`, helper kernels renamed per component), with the CLIP token embedding split
into row blocks when it is larger than one binding may be. What this module emits is what
the compiled library is (its source is part of the compile-cache key: compile/cache.py)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from ...models.diffusion.clip import Table
from ...models.diffusion.layers import AttentionTooLarge
from ...models.diffusion.params import COMPONENTS, ENTRY_POINTS, build
from ...sources.diffusers_folder import DiffusersPipeline
from .errors import ImageBuildError
from .schemes import MIB
from .shape import ImageShape


@mutator
class _RenameGlobals(PyExprMutator):
    """Points calls at renamed helper functions."""

    def __init__(self, mapping: dict[str, tvm.ir.GlobalVar]) -> None:
        super().__init__()
        self.mapping = mapping

    def visit_global_var_(self, gv):
        return self.mapping.get(gv.name_hint, gv)


def _split_rows(rows: int, row_bytes: int, limit: int) -> list[tuple[int, int]]:
    per = max(1, limit // row_bytes)
    return [(start, min(rows, start + per)) for start in range(0, rows, per)]


def _text_encoder_module(cfg, dtype: str, split_bytes: int):
    """The CLIP text encoder; its token embedding split into row blocks of at most `split_bytes`
    when it is larger. -> (nn.Module, {part param name: (param name, first row, end row)})."""
    model = build("text_encoder", cfg, dtype)
    row_bytes = cfg.hidden_size * np.dtype(dtype).itemsize
    if cfg.vocab_size * row_bytes <= split_bytes:
        return model, {}
    ranges = _split_rows(cfg.vocab_size, row_bytes, split_bytes)

    class SplitTable(nn.Module):
        def __init__(self) -> None:
            self.parts = nn.ModuleList([Table(end - start, cfg.hidden_size, dtype) for start, end in ranges])

    class SplitEmbeddings(nn.Module):
        """ClipEmbeddings whose token table is row blocks: each id reads its block."""

        def __init__(self, position_embedding) -> None:
            self.token_embedding = SplitTable()
            self.position_embedding = position_embedding

        def forward(self, input_ids):
            b, s = (int(d) for d in input_ids.shape)
            starts = [start for start, _ in ranges]

            def gather(ids, *parts):
                def value(i, j):
                    idx = ids[i]
                    out = parts[-1][idx - starts[-1], j]
                    for k in range(len(parts) - 2, -1, -1):  # lazily: only the id's block is read
                        out = tirx.if_then_else(idx < starts[k + 1], parts[k][idx - starts[k], j], out)
                    return out

                return te.compute((b * s, cfg.hidden_size), value, name="split_take")

            parts = [p.weight for p in self.token_embedding.parts]
            tokens = op.tensor_expr_op(gather, "split_take", [op.reshape(input_ids, (b * s,)), *parts])
            positions = op.reshape(self.position_embedding.weight, (1, s, cfg.hidden_size))
            return op.reshape(tokens, (b, s, cfg.hidden_size)) + positions

    model.embeddings = SplitEmbeddings(model.embeddings.position_embedding)  # same attribute slot: same order
    name = "embeddings.token_embedding.weight"
    split = {f"embeddings.token_embedding.parts.{i}.weight": (name, start, end) for i, (start, end) in enumerate(ranges)}
    return model, split


def export_components(pipeline: DiffusersPipeline, dtype: str, shape: ImageShape, split_bytes: int, max_binding: int | None = None):
    """-> (one IRModule with the three entry points, {component: [(name, shape, dtype)]},
    {component: {part name: (param name, first row, end row)}}).

    `max_binding` (the build's per-binding limit): the UNet's and the VAE's attentions whose
    float32 scores would exceed it are computed in query chunks (models/diffusion/layers.py,
    attention_tiles), so no kernel binds a larger score or probability tensor. None: no chunking."""
    text_len = pipeline.text_encoder.config.max_position_embeddings
    merged = tvm.IRModule()
    specs, splits = {}, {}
    for component in COMPONENTS:
        cfg = pipeline.components[component].config
        if component == "text_encoder":
            model, splits[component] = _text_encoder_module(cfg, dtype, split_bytes)
        else:
            model = build(component, cfg, dtype, shape.latent_height, shape.latent_width, shape.unet_batch,
                          text_len, max_binding)
            splits[component] = {}
        try:
            mod, named = model.export_tvm(spec=model.spec())
        except AttentionTooLarge as e:
            raise ImageBuildError(
                f"{component}: {e} (--max-binding-mib {max_binding / MIB:g}); attention is tiled down to one query "
                "row of one head and feature maps down to one norm group. Raise --max-binding-mib or build a "
                "smaller --size.") from None
        specs[component] = [(n, tuple(int(d) for d in p.shape), str(p.dtype)) for n, p in named]
        # Helper functions (tensor_expr_op kernels) get the component as prefix: the UNet and
        # the VAE both have an `upsample_nearest2x`, of different shapes.
        mapping = {}
        for gv in mod.get_global_vars():
            if gv.name_hint != ENTRY_POINTS[component]:
                new = tvm.ir.GlobalVar(f"{component}_{gv.name_hint}")
                relax.expr._update_type(new, gv.ty)
                mapping[gv.name_hint] = new
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                merged[gv] = _RenameGlobals(mapping).visit_expr(func)
            else:
                new = mapping[gv.name_hint]
                merged[new] = func.with_attr("global_symbol", new.name_hint)
    relax.analysis.well_formed(merged)
    return merged, specs, splits
