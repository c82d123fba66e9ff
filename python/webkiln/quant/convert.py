"""Turn a ModelSource's tensors into the parameters of models/llm.py, per scheme."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np

from ..model_source import ModelSource
from .formats import FORMATS, GGML_KEPT
from .plan import LAYER_LINEARS, WeightPlan
from .schemes import Scheme


def matrix_sources(source: ModelSource) -> dict[str, list[str]]:
    """Module path of every stored matrix -> the source tensors fused into it (row-concatenated)."""
    cfg = source.config
    out = {"model.embed_tokens": ["model.embed_tokens.weight"]}
    for i in range(cfg.num_hidden_layers):
        for ours, theirs in LAYER_LINEARS.items():
            out[f"model.layers.{i}.{ours}"] = [f"model.layers.{i}.{t}.weight" for t in theirs]
    if not cfg.tie_word_embeddings:
        out["lm_head"] = ["lm_head.weight"]
    return out


def plan_weights(source: ModelSource, scheme: Scheme, notice: Callable[[str], None] = print) -> WeightPlan:
    formats = []
    requantized: dict[str, int] = {}
    for path, names in matrix_sources(source).items():
        types = {source.tensors[n].ggml_type for n in names}
        kept = GGML_KEPT.get(next(iter(types))) if len(types) == 1 else None
        if scheme.keep_ggml and kept is not None:
            formats.append((path, kept))
            continue
        formats.append((path, scheme.weight_format))
        for t in types:
            if t is not None and t not in ("F32", "F16", "BF16") and GGML_KEPT.get(t) != scheme.weight_format:
                requantized[t] = requantized.get(t, 0) + 1
    for t, count in sorted(requantized.items()):
        target = FORMATS[scheme.weight_format].description
        notice(f"[webkiln] notice: {count} weight matrices stored as GGML {t} are dequantized and "
               f"stored as {scheme.weight_format} ({target}) for {scheme.name}")
    return WeightPlan(tuple(formats))


# Linear and embedding matrices live at `<path>.w.<part>`; the untied output head is a
# bare matrix, `lm_head.<part>`.
_MATRIX_PARAM = re.compile(r"^(?:(?P<path>.+)\.w|(?P<head>lm_head))\.(?P<part>qweight|scale|minimum|weight)$")


def convert_params(
    source: ModelSource, plan: WeightPlan, dtype: str, params: list[tuple[str, tuple, str]]
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (name, array) in the model's packed parameter order, with the expected shape/dtype."""
    fused = matrix_sources(source)
    current: tuple[str, dict[str, np.ndarray]] | None = None
    for name, shape, pdtype in params:
        m = _MATRIX_PARAM.match(name)
        if m:
            path, part = m.group("path") or m.group("head"), m.group("part")
            if current is None or current[0] != path:
                current = (path, _convert_matrix(source, fused[path], plan.format_of(path), dtype))
            array = current[1][part]
        elif name.endswith(".qkv_proj.bias"):
            prefix = name[: -len("qkv_proj.bias")]
            array = np.concatenate([source.tensors[f"{prefix}{p}.bias"].dequantize() for p in ("q_proj", "k_proj", "v_proj")])
        else:
            array = source.tensors[name].dequantize()
        array = np.ascontiguousarray(array.astype(pdtype, copy=False))
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"tensor {name}: source shape {array.shape} does not match the model's {shape}")
        yield name, array


def _convert_matrix(source: ModelSource, names: list[str], fmt, dtype: str) -> dict[str, np.ndarray]:
    parts = []
    for n in names:
        t = source.tensors[n]
        if fmt.quantized and t.ggml_type is not None and GGML_KEPT.get(t.ggml_type) == fmt.name:
            parts.append(fmt.from_ggml(t.raw(), t.ggml_type, dtype))
        else:
            parts.append(fmt.quantize(t.dequantize(), dtype))
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
