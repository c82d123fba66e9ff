"""Load a GGUF file (llama.cpp's single-file format) into a ModelSource.

The `gguf` package parses the file and memory-maps the tensor data; tensors are read
only when their `raw()` / `dequantize()` is called.

Tensor values are returned in Hugging Face layout. llama.cpp's converter reorders the
rows of Llama-family Q and K projections so that rope rotates adjacent pairs; here that
reordering is undone (for Q4_0/Q4_1/Q8_0 by reordering whole block rows, which is exact
because the reordering only moves output rows). Qwen2, Qwen3 and Gemma 3 files are stored
unreordered. llama.cpp stores Gemma's norm weights plus one (the scale they apply); here the one
is taken off again, as transformers' own GGUF loader does, so values are Hugging Face's.

`raw()` by GGML type:
  * Q4_0, Q4_1, Q8_0 (KEPT_GGML_TYPES): uint8 `[rows, bytes_per_row]` GGML blocks.
  * F32, F16: the float array in its stored dtype, `shape`.
  * anything else (K-quants, Q5_x, Q6_K, BF16, IQ*): the dequantized float32, `shape`
    -- quant/ re-quantizes those from floats anyway.
`dequantize()` is always float32 of `shape`, equal to `gguf.quants.dequantize` (for an
F32 tensor in file order, a read-only view of the mapped file).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize as gguf_dequantize

from ..model_source import KEPT_GGML_TYPES, SUPPORTED_ARCHITECTURES, LlmConfig, ModelSource, SourceError, SourceTensor
from .fused import split_fused
from .tokenizer import spec_from_fields, tokenizer_json_from_gguf

GGUF_MAGIC = b"GGUF"

_TOP_LEVEL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",  # Qwen3, Gemma 3
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",  # Gemma 3's norms around attention and MLP
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_qkv": "self_attn.qkv_proj",  # Phi-3's fused matrices (split by sources/fused.py)
}
# Where an architecture names a block tensor otherwise: Gemma's `ffn_norm` is the norm before
# the MLP, and its `post_attention_layernorm` is the attention output's norm (above).
_ARCH_BLOCK_NAMES = {"gemma3": {"ffn_norm": "pre_feedforward_layernorm"},
                     "phi3": {"ffn_up": "mlp.gate_up_proj"}}  # gate and up, one matrix
# Phi-3's LongRoPE divisors, stored as tensors rather than metadata.
_ROPE_FACTORS = {"rope_factors_short.weight": "short_factor", "rope_factors_long.weight": "long_factor"}
_GEMMA_FAMILY = ("gemma3",)
# llama.cpp's Gemma 3 settings that the file does not carry: every 6th layer is global, the
# others slide, with rope base 10,000 (llama-model.cpp, LLM_ARCH_GEMMA3).
_GEMMA3_PATTERN, _GEMMA3_LOCAL_THETA = 6, 10000.0
# Only Qwen2 has biases, and only on q/k/v.
_BIASED_PARTS = {"qwen2": ("attn_q", "attn_k", "attn_v")}
_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_TOP_TENSOR = re.compile(r"^([a-z_]+)\.weight$")
# "SmolLM2-135M-Instruct.Q4_1" -> "SmolLM2-135M-Instruct"
_QUANT_SUFFIX = re.compile(r"[.\-_](?:[IT]?Q\d\w*|F16|F32|BF16|FP16|FP32)$", re.IGNORECASE)


def load_gguf(path: Path) -> ModelSource:
    path = Path(path)
    reader = _open_reader(path)
    metadata = _Metadata(reader, path.name)
    arch = metadata.require("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise SourceError(
            f"{path.name}: architecture {arch!r} (GGUF `general.architecture`) is not supported; supported: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}. Use a model of one of those architectures."
        )
    config = _config(metadata, reader, arch)
    tokenizer_spec = spec_from_fields(metadata.tokenizer_fields(), path.name)
    if len(tokenizer_spec.tokens) != config.vocab_size:
        raise SourceError(
            f"{path.name}: the tokenizer lists {len(tokenizer_spec.tokens)} tokens but `token_embd.weight` has "
            f"{config.vocab_size} rows; the file is inconsistent, re-convert it."
        )
    chat_template = metadata.get("tokenizer.chat_template")
    return ModelSource(
        kind="gguf",
        origin=str(path),
        name=_QUANT_SUFFIX.sub("", path.stem) or path.stem,
        config=config,
        tensors=_tensors(reader, config, path.name) if arch != "phi3" else split_fused(
            _tensors(reader, config, path.name), config),
        # Gemma's SentencePiece scores do not follow its merge order; its token order does.
        tokenizer_json=tokenizer_json_from_gguf(tokenizer_spec, path.name,
                                                "position" if arch in _GEMMA_FAMILY else "score"),
        chat_template=chat_template,
        bos_token_id=tokenizer_spec.bos_token_id,
        eos_token_ids=_eos_token_ids(metadata, tokenizer_spec.tokens, chat_template),
        generation_defaults={},
        files=[path],
    )


# --- reading and checking the file -------------------------------------------------


def _open_reader(path: Path) -> Any:
    """The parsed file, checked for truncation; cached because parsing the token list
    takes seconds and a build may load the same file more than once."""
    try:
        stat = path.stat()
    except OSError as error:
        raise SourceError(f"{path}: cannot read the GGUF file ({error.strerror}); check the path.") from None
    return _cached_reader(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _cached_reader(path_str: str, size: int, _mtime_ns: int) -> Any:
    path = Path(path_str)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise SourceError(
            f"{path.name}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r}); the file is corrupt "
            "or of another format. Re-download it, or pass a Hugging Face folder instead."
        )
    try:
        reader = GGUFReader(path, "r")
    except Exception as error:  # the gguf package raises bare ValueError/IndexError on bad input
        raise SourceError(
            f"{path.name}: truncated or corrupt GGUF file ({size} bytes; the gguf reader says: {error}). "
            "Re-download or re-convert it."
        ) from None
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size:
            raise SourceError(
                f"{path.name}: truncated GGUF file: tensor {tensor.name} ends at byte {end} but the file has "
                f"only {size} bytes. Re-download it."
            )
    return reader


class _Metadata:
    """GGUF key/value metadata, decoded on demand."""

    def __init__(self, reader: Any, file_name: str) -> None:
        self._fields = reader.fields
        self.file_name = file_name

    def get(self, key: str, default: Any = None) -> Any:
        field = self._fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except Exception as error:  # e.g. a string that is not UTF-8
            raise SourceError(f"{self.file_name}: GGUF metadata `{key}` cannot be decoded ({error}); "
                              "the file is corrupt, re-convert it.") from None

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise SourceError(f"{self.file_name}: GGUF metadata `{key}` is missing; the file is incomplete, "
                              "re-convert it with a current llama.cpp.")
        return value

    def tokenizer_fields(self) -> dict[str, Any]:
        return {key: self.get(key) for key in self._fields if key.startswith("tokenizer.ggml.")}


def _config(metadata: _Metadata, reader: Any, arch: str) -> LlmConfig:
    def key(name: str) -> str:
        return f"{arch}.{name}"

    hidden = int(metadata.require(key("embedding_length")))
    heads = int(metadata.require(key("attention.head_count")))
    head_dim = int(metadata.get(key("attention.key_length"), hidden // heads))
    _reject_unsupported_rope(metadata, arch, head_dim)
    tensor_names = {tensor.name for tensor in reader.tensors}
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embedding is None:
        raise SourceError(f"{metadata.file_name}: tensor `token_embd.weight` is missing; the file is incomplete.")
    layers = int(metadata.require(key("block_count")))
    family = _gemma3_config(metadata, hidden, heads, head_dim, layers) if arch == "gemma3" else {}
    rope_scaling = None
    if arch == "phi3":
        family, rope_scaling = _phi3_config(metadata, reader, head_dim, layers)
    return LlmConfig(
        **family,
        rope_scaling=rope_scaling,
        architecture=arch,
        hidden_size=hidden,
        intermediate_size=int(metadata.require(key("feed_forward_length"))),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=int(metadata.get(key("attention.head_count_kv"), heads)),
        head_dim=head_dim,
        # The embedding's row count is the vocabulary the model was built for; the
        # tokenizer's list is checked against it by the caller.
        vocab_size=int(embedding.shape[-1]),
        context_length=int(metadata.require(key("context_length"))),
        rms_norm_eps=float(metadata.require(key("attention.layer_norm_rms_epsilon"))),
        rope_theta=float(metadata.get(key("rope.freq_base"), 10000.0)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias=arch == "qwen2",
        qk_norm=arch in ("qwen3", "gemma3"),
    )


def _gemma3_config(metadata: _Metadata, hidden: int, heads: int, head_dim: int, layers: int) -> dict[str, Any]:
    window = int(metadata.require("gemma3.attention.sliding_window"))
    return dict(
        hidden_act="gelu_pytorch_tanh",
        norm_weight_offset=1.0,
        sandwich_norms=True,
        embedding_multiplier=float(hidden) ** 0.5,
        # llama.cpp scales by 1/sqrt(head size), except Gemma 3 27B (62 layers): 1/sqrt(hidden / heads),
        # which is that model's query_pre_attn_scalar.
        attention_scale=float(hidden // heads if layers == 62 else head_dim) ** -0.5,
        final_logit_softcapping=metadata.get("gemma3.final_logit_softcapping"),
        sliding_window=window,
        layer_types=tuple("full_attention" if (i + 1) % _GEMMA3_PATTERN == 0 else "sliding_attention"
                          for i in range(layers)),
        rope_local_theta=_GEMMA3_LOCAL_THETA,
    )


def _phi3_config(metadata: _Metadata, reader: Any, head_dim: int,
                 layers: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Phi-3 as llama.cpp writes it: partial rotary in `rope.dimension_count`, LongRoPE's divisors
    as the tensors rope_factors_short/long, its original context and attention factor as metadata."""
    family: dict[str, Any] = {}
    rotary = metadata.get("phi3.rope.dimension_count")
    if rotary is not None and int(rotary) != head_dim:
        family["rotary_dim"] = int(rotary)
    window = metadata.get("phi3.attention.sliding_window")
    if window and int(window) < int(metadata.require("phi3.context_length")):
        family.update(sliding_window=int(window), layer_types=("sliding_attention",) * layers)
    factors = {_ROPE_FACTORS[t.name]: [float(v) for v in np.asarray(t.data, dtype=np.float32).reshape(-1)]
               for t in reader.tensors if t.name in _ROPE_FACTORS}
    if not factors:
        return family, None
    original = int(metadata.require("phi3.rope.scaling.original_context_length"))
    attention = metadata.get("phi3.rope.scaling.attn_factor")
    if attention is None:
        factor = int(metadata.require("phi3.context_length")) / original
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    if set(factors) != {"short_factor", "long_factor"}:
        raise SourceError(f"{metadata.file_name}: LongRoPE needs both rope_factors_short and rope_factors_long; "
                          "the file has only one. Re-convert it.")
    return family, {"rope_type": "longrope", **factors, "original_max_position_embeddings": original,
                    "attention_factor": float(attention)}


