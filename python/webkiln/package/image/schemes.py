"""What an image build can be asked for: the schemes (`--quantization`), the backends each
builds and their dtypes, and the default per-binding limit.

  f32  webgpu-f32 only: f32 weights and activations (any WebGPU device).
  f16  webgpu-f16 (f16 weights and activations, needs shader-f16) and webgpu-f32 (the
       f32 fallback for devices without it). The two read different weight sets
       (`tensors.float16`, `tensors.float32`); a browser downloads only its backend's.
In both, norm weights, norms, attention scores and softmax are float32 (models/diffusion/layers.py).
"""

from __future__ import annotations

MIB = 2**20
DEFAULT_MAX_BINDING = 128 * MIB  # WebGPU's default maxStorageBufferBindingSize
IMAGE_SCHEMES = {"f32": ("webgpu-f32",), "f16": ("webgpu-f32", "webgpu-f16")}
BACKEND_DTYPES = {"webgpu-f32": "float32", "webgpu-f16": "float16"}
ARCHITECTURE = "stable-diffusion"
