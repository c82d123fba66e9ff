"""The quantization-quality report every chat build makes (package/quality.py): its NumPy
forward pass against transformers for every family, and its two figures (top-1 agreement,
mean KL) against the same figures computed by transformers on the same two weight sets."""

from __future__ import annotations

import numpy as np
import pytest

from conftest_tiny import (  # noqa: F401  (session fixtures)
    dequantized_state,
    export_params,
    tiny_llama,
    tiny_llama3,
    tiny_qwen2,
    tiny_qwen3,
    with_weights,
)
from webkiln.models.reference import forward
from webkiln.package.quality import measure_quality, quality_ids
from webkiln.quant.convert import convert_params, plan_weights
from webkiln.quant.schemes import get_scheme
from webkiln.sources import load_source


def _hf_all_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "llama3"])
def test_reference_forward_equals_transformers(request, family):
    tiny = request.getfixturevalue(f"tiny_{family}")
    source = load_source(tiny.folder)
    ids = quality_ids(source)
    assert len(ids) == 64
    got = forward(source.config, lambda name: source.tensors[name].dequantize(), ids)
    np.testing.assert_allclose(got, _hf_all_logits(tiny.model, ids), rtol=0, atol=1e-4)


def _stored(source, plan) -> dict[str, np.ndarray]:
    return dict(convert_params(source, plan, "float32", export_params(source, plan)))


def test_q4_figures_equal_transformers_on_the_same_weights(tiny_llama):
    source = load_source(tiny_llama.folder)
    plan = plan_weights(source, get_scheme("q4f32"))
    stored = _stored(source, plan)
    report = measure_quality(source, plan, stored)
    assert report["reference"] == "source-weights" and report["text_tokens"] == 64

    ids = quality_ids(source)
    ref = _hf_all_logits(tiny_llama.model, ids).astype(np.float64)
    quant = _hf_all_logits(with_weights(tiny_llama.model, dequantized_state(source, plan, stored)), ids).astype(
        np.float64)
    log_p = ref - np.log(np.exp(ref - ref.max(-1, keepdims=True)).sum(-1, keepdims=True)) - ref.max(-1, keepdims=True)
    log_q = quant - np.log(np.exp(quant - quant.max(-1, keepdims=True)).sum(-1, keepdims=True)) - quant.max(
        -1, keepdims=True)
    kl = float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())
    assert kl > 1e-4  # 4-bit weights on a random model really move the distributions
    assert report["mean_kl"] == pytest.approx(kl, rel=1e-3)
    assert report["top1_agreement"] == float(np.mean(ref.argmax(-1) == quant.argmax(-1)))
    assert report["top1_agreement"] < 1.0


def test_unquantized_build_reports_no_loss(tiny_qwen3):
    source = load_source(tiny_qwen3.folder)
    plan = plan_weights(source, get_scheme("q0f32"))
    report = measure_quality(source, plan, _stored(source, plan))
    assert report["top1_agreement"] == 1.0 and report["mean_kl"] == 0.0