def _reject_unsupported_rope(metadata: _Metadata, arch: str, head_dim: int) -> None:
    scaling = metadata.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise SourceError(f"{metadata.file_name}: rope scaling {scaling!r} (`{arch}.rope.scaling.type`) is not "
                          "supported; use a model without rope scaling.")
    rotary = metadata.get(f"{arch}.rope.dimension_count")
    if arch != "phi3" and rotary is not None and int(rotary) != head_dim:
        raise SourceError(f"{metadata.file_name}: partial rotary embedding (`{arch}.rope.dimension_count` = "
                          f"{rotary}, head size {head_dim}) is not supported.")


def _eos_token_ids(metadata: _Metadata, tokens: list[str] | Any, chat_template: str | None) -> list[int]:
    ids: list[int] = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
        value = metadata.get(key)
        if value is not None:
            ids.append(int(value))
    # A ChatML template ends each turn with <|im_end|>, Gemma's with <end_of_turn>.
    for turn_end in ("<|im_end|>", "<end_of_turn>"):
        if chat_template and turn_end in chat_template and turn_end in tokens:
            ids.append(list(tokens).index(turn_end))
    return list(dict.fromkeys(ids))


# --- tensors -----------------------------------------------------------------------


def _tensors(reader: Any, config: LlmConfig, file_name: str) -> dict[str, SourceTensor]:
    tensors: dict[str, SourceTensor] = {}
    for tensor in reader.tensors:
        if tensor.name in _ROPE_FACTORS:  # read into the config (_phi3_config)
            continue
        name = _hf_name(tensor.name, config, file_name)
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dims innermost first
        rows = _unpermute_rows(tensor.name, shape, config, file_name)
        shift = 1.0 if config.architecture in _GEMMA_FAMILY and name.endswith("norm.weight") else 0.0
        tensors[name] = _source_tensor(name, shape, tensor, rows, shift)
    return tensors


