"""What an image build can be asked for: the schemes (`--quantization`), the backends each
builds and their dtypes, and the default per-binding limit.

  f32  webgpu-f32: f32 weights and activations (any WebGPU device).
  f16  webgpu-f16 (f16 weights and activations, needs shader-f16) and webgpu-f32 (the
       f32 fallback for devices without it). The two read different weight sets
       (`tensors.float16`, `tensors.float32`); a browser downloads only its backend's.
Both also build wasm-cpu (unless build_web --no-cpu): the CPU library (WebAssembly SIMD,
no WebGPU), f32 like webgpu-f32 because WebAssembly has no f16 arithmetic. Every scheme
writes the float32 weight set (webgpu-f32 is in both), so wasm-cpu always reads that one:
the same shards as webgpu-f32, never a copy of its own.
In all, norm weights, norms, attention scores and softmax are float32 (models/diffusion/layers.py).
"""

from __future__ import annotations

MIB = 2**20
DEFAULT_MAX_BINDING = 128 * MIB  # WebGPU's default maxStorageBufferBindingSize
IMAGE_SCHEMES = {"f32": ("webgpu-f32",), "f16": ("webgpu-f32", "webgpu-f16")}
CPU_BACKEND = "wasm-cpu"
BACKEND_DTYPES = {"webgpu-f32": "float32", "webgpu-f16": "float16", CPU_BACKEND: "float32"}
# compile/targets.py names, per backend.
BACKEND_TARGETS = {"webgpu-f32": "webgpu", "webgpu-f16": "webgpu", CPU_BACKEND: "wasm-cpu"}
ARCHITECTURE = "stable-diffusion"


def image_backends(quantization: str, cpu: bool = True) -> tuple[str, ...]:
    """The libraries a build of `quantization` compiles: its WebGPU ones, then wasm-cpu."""
    return IMAGE_SCHEMES[quantization] + ((CPU_BACKEND,) if cpu else ())
