"""Turn a ModelSource's tensors into the parameters of models/llm.py, per scheme."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np

from ..model_source import ModelSource
from .formats import FORMATS, GGML_KEPT
from .plan import LAYER_LINEARS, SPLIT, WeightPlan
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
    """Each matrix's format: a GGUF tensor of a kept block type stays in its type (with a
    scheme that keeps GGML blocks); anything else takes the scheme's format, with a notice
    for quantized GGUF tensors that had to be requantized."""
    formats = []
    requantized: dict[str, int] = {}
    for path, names in matrix_sources(source).items():
        parts = []
        for n in names:
            ggml_type = source.tensors[n].ggml_type
            kept = GGML_KEPT.get(ggml_type) if scheme.keep_ggml and ggml_type is not None else None
            parts.append(kept or scheme.weight_format)
            if kept is None and ggml_type not in (None, "F32", "F16", "BF16") \
                    and GGML_KEPT.get(ggml_type) != scheme.weight_format:
                requantized[ggml_type] = requantized.get(ggml_type, 0) + 1
        formats.append((path, parts[0] if len(set(parts)) == 1 else SPLIT.join(parts)))
    for t, count in sorted(requantized.items()):
        target = FORMATS[scheme.weight_format].description
        notice(f"[webkiln] notice: {count} weight tensors stored as GGML {t} are dequantized and "
               f"stored as {scheme.weight_format} ({target}) for {scheme.name}"
               + ("" if scheme.keep_ggml else "; a q4 scheme keeps them as they are"))
    return WeightPlan(tuple(formats))


# Linear and embedding matrices live at `<path>.w.<part>`, the matrices of a split one at
# `<path>.parts.<i>.<part>`; the untied output head is a bare matrix, `lm_head.<part>`.
_MATRIX_PARAM = re.compile(
    r"^(?:(?P<path>.+)\.(?:w|parts\.(?P<index>\d+))|(?P<head>lm_head))\.(?P<part>qweight|qhigh|subscale|scale|minimum|weight)$")


def convert_params(
    source: ModelSource, plan: WeightPlan, dtype: str, params: list[tuple[str, tuple, str]]
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (name, array) in the model's packed parameter order, with the expected shape/dtype."""
    fused = matrix_sources(source)
    current: tuple[tuple[str, str | None], dict[str, np.ndarray]] | None = None
    for name, shape, pdtype in params:
        m = _MATRIX_PARAM.match(name)
        if m:
            path, index, part = m.group("path") or m.group("head"), m.group("index"), m.group("part")
            key = (path, index)
            if current is None or current[0] != key:
                if index is None:
                    matrix = _convert_matrix(source, fused[path], plan.format_of(path), dtype)
                else:
                    i = int(index)
                    matrix = _convert_matrix(source, [fused[path][i]], plan.formats_of(path)[i], dtype)
                current = (key, matrix)
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
