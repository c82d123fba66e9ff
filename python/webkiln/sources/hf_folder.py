"""Load a Hugging Face model folder (config.json, safetensors, tokenizer.json) into a ModelSource.

Tensors are opened lazily: `safetensors.safe_open` for F32/F16, and a memory map for
BF16, which NumPy has no dtype for (`raw()` and `dequantize()` both give float32 then).
Every safetensors header is checked against its file size first, so a truncated download
is reported by name instead of surfacing as a library error mid-build.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from tokenizers import Tokenizer

from ..model_source import SUPPORTED_ARCHITECTURES, LlmConfig, ModelSource, SourceError, SourceTensor

# config.json `model_type` -> the architecture webkiln builds it as.
MODEL_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
# Buffers some old checkpoints saved alongside the weights; recomputed by every runtime.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def load_hf_folder(folder: Path, kind: str = "hf-folder", origin: str | None = None) -> ModelSource:
    folder = Path(folder)
    config_path = folder / "config.json"
    raw_config = _read_json(config_path)
    config = _config(raw_config, config_path.name)
    weight_files, tensors = _tensors(folder)
    tokenizer_path = folder / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise SourceError(
            f"{folder}: tokenizer.json is missing. webkiln needs the fast-tokenizer file; save it with "
            "`AutoTokenizer.from_pretrained(...).save_pretrained(folder)` or copy it from the model repository."
        )
    tokenizer_json = tokenizer_path.read_text(encoding="utf-8")
    vocab = _vocab(tokenizer_json, tokenizer_path)
    tokenizer_config = _read_json(folder / "tokenizer_config.json", required=False)
    generation_config = _read_json(folder / "generation_config.json", required=False)
    chat_template = _chat_template(folder, tokenizer_config)
    optional = [folder / name for name in ("tokenizer_config.json", "generation_config.json",
                                           "chat_template.jinja", "special_tokens_map.json")]
    return ModelSource(
        kind=kind,
        origin=origin or str(folder),
        name=(origin.rsplit("/", 1)[-1] if origin else folder.resolve().name),
        config=config,
        tensors=tensors,
        tokenizer_json=tokenizer_json,
        chat_template=chat_template,
        bos_token_id=_bos_token_id(raw_config, tokenizer_config, generation_config, vocab),
        eos_token_ids=_eos_token_ids(raw_config, tokenizer_config, generation_config, vocab, chat_template),
        generation_defaults=_generation_defaults(generation_config),
        files=[config_path, tokenizer_path, *weight_files, *(p for p in optional if p.is_file())],
    )


# --- config ------------------------------------------------------------------------


def _read_json(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise SourceError(f"{path}: file is missing; a Hugging Face model folder needs it.")
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SourceError(f"{path}: cannot be read ({error.strerror}); check its permissions.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: not valid JSON ({error}); the file is corrupt, re-download it.") from None
    if not isinstance(value, dict):
        raise SourceError(f"{path}: expected a JSON object; the file is corrupt, re-download it.")
    return value


def _config(raw: dict[str, Any], file_name: str) -> LlmConfig:
    model_type = raw.get("model_type")
    arch = MODEL_TYPES.get(model_type)  # type: ignore[arg-type]
    if arch is None:
        raise SourceError(
            f"{file_name}: model_type {model_type!r} is not supported; supported architectures: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (config model_type: {', '.join(MODEL_TYPES)})."
        )

    def need(field: str) -> Any:
        if raw.get(field) is None:
            raise SourceError(f"{file_name}: field `{field}` is missing; add it to config.json "
                              "(see the model's original config).")
        return raw[field]

    _reject_unsupported(raw, model_type, file_name, need)
    hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
    return LlmConfig(
        architecture=arch,
        hidden_size=hidden,
        intermediate_size=int(need("intermediate_size")),
        num_hidden_layers=int(need("num_hidden_layers")),
        num_attention_heads=heads,
        num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=int(raw.get("head_dim") or hidden // heads),
        vocab_size=int(need("vocab_size")),
        context_length=int(need("max_position_embeddings")),
        rms_norm_eps=float(need("rms_norm_eps")),
        rope_theta=float(_rope(raw, file_name).get("rope_theta") or 10000.0),
        # Llama, Mistral and Qwen2 configs all default to untied.
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=arch == "qwen2",  # Qwen2 always has q/k/v biases
    )


def _reject_unsupported(raw: dict[str, Any], model_type: str, file_name: str, need: Any) -> None:
    if raw.get("hidden_act", "silu") != "silu":
        raise SourceError(f"{file_name}: hidden_act {raw['hidden_act']!r} is not supported (only 'silu').")
    if model_type == "llama" and (raw.get("attention_bias") or raw.get("mlp_bias")):
        raise SourceError(f"{file_name}: Llama with `attention_bias`/`mlp_bias` set is not supported.")
    window = raw.get("sliding_window")
    if model_type == "mistral" and window is not None and int(window) < int(need("max_position_embeddings")):
        # A window as long as the context never masks anything, so only a shorter one matters.
        raise SourceError(
            f"{file_name}: sliding-window attention (`sliding_window` = {window}) is not supported; this is a "
            "Mistral with a sliding window (e.g. Mistral-7B-v0.1). Use a Mistral without one (v0.2 or later)."
        )
    if model_type == "qwen2" and raw.get("use_sliding_window"):
        raise SourceError(f"{file_name}: sliding-window attention (`use_sliding_window` = true) is not supported; "
                          "set it to false only if the model was trained without it.")


def _rope(raw: dict[str, Any], file_name: str) -> dict[str, Any]:
    """Rope settings as transformers 5 (`rope_parameters`) or 4 (`rope_theta`, `rope_scaling`) writes them."""
    params = dict(raw.get("rope_parameters") or {})
    params.setdefault("rope_theta", raw.get("rope_theta"))
    scaling = raw.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise SourceError(f"{file_name}: rope scaling {rope_type!r} (`rope_scaling` / `rope_parameters`) is not "
                          "supported; use a model without rope scaling.")
    return params


# --- tokenizer-related -------------------------------------------------------------


def _vocab(tokenizer_json: str, path: Path) -> dict[str, int]:
    try:
        return Tokenizer.from_str(tokenizer_json).get_vocab(with_added_tokens=True)
    except Exception as error:  # tokenizers raises plain Exception on bad JSON
        raise SourceError(f"{path}: cannot be read by the tokenizers library ({error}); re-save it with "
                          "a current transformers.") from None


def _token_content(value: Any) -> str | None:
    # tokenizer_config.json writes special tokens as strings or as AddedToken dicts.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: Path, tokenizer_config: dict[str, Any]) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():  # transformers >= 4.43 may save it separately
        return jinja.read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _ids(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [int(v) for v in value if isinstance(v, int)]
    return []


def _bos_token_id(config: dict, tokenizer_config: dict, generation_config: dict, vocab: dict[str, int]) -> int | None:
    for candidate in (_ids(generation_config.get("bos_token_id")), _ids(config.get("bos_token_id"))):
        if candidate:
            return candidate[0]
    content = _token_content(tokenizer_config.get("bos_token"))
    return vocab.get(content) if content else None


def _eos_token_ids(config: dict, tokenizer_config: dict, generation_config: dict, vocab: dict[str, int],
                   chat_template: str | None) -> list[int]:
    ids = _ids(generation_config.get("eos_token_id")) + _ids(config.get("eos_token_id"))
    content = _token_content(tokenizer_config.get("eos_token"))
    if content in vocab:
        ids.append(vocab[content])
    # A ChatML template ends each turn with <|im_end|>, whatever eos the config names.
    if chat_template and "<|im_end|>" in chat_template and "<|im_end|>" in vocab:
        ids.append(vocab["<|im_end|>"])
    return list(dict.fromkeys(ids))


def _generation_defaults(generation_config: dict[str, Any]) -> dict[str, Any]:
    keys = ("temperature", "top_p", "top_k", "repetition_penalty")
    return {key: generation_config[key] for key in keys if generation_config.get(key) is not None}


# --- weights -----------------------------------------------------------------------


def _tensors(folder: Path) -> tuple[list[Path], dict[str, SourceTensor]]:
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = {single: None}
    elif index.is_file():
        files = _shards(index)
    else:
        other = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pth")]
        hint = (f" Found {', '.join(sorted(other))}: convert them to safetensors (load with transformers and "
                "`save_pretrained(folder)`).") if other else ""
        raise SourceError(f"{folder}: no model.safetensors or model.safetensors.index.json.{hint}")
    tensors: dict[str, SourceTensor] = {}
    for path, expected in files.items():
        header = _safetensors_header(path)
        for name in expected or ():
            if name not in header:
                raise SourceError(f"{path.name}: tensor {name!r} listed in {index.name} is missing from the shard; "
                                  "the download is incomplete, re-download it.")
        for name, entry in header.items():
            if not name.endswith(_IGNORED_SUFFIXES):
                tensors[name] = _source_tensor(path, name, entry)
    weight_files = ([index] if index.is_file() and not single.is_file() else []) + list(files)
    return weight_files, tensors


def _shards(index: Path) -> dict[Path, list[str]]:
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise SourceError(f"{index}: field `weight_map` is missing or empty; re-download the index.")
    shards: dict[Path, list[str]] = {}
    for name, file_name in weight_map.items():
        shards.setdefault(index.parent / file_name, []).append(name)
    for shard in shards:
        if not shard.is_file():
            raise SourceError(f"{shard}: shard listed in {index.name} is missing; the download is incomplete, "
                              "re-download it.")
    return shards


def _safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor entries of a safetensors file, with absolute data offsets, checked against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SourceError(f"{path.name}: truncated safetensors file ({size} bytes, no header); re-download it.")
        (header_len,) = struct.unpack("<Q", prefix)
        if 8 + header_len > size:
            raise SourceError(f"{path.name}: truncated or corrupt safetensors file: the header claims {header_len} "
                              f"bytes but the file has {size}; re-download it.")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SourceError(f"{path.name}: corrupt safetensors header ({error}); re-download it.") from None
    if not isinstance(header, dict):
        raise SourceError(f"{path.name}: corrupt safetensors header (not a JSON object); re-download it.")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], [int(n) for n in entry["shape"]], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{path.name}: corrupt safetensors header entry for tensor {name!r}; "
                              "re-download the file.") from None
        if dtype not in _DTYPES:
            raise SourceError(f"{path.name}: tensor {name} has dtype {dtype}; only F32, F16 and BF16 are supported.")
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if data_start + end > size:
            raise SourceError(f"{path.name}: truncated safetensors file: tensor {name} ends at byte "
                              f"{data_start + end} but the file has {size} bytes; re-download it.")
        if end - begin != expected or begin < 0:
            raise SourceError(f"{path.name}: corrupt safetensors file: tensor {name} spans {end - begin} bytes, "
                              f"its shape {shape} needs {expected}; re-download it.")
        entry["offset"] = data_start + begin
    return header


def _source_tensor(path: Path, name: str, entry: dict[str, Any]) -> SourceTensor:
    shape = tuple(int(n) for n in entry["shape"])
    dtype = entry["dtype"]

    def stored() -> np.ndarray:
        if dtype == "BF16":
            bits = np.memmap(path, dtype=_DTYPES["BF16"], mode="r", offset=entry["offset"], shape=shape or (1,))
            # bfloat16 is the top half of a float32.
            return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        try:
            with safe_open(path, framework="numpy") as handle:
                return handle.get_tensor(name)
        except Exception as error:  # SafetensorError is not exported under a stable name
            raise SourceError(f"{path.name}: cannot read tensor {name} ({error}); re-download the file.") from None

    def dequantize() -> np.ndarray:
        return stored().astype(np.float32, copy=False)

    return SourceTensor(name=name, shape=shape, ggml_type=None, raw=stored, dequantize=dequantize)
