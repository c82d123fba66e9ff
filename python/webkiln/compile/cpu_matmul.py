"""Hand-written WebAssembly SIMD matmul kernels of the wasm-cpu backend, and the TIR that calls them.

The C sources (cpu_kernels/*.c, `wasm_simd128.h` intrinsics) are compiled by emscripten and
linked into the model's .wasm (build.py passes `kernel_objects()` to toolchain/link.py).
The Relax graph reaches them through a TIR PrimFunc per matrix shape whose body is one
`call_extern` with the buffers' data pointers (`matmul_func`), built by models/llm.py on
the wasm32 target only: TVM's default CPU pipeline has no schedule for the fused
dequantize-matmul (97% of the time there). Measured on SmolLM2-135M q4f32 in Node 20, one
thread, 2-core dev machine: a 128-token prefill 14.5 s -> 0.79 s, a decode step 137 -> 25 ms.
Other targets (native-cpu, webgpu) keep the tensor expression, so they stay the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..quant.formats import WeightFormat

KERNEL_DIR = Path(__file__).resolve().parent / "cpu_kernels"
SOURCES = ("quant_matmul.c",)
# Same optimisation level as the TVM web runtime (toolchain/runtime.py), plus SIMD.
C_FLAGS = ("-O3", "-msimd128", "-std=c11", "-Wall", "-Werror")

# Weight format -> (C entry point, stored arrays it takes after x, in this order).
KERNELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "q4_affine": ("webkiln_q4_affine_matmul", ("qweight", "scale", "minimum")),
    "q4_sym": ("webkiln_q4_sym_matmul", ("qweight", "scale")),
    "q8_sym": ("webkiln_q8_sym_matmul", ("qweight", "scale")),
}


def kernel_sources() -> list[Path]:
    return [KERNEL_DIR / name for name in SOURCES]


def uses_kernels(target: Any) -> bool:
    """Whether `target` (a tvm Target) is the wasm32 CPU target the kernels are compiled for."""
    return target.kind.name == "llvm" and "wasm32" in str(target.attrs.get("mtriple", ""))


def has_kernel(fmt: WeightFormat) -> bool:
    return fmt.name in KERNELS


# Prefill tasks that get their own workspace (quant_matmul.c MAX_TASKS).
MAX_TASKS = 8


def workspace_floats(in_f: int) -> int:
    """Scratch the kernels need (quant_matmul.c, entries): two dequantized rows per prefill
    task, which covers decode's x reordered plus its group sums (in_f + in_f / 32)."""
    return MAX_TASKS * 2 * in_f


def matmul_func(fmt: WeightFormat, out_f: int, in_f: int) -> Any:
    """A PrimFunc y[1, n, out_f] = x[1, n, in_f] @ W.T for the stored arrays of `fmt`
    (parameters: x, the arrays in KERNELS order, y), any number of tokens n."""
    from tvm.script import tirx as T  # lazy: TVM takes seconds to import

    symbol, arrays = KERNELS[fmt.name]
    specs = fmt.param_specs(out_f, in_f, "float32")
    (qshape, qdtype), (sshape, _) = specs["qweight"], specs["scale"]
    work = workspace_floats(in_f)
    attrs = {"tirx.noalias": True, "tirx.is_scheduled": True, "global_symbol": f"{symbol}_{out_f}x{in_f}"}

    if "minimum" in arrays:
        @T.prim_func
        def affine(x: T.handle, qweight: T.handle, scale: T.handle, minimum: T.handle, y: T.handle):
            T.func_attr(attrs)
            n = T.int64()
            X = T.match_buffer(x, (1, n, in_f), "float32")
            Q = T.match_buffer(qweight, qshape, qdtype)
            S = T.match_buffer(scale, sshape, "float32")
            M = T.match_buffer(minimum, sshape, "float32")
            Y = T.match_buffer(y, (1, n, out_f), "float32")
            W = T.alloc_buffer((work,), "float32")
            T.evaluate(T.call_extern("int32", symbol, X.data, Q.data, S.data, M.data, Y.data, W.data,
                                     T.Cast("int32", n), out_f, in_f))

        return affine

    @T.prim_func
    def symmetric(x: T.handle, qweight: T.handle, scale: T.handle, y: T.handle):
        T.func_attr(attrs)
        n = T.int64()
        X = T.match_buffer(x, (1, n, in_f), "float32")
        Q = T.match_buffer(qweight, qshape, qdtype)
        S = T.match_buffer(scale, sshape, "float32")
        Y = T.match_buffer(y, (1, n, out_f), "float32")
        W = T.alloc_buffer((work,), "float32")
        T.evaluate(T.call_extern("int32", symbol, X.data, Q.data, S.data, Y.data, W.data,
                                 T.Cast("int32", n), out_f, in_f))

    return symmetric


def compile_kernels(output_dir: Path) -> list[Path]:
    """The kernel sources compiled to wasm object files in `output_dir`."""
    from ..toolchain.link import compile_c

    return [compile_c(src, output_dir / (src.stem + ".o"), C_FLAGS) for src in kernel_sources()]
