"""A small module made of the operators a language model needs, used to prove the
compile -> link -> browser path end to end: RMSNorm, a linear layer with bias,
a 4-bit group-quantized matmul (packed uint32 weights, per-group scales) and
softmax. `prefill` takes a dynamic number of rows (matmul kernels); `decode`
takes one row (GEMV kernels), like an LLM's two entry points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..quant import group_q4


@dataclass(frozen=True)
class KernelCheckConfig:
    hidden: int = 128
    vocab: int = 96
    group_size: int = 32
    eps: float = 1e-5


OUTPUTS = ("normed", "projected", "logits", "probs")


def build_ir(config: KernelCheckConfig = KernelCheckConfig()):
    """Returns (IRModule, parameter names in call order)."""
    from tvm.relax.frontend import nn

    class KernelCheck(nn.Module):
        def __init__(self) -> None:
            self.norm = nn.RMSNorm(config.hidden, axes=-1, epsilon=config.eps, bias=False)
            self.proj = nn.Linear(config.hidden, config.hidden, bias=True)
            self.q_weight = nn.Parameter((config.vocab, config.hidden // group_q4.PER_WORD), "uint32")
            self.q_scale = nn.Parameter((config.vocab, config.hidden // config.group_size), "float32")

        def _run(self, x):
            normed = self.norm(x)
            projected = self.proj(normed)
            weight = nn.tensor_expr_op(
                lambda q, s: group_q4.dequantize_te(q, s, config.group_size),
                "dequantize",
                [self.q_weight, self.q_scale],
            )
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
    q_weight, q_scale = group_q4.quantize(
        rng.standard_normal((config.vocab, h)).astype(np.float32) * 0.2, config.group_size
    )
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
    weight = group_q4.dequantize(params["q_weight"], params["q_scale"], config.group_size)
    logits = projected @ weight.T.astype(np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    return dict(zip(OUTPUTS, (normed, projected, logits, probs)))
