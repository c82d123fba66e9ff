"""How far a chat build's packaged weights are from the source's: every build measures it.

On a fixed English text (QUALITY_TEXT, the first QUALITY_TOKENS tokens), the NumPy forward
pass (models/reference.py) runs once on the source's own full-precision values (a Hugging
Face folder's f32/bf16/f16 weights; for a GGUF, gguf's dequantization of its blocks: that is
all the file has) and once on the packaged weights, each matrix dequantized from its stored
format as the kernels decode it. The report is the share of positions whose most likely next
token agrees, and the mean KL divergence KL(reference || packaged) of the next-token
distributions, in nats. A GGUF whose tensors are all kept bit for bit reports agreement 1 and
KL 0: webkiln adds no loss to what the file already has.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tokenizers import Tokenizer

from ..model_source import ModelSource
from ..models.reference import forward
from ..quant.convert import matrix_sources
from ..quant.plan import WeightPlan

QUALITY_TEXT = (
    "The library opens at nine in the morning and closes at six in the evening. On weekends it "
    "keeps shorter hours, and during the summer the reading room on the second floor is used for "
    "lectures about local history, gardening and the stars. Anyone with a card may borrow up to "
    "ten books for three weeks; a book that nobody else has asked for can be renewed twice."
)
QUALITY_TOKENS = 64


def quality_ids(source: ModelSource) -> list[int]:
    ids = Tokenizer.from_str(source.tokenizer_json).encode(QUALITY_TEXT, add_special_tokens=False).ids
    if source.bos_token_id is not None:
        ids = [source.bos_token_id, *ids]
    return ids[:QUALITY_TOKENS]


def packaged_weights(source: ModelSource, plan: WeightPlan,
                     stored: dict[str, np.ndarray]) -> Callable[[str], np.ndarray]:
    """Hugging Face name -> the float32 values the kernels see, from the converted parameters
    (`stored`, by parameter name), each matrix dequantized when first asked for."""
    owner: dict[str, tuple[str, int, int]] = {}  # source tensor -> (matrix path, part, first row)
    for path, names in matrix_sources(source).items():
        split = len(plan.formats_of(path)) > 1
        row = 0
        for i, name in enumerate(names):
            owner[name] = (path, i if split else -1, 0 if split else row)
            row += source.tensors[name].shape[0]

    last: dict[tuple[str, int], np.ndarray] = {}  # a fused matrix serves its q, k and v in turn

    def get(name: str) -> np.ndarray:
        if name not in owner:  # norms and biases are stored as they are
            return source.tensors[name].dequantize()
        path, part, first = owner[name]
        if (path, part) not in last:
            if part >= 0:
                prefix, fmt = f"{path}.parts.{part}", plan.formats_of(path)[part]
            else:
                prefix, fmt = (path if path == "lm_head" else f"{path}.w"), plan.format_of(path)
            arrays = {key: stored[f"{prefix}.{key}"] for key in fmt.param_specs(1, 256, "float32")}
            last.clear()
            last[(path, part)] = fmt.dequantize(arrays)
        return last[(path, part)][first:first + source.tensors[name].shape[0]]

    return get


def measure_quality(source: ModelSource, plan: WeightPlan, stored: dict[str, np.ndarray]) -> dict:
    """{text_tokens, reference, top1_agreement, mean_kl} for the packaged weights."""
    ids = quality_ids(source)
    reference = forward(source.config, lambda name: source.tensors[name].dequantize(), ids).astype(np.float64)
    packaged = forward(source.config, packaged_weights(source, plan, stored), ids).astype(np.float64)

    def log_softmax(logits: np.ndarray) -> np.ndarray:
        shifted = logits - logits.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

    log_p, log_q = log_softmax(reference), log_softmax(packaged)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    return {
        "text_tokens": len(ids),
        "reference": "gguf-dequantized" if source.kind == "gguf" else "source-weights",
        "top1_agreement": float(np.mean(reference.argmax(-1) == packaged.argmax(-1))),
        "mean_kl": float(max(kl.mean(), 0.0)),
    }
