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
    # GGUF Q5_0/Q5_1 and the k-quants: rows dequantized once, then dotted (decode and prefill).
    "q5_sym": ("webkiln_q5_sym_matmul", ("qweight", "qhigh", "scale")),
    "q5_affine": ("webkiln_q5_affine_matmul", ("qweight", "qhigh", "scale", "minimum")),
    "q4_k": ("webkiln_q4_k_matmul", ("qweight", "subscale", "scale", "minimum")),
    "q5_k": ("webkiln_q5_k_matmul", ("qweight", "qhigh", "subscale", "scale", "minimum")),
    "q6_k": ("webkiln_q6_k_matmul", ("qweight", "qhigh", "subscale", "scale")),
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

    symbol, names = KERNELS[fmt.name]
    specs = fmt.param_specs(out_f, in_f, "float32")
    shapes = [specs[name] for name in names]
    work = workspace_floats(in_f)
    attrs = {"tirx.noalias": True, "tirx.is_scheduled": True, "global_symbol": f"{symbol}_{out_f}x{in_f}"}

    def call(X, arrays, Y, W, n):
        return T.call_extern("int32", symbol, X.data, *(a.data for a in arrays), Y.data, W.data,
                             T.Cast("int32", n), out_f, in_f)

    # One PrimFunc per number of stored arrays (TVMScript has no variadic parameters).
    (s0, d0), (s1, d1) = shapes[0], shapes[1]
    if len(names) == 2:
        @T.prim_func
        def two(x: T.handle, a0: T.handle, a1: T.handle, y: T.handle):
            T.func_attr(attrs)
            n = T.int64()
            X = T.match_buffer(x, (1, n, in_f), "float32")
            A0 = T.match_buffer(a0, s0, d0)
            A1 = T.match_buffer(a1, s1, d1)
            Y = T.match_buffer(y, (1, n, out_f), "float32")
            W = T.alloc_buffer((work,), "float32")
            T.evaluate(call(X, (A0, A1), Y, W, n))

        return two
    (s2, d2) = shapes[2]
    if len(names) == 3:
        @T.prim_func
        def three(x: T.handle, a0: T.handle, a1: T.handle, a2: T.handle, y: T.handle):
            T.func_attr(attrs)
            n = T.int64()
            X = T.match_buffer(x, (1, n, in_f), "float32")
            A0 = T.match_buffer(a0, s0, d0)
            A1 = T.match_buffer(a1, s1, d1)
            A2 = T.match_buffer(a2, s2, d2)
            Y = T.match_buffer(y, (1, n, out_f), "float32")
            W = T.alloc_buffer((work,), "float32")
            T.evaluate(call(X, (A0, A1, A2), Y, W, n))

        return three
    (s3, d3) = shapes[3]
    if len(names) == 4:
        @T.prim_func
        def four(x: T.handle, a0: T.handle, a1: T.handle, a2: T.handle, a3: T.handle, y: T.handle):
            T.func_attr(attrs)
            n = T.int64()
            X = T.match_buffer(x, (1, n, in_f), "float32")
            A0 = T.match_buffer(a0, s0, d0)
            A1 = T.match_buffer(a1, s1, d1)
            A2 = T.match_buffer(a2, s2, d2)
            A3 = T.match_buffer(a3, s3, d3)
            Y = T.match_buffer(y, (1, n, out_f), "float32")
            W = T.alloc_buffer((work,), "float32")
            T.evaluate(call(X, (A0, A1, A2, A3), Y, W, n))

        return four
    (s4, d4) = shapes[4]

    @T.prim_func
    def five(x: T.handle, a0: T.handle, a1: T.handle, a2: T.handle, a3: T.handle, a4: T.handle, y: T.handle):
        T.func_attr(attrs)
        n = T.int64()
        X = T.match_buffer(x, (1, n, in_f), "float32")
        A0 = T.match_buffer(a0, s0, d0)
        A1 = T.match_buffer(a1, s1, d1)
        A2 = T.match_buffer(a2, s2, d2)
        A3 = T.match_buffer(a3, s3, d3)
        A4 = T.match_buffer(a4, s4, d4)
        Y = T.match_buffer(y, (1, n, out_f), "float32")
        W = T.alloc_buffer((work,), "float32")
        T.evaluate(call(X, (A0, A1, A2, A3, A4), Y, W, n))

    return five


def compile_kernels(output_dir: Path) -> list[Path]:
    """The kernel sources compiled to wasm object files in `output_dir`."""
    from ..toolchain.link import compile_c

    return [compile_c(src, output_dir / (src.stem + ".o"), C_FLAGS) for src in kernel_sources()]