def _hf_name(gguf_name: str, config: LlmConfig, file_name: str) -> str:
    if (match := _BLOCK_TENSOR.match(gguf_name)) is not None:
        layer, part, kind = match.groups()
        names = {**_BLOCK_NAMES, **_ARCH_BLOCK_NAMES.get(config.architecture, {})}
        if part in names and (kind == "weight" or part in _BIASED_PARTS.get(config.architecture, ())):
            return f"model.layers.{layer}.{names[part]}.{kind}"
    elif (match := _TOP_TENSOR.match(gguf_name)) is not None and match.group(1) in _TOP_LEVEL_NAMES:
        return f"{_TOP_LEVEL_NAMES[match.group(1)]}.weight"
    raise SourceError(
        f"{file_name}: tensor {gguf_name!r} has no place in a {config.architecture} model as webkiln builds it "
        "(an unsupported variant, e.g. rope frequency factors or extra biases). Use a plain "
        f"{config.architecture} model."
    )


def _unpermute_rows(gguf_name: str, shape: tuple[int, ...], config: LlmConfig, file_name: str) -> np.ndarray | None:
    """Row order that turns llama.cpp's Q/K layout back into Hugging Face's, or None.

    Within each head, HF rows are [first half of rotary dims, second half]; llama.cpp
    interleaves them (row 2i is HF row i, row 2i+1 is HF row i + head_dim/2).
    """
    if config.architecture != "llama":
        return None
    if ".attn_q." in gguf_name:
        heads = config.num_attention_heads
    elif ".attn_k." in gguf_name:
        heads = config.num_key_value_heads
    else:
        return None
    half = config.head_dim // 2
    if shape[0] != heads * config.head_dim or config.head_dim % 2:
        raise SourceError(f"{file_name}: tensor {gguf_name} has {shape[0]} rows, expected {heads} heads x "
                          f"{config.head_dim}; the file does not match its own metadata.")
    head = np.arange(heads)[:, None, None] * config.head_dim
    which_half = np.arange(2)[None, :, None]
    pair = np.arange(half)[None, None, :] * 2
    return (head + pair + which_half).reshape(-1)  # for each HF row, the GGUF row it lives in


def _source_tensor(name: str, shape: tuple[int, ...], tensor: Any, rows: np.ndarray | None,
                   shift: float = 0.0) -> SourceTensor:
    """`shift` is subtracted from the values (Gemma's norms, stored plus one)."""
    type_name = tensor.tensor_type.name

    def dequantize() -> np.ndarray:
        values = gguf_dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        values = values[rows] if rows is not None else values
        return values - np.float32(shift) if shift else values

    def stored() -> np.ndarray:
        # Blocks or floats as stored, rows reordered like the values (block rows never
        # straddle output rows, so moving whole rows is exact).
        data = tensor.data
        return data[rows] if rows is not None else data

    raw: Callable[[], np.ndarray]
    if type_name in KEPT_GGML_TYPES:
        raw = stored
    elif type_name in ("F32", "F16") and not shift:
        raw = lambda: stored().reshape(shape)  # noqa: E731
    else:
        raw = dequantize
    return SourceTensor(name=name, shape=shape, ggml_type=type_name, raw=raw, dequantize=dequantize)
