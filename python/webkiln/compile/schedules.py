"""Schedules webkiln applies before dlight's defaults, and the Relax pipeline using them."""

from __future__ import annotations

from typing import Any

# Names of the reduction blocks of our fused dequantize-matmul tensor expressions
# (models/llm.py: QuantMatrix.matmul).
QUANT_MATMUL_BLOCKS = ("linear", "lm_head")
THREADS = 128
# Prefill: tokens per thread, so each thread reads its weight row once for this many tokens
# (SmolLM2 q4f32 prefill of 64 tokens on SwiftShader: 4.3x faster, BENCHMARKS.md). Only for
# matmul blocks whose weight format allows it (block annotation TOKEN_TILE_ATTR, set by
# models/llm.py from WeightFormat.token_tiled).
TOKEN_TILE = 4
TOKEN_TILE_ATTR = "webkiln_token_tile"


def _rowwise_rule():
    # Lazy: TVM takes seconds to import, and models/llm.py (so package/ and `build_web --help`)
    # imports this module for TOKEN_TILE_ATTR.
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base import try_inline
    from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

    def _accumulate_in_registers(sch, block, others, thread_loop) -> None:
        """The accumulator in local memory, stored by each thread under `thread_loop`, through
        the elementwise epilogue (bias, residual add) when there is one."""
        if others:
            sch.reverse_compute_at(others[0].block_rv, thread_loop)
            sch.set_scope(block, 0, "local")
        else:
            sch.reverse_compute_at(sch.cache_write(block, 0, "local"), thread_loop)

    class RowwiseQuantMatmul(GPUScheduleRule):
        """One thread per output element, accumulating in a register over the
        dequantized row, with no workgroup barriers. With several tokens
        (prefill: a symbolic sequence axis) each thread computes TOKEN_TILE
        tokens of its output row, so each weight word it reads serves TOKEN_TILE
        tokens instead of one (the decode itself is repeated per token).

        dlight's GEMV rule reduces each row with a workgroup (64 threads and
        six barriers per output row). On WebGPU implementations that run
        workgroups on the CPU (SwiftShader, the fallback adapter) barriers
        dominate: decode went from 3.4 to 0.15 s/token (1-layer SmolLM2) and
        from 4.6 to 0.31 s/token (4 layers) there (BENCHMARKS.md). For
        prefill it replaces dlight's fallback (which re-read and re-wrote the
        accumulator in global memory on every step).
        """

        def apply(self, func: Any, target: Any, _: bool):
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if infos is None:
                return None
            infos = try_inline(sch, infos)
            reductions = [b for b in infos if b.is_reduction()]
            if len(reductions) != 1 or sch.get(reductions[0].block_rv).name_hint not in QUANT_MATMUL_BLOCKS:
                return None
            red = reductions[0]
            others = [b for b in infos if b is not red]
            if len(others) > 1 or any(not b.is_injective() for b in others):
                return None
            block = red.block_rv
            loops = sch.get_loops(block)
            kinds = red.dom_kind()
            spatial = [l for l, k in zip(loops, kinds) if k == "S"]
            reduce = [l for l, k in zip(loops, kinds) if k == "R"]
            if len(reduce) != 1 or len(spatial) + len(reduce) != len(loops):
                return None
            tokens = [l for l in spatial if not isinstance(sch.get(l).extent, tirx.IntImm)]
            tiled = bool(sch.get(block).annotations.get(TOKEN_TILE_ATTR, 0))
            if tiled and len(tokens) == 1 and len(spatial) >= 2 and spatial[-1] != tokens[0]:
                return self._token_tiled(sch, block, spatial, tokens[0], reduce[0], others)
            bx, tx = sch.split(sch.fuse(*spatial), factors=[None, THREADS])
            sch.bind(bx, "blockIdx.x")
            sch.bind(tx, "threadIdx.x")
            _accumulate_in_registers(sch, block, others, tx)
            extent = sch.get(reduce[0]).extent
            if isinstance(extent, tirx.IntImm) and extent.value % 8 == 0:
                ko, ki = sch.split(reduce[0], factors=[None, 8])
                sch.unroll(ki)
                sch.decompose_reduction(block, ko)
            else:
                sch.decompose_reduction(block, reduce[0])
            return sch

        @staticmethod
        def _token_tiled(sch, block, spatial, token, k, others):
            rows = spatial[-1]
            out_f = sch.get(rows).extent.value
            # A workgroup size dividing the rows leaves the inner loop without a bounds check.
            threads = next((t for t in (THREADS, 64, 32) if out_f % t == 0), THREADS)
            # No predicate on the token tile: the last tile's extra tokens read input rows
            # past seq_len (inside the buffer Relax planned for the prefill chunk; WebGPU
            # bounds-checks any access anyway) into accumulators that are never stored;
            # the store below keeps its seq_len bound.
            to, ti = sch.split(token, factors=[None, TOKEN_TILE], disable_predication=True)
            ro, ri = sch.split(rows, factors=[None, threads])
            batch = [l for l in spatial if l not in (token, rows)]
            extent = sch.get(k).extent
            inner_k = isinstance(extent, tirx.IntImm) and extent.value % 8 == 0
            ko, ki = sch.split(k, factors=[None, 8]) if inner_k else (k, None)
            sch.reorder(to, ro, ri, *batch, ko, *([ki] if ki is not None else []), ti)
            sch.bind(to, "blockIdx.y")
            sch.bind(ro, "blockIdx.x")
            sch.bind(ri, "threadIdx.x")
            _accumulate_in_registers(sch, block, others, ri)
            if ki is not None:
                sch.unroll(ki)
            sch.unroll(ti)
            sch.decompose_reduction(block, ko)
            return sch

    return RowwiseQuantMatmul()


def relax_pipeline(target: Any):
    """The Relax pipeline for `target`: TVM's default, plus our rule first on GPU targets."""
    import tvm  # lazy, as in _rowwise_rule
    from tvm import relax
    from tvm.s_tir import dlight as dl

    if target.kind.name != "webgpu":
        return "default"
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        with target:
            legalize = [
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                dl.ApplyDefaultSchedule(
                    _rowwise_rule(),
                    dl.gpu.Matmul(),
                    dl.gpu.GEMV(),
                    dl.gpu.Reduction(),
                    dl.gpu.GeneralReduction(),
                    dl.gpu.Fallback(),
                ),
            ]
            seq = tvm.transform.Sequential(
                gpu.library_dispatch_passes(target) + legalize
                + gpu.dataflow_lower_passes(target) + gpu.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
