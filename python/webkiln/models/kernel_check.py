"""A small module made of the operators a language model needs, used to prove the
compile -> link -> browser path end to end: RMSNorm, a linear layer with bias,
a 4-bit group-quantized matmul (packed uint32 weights, per-group scales) and
softmax. `prefill` takes a dynamic number of rows (matmul kernels); `decode`
takes one row (GEMV kernels), like an LLM's two entry points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te
from tvm.relax.frontend import nn

from ..quant.formats import FORMATS

# The chat models' 4-bit format (GGUF Q4_0 layout), so the check covers their dequantization.
Q4 = FORMATS["q4_sym"]


@dataclass(frozen=True)
class KernelCheckConfig:
    hidden: int = 128
    vocab: int = 96
    eps: float = 1e-5


OUTPUTS = ("normed", "projected", "logits", "probs")


def build_ir(config: KernelCheckConfig = KernelCheckConfig()):
    """Returns (IRModule, parameter names in call order)."""

    class KernelCheck(nn.Module):
        def __init__(self) -> None:
            self.norm = nn.RMSNorm(config.hidden, axes=-1, epsilon=config.eps, bias=False)
            self.proj = nn.Linear(config.hidden, config.hidden, bias=True)
            specs = Q4.param_specs(config.vocab, config.hidden, "float32")
            self.q_weight = nn.Parameter(*specs["qweight"])
            self.q_scale = nn.Parameter(*specs["scale"])

        def _run(self, x):
            normed = self.norm(x)
            projected = self.proj(normed)
            def dequantize(q, s):
                return te.compute((config.vocab, config.hidden),
                                  lambda r, c: Q4.value_te({"qweight": q, "scale": s}, r, c, "float32"),
                                  name="dequantize")

            weight = nn.tensor_expr_op(dequantize, "dequantize", [self.q_weight, self.q_scale])
            logits = nn.matmul(projected, nn.permute_dims(weight, [1, 0]))
            return normed, projected, logits, nn.softmax(logits, axis=-1)

        def prefill(self, x):
            return self._run(x)

        def decode(self, x):
            return self._run(x)

    spec = {
        "prefill": {"x": nn.spec.Tensor(["n", config.hidden], "float32")},
        "decode": {"x": nn.spec.Tensor([1, config.hidden], "float32")},
    }
    mod, params = KernelCheck().export_tvm(spec=spec)
    return mod, [name for name, _ in params]


def make_params(config: KernelCheckConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = config.hidden
    stored = Q4.quantize(rng.standard_normal((config.vocab, h)).astype(np.float32) * 0.2, "float32")
    q_weight, q_scale = stored["qweight"], stored["scale"]
    return {
        "norm.weight": (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32),
        "proj.weight": (rng.standard_normal((h, h)) / np.sqrt(h)).astype(np.float32),
        "proj.bias": (0.1 * rng.standard_normal(h)).astype(np.float32),
        "q_weight": q_weight,
        "q_scale": q_scale,
    }


def reference(config: KernelCheckConfig, params: dict[str, np.ndarray], x: np.ndarray):
    """NumPy (float64) forward pass, independent of TVM."""
    x = x.astype(np.float64)
    normed = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + config.eps)
    normed = normed * params["norm.weight"]
    projected = normed @ params["proj.weight"].T.astype(np.float64) + params["proj.bias"]
    weight = Q4.dequantize({"qweight": params["q_weight"], "scale": params["q_scale"]})
    logits = projected @ weight.T.astype(np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    return dict(zip(OUTPUTS, (normed, projected, logits, probs)))
