"""Load a Hugging Face model folder (config.json, safetensors, tokenizer.json) into a ModelSource.

Tensors are opened lazily and every safetensors header is checked against its file size
first (sources/files.py), so a truncated download is reported by name instead of surfacing
as a library error mid-build.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ..model_source import SUPPORTED_ARCHITECTURES, LlmConfig, ModelSource, SourceError, SourceTensor
from .files import read_json, safetensors_tensors, shards
from .fused import split_fused

_FOLDER_NEEDS_IT = "a Hugging Face model folder needs it"

# config.json `model_type` -> the architecture webkiln builds it as.
MODEL_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3",
               "phi3": "phi3"}

# Buffers some old checkpoints saved alongside the weights; recomputed by every runtime.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def load_hf_folder(folder: Path, kind: str = "hf-folder", origin: str | None = None) -> ModelSource:
    folder = Path(folder)
    config_path = folder / "config.json"
    raw_config = read_json(config_path, _FOLDER_NEEDS_IT)
    config = _config(raw_config, config_path.name)
    weight_files, tensors = _tensors(folder)
    if config.architecture == "phi3":
        tensors = split_fused(tensors, config)
    tokenizer_path = folder / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise SourceError(
            f"{folder}: tokenizer.json is missing. webkiln needs the fast-tokenizer file; save it with "
            "`AutoTokenizer.from_pretrained(...).save_pretrained(folder)` or copy it from the model repository."
        )
    tokenizer_json = tokenizer_path.read_text(encoding="utf-8")
    vocab = _vocab(tokenizer_json, tokenizer_path)
    tokenizer_config = read_json(folder / "tokenizer_config.json", None)
    generation_config = read_json(folder / "generation_config.json", None)
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
    layers = int(need("num_hidden_layers"))
    family: dict[str, Any] = {}
    if arch == "gemma3":
        family, rope = _gemma3(raw, hidden, layers, file_name)
    else:
        rope = _rope(raw)
    window = raw.get("sliding_window")
    if model_type in ("mistral", "phi3") and window is not None and int(window) < int(need("max_position_embeddings")):
        # Mistral 7B v0.1, Phi-3-mini-4k (2047): every layer slides (a window as long as the
        # context never masks anything).
        family = dict(sliding_window=int(window), layer_types=("sliding_attention",) * layers)
    head_dim = int(raw.get("head_dim") or hidden // heads)
    partial = float(rope.get("partial_rotary_factor") or raw.get("partial_rotary_factor") or 1.0)
    if partial != 1.0:  # Phi-4-mini: 0.75
        family["rotary_dim"] = int(head_dim * partial)
    if rope["rope_type"] in ("longrope", "su"):
        rope.setdefault("original_max_position_embeddings", raw.get("original_max_position_embeddings"))
        rope["max_position_embeddings"] = int(need("max_position_embeddings"))
    return LlmConfig(
        **family,
        architecture=arch,
        hidden_size=hidden,
        intermediate_size=int(need("intermediate_size")),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        vocab_size=int(need("vocab_size")),
        context_length=int(need("max_position_embeddings")),
        rms_norm_eps=float(need("rms_norm_eps")),
        rope_theta=float(rope.get("rope_theta") or 10000.0),
        # Llama, Mistral, Qwen2 and Qwen3 configs all default to untied, Gemma 3 to tied.
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", arch == "gemma3")),
        attention_bias=arch == "qwen2",  # Qwen2 always has q/k/v biases, Qwen3 and Gemma 3 never
        qk_norm=arch in ("qwen3", "gemma3"),
        rope_scaling=_rope_scaling(rope, file_name),
    )


def _gemma3(raw: dict[str, Any], hidden: int, layers: int, file_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Gemma 3's own fields, and the rope settings of its global layers. transformers 5 keys
    `rope_parameters` by layer type; 4.x wrote `rope_theta`/`rope_scaling` for the global layers
    and `rope_local_base_freq` for the sliding ones, and a pattern instead of `layer_types`."""
    if raw.get("attn_logit_softcapping") is not None:
        raise SourceError(f"{file_name}: attention logit soft-capping (`attn_logit_softcapping`) is not supported.")
    if raw.get("use_bidirectional_attention"):
        raise SourceError(f"{file_name}: `use_bidirectional_attention` (an encoder) is not supported; "
                          "use a causal Gemma 3.")
    params = raw.get("rope_parameters") or {}
    if "full_attention" in params:
        rope, local = _rope({**raw, "rope_parameters": params["full_attention"]}), params.get("sliding_attention", {})
    else:
        rope, local = _rope(raw), {"rope_theta": raw.get("rope_local_base_freq", 10000.0)}
    if (local.get("rope_type") or "default") != "default":
        raise SourceError(f"{file_name}: rope scaling {local['rope_type']!r} on the sliding-window layers is "
                          "not supported.")
    types = raw.get("layer_types")
    if types is None:
        pattern = int(raw.get("sliding_window_pattern") or raw.get("_sliding_window_pattern") or 6)
        types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)]
    if len(types) != layers or set(types) - {"full_attention", "sliding_attention"}:
        raise SourceError(f"{file_name}: `layer_types` must name 'full_attention' or 'sliding_attention' for each "
                          f"of the {layers} layers; got {types!r}.")
    window = raw.get("sliding_window")
    if "sliding_attention" in types and not (isinstance(window, int) and window > 0):
        raise SourceError(f"{file_name}: `sliding_window` must be a positive whole number, got {window!r}.")
    act = raw.get("hidden_activation") or raw.get("hidden_act")
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise SourceError(f"{file_name}: Gemma 3 with activation {act!r} is not supported (only "
                          "'gelu_pytorch_tanh').")
    cap = raw.get("final_logit_softcapping")
    return dict(
        hidden_act="gelu_pytorch_tanh",
        norm_weight_offset=1.0,
        sandwich_norms=True,
        embedding_multiplier=float(hidden) ** 0.5,
        attention_scale=float(raw.get("query_pre_attn_scalar") or 256) ** -0.5,
        final_logit_softcapping=float(cap) if cap is not None else None,
        sliding_window=int(window) if window else None,
        layer_types=tuple(types),
        rope_local_theta=float(local.get("rope_theta") or 10000.0),
    ), rope


def _reject_unsupported(raw: dict[str, Any], model_type: str, file_name: str, need: Any) -> None:
    if model_type != "gemma3_text" and raw.get("hidden_act", "silu") != "silu":
        raise SourceError(f"{file_name}: hidden_act {raw['hidden_act']!r} is not supported (only 'silu').")
    if model_type == "llama" and (raw.get("attention_bias") or raw.get("mlp_bias")):
        raise SourceError(f"{file_name}: Llama with `attention_bias`/`mlp_bias` set is not supported.")
    window = raw.get("sliding_window")
    if model_type in ("mistral", "phi3") and window is not None and not (isinstance(window, int) and window > 0):
        raise SourceError(f"{file_name}: `sliding_window` must be a positive whole number or null, got {window!r}.")
    if model_type == "qwen3" and raw.get("attention_bias"):
        raise SourceError(f"{file_name}: Qwen3 with `attention_bias` set is not supported.")
    if model_type in ("qwen2", "qwen3") and raw.get("use_sliding_window"):
        raise SourceError(f"{file_name}: sliding-window attention (`use_sliding_window` = true) is not supported; "
                          "set it to false only if the model was trained without it.")


def _rope(raw: dict[str, Any]) -> dict[str, Any]:
    """Rope settings as transformers 5 (`rope_parameters`) or 4 (`rope_theta`, `rope_scaling`)
    writes them, as one dict: rope_theta, rope_type and the scaling's own fields."""
    params = dict(raw.get("rope_parameters") or {})
    params.setdefault("rope_theta", raw.get("rope_theta"))
    scaling = raw.get("rope_scaling") or {}
    for key, value in scaling.items():
        params.setdefault(key, value)
    params["rope_type"] = params.get("rope_type") or scaling.get("type") or "default"
    return params


# Rope scalings webkiln builds, with the fields each needs (TVM's paged KV cache applies llama3;
# the model itself longrope, see models/llm.py).
ROPE_SCALINGS = {
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "longrope": ("short_factor", "long_factor", "original_max_position_embeddings"),
}


def _rope_scaling(rope: dict[str, Any], file_name: str) -> dict[str, Any] | None:
    rope_type = "longrope" if rope["rope_type"] == "su" else rope["rope_type"]  # Phi-3's first name for it
    if rope_type == "default":
        return None
    if rope_type == "longrope":
        return _longrope(rope, file_name)
    if rope_type not in ROPE_SCALINGS:
        raise SourceError(f"{file_name}: rope scaling {rope_type!r} (`rope_scaling` / `rope_parameters`) is not "
                          f"supported; supported: {', '.join(ROPE_SCALINGS)}. Use a model without rope scaling "
                          "or with one of those.")
    missing = [key for key in ROPE_SCALINGS[rope_type] if rope.get(key) is None]
    if missing:
        raise SourceError(f"{file_name}: rope scaling {rope_type!r} needs {', '.join(missing)}; add "
                          "them to `rope_scaling` (see the model's original config).")
    return {"rope_type": rope_type, **{key: float(rope[key]) for key in ROPE_SCALINGS[rope_type]}}


def _longrope(rope: dict[str, Any], file_name: str) -> dict[str, Any]:
    """LongRoPE as transformers computes it: per-pair frequency divisors (short ones up to the
    original context, long ones past it) and cos/sin scaled by `attention_factor`, by default
    sqrt(1 + ln(factor) / ln(original)) with factor = context / original."""
    missing = [key for key in ROPE_SCALINGS["longrope"] if rope.get(key) is None]
    if missing:
        raise SourceError(f"{file_name}: rope scaling 'longrope' needs {', '.join(missing)}; add them to "
                          "`rope_scaling` (see the model's original config).")
    original = int(rope["original_max_position_embeddings"])
    factor = float(rope.get("factor") or rope["max_position_embeddings"] / original)
    attention = rope.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    return {"rope_type": "longrope", "short_factor": [float(f) for f in rope["short_factor"]],
            "long_factor": [float(f) for f in rope["long_factor"]], "original_max_position_embeddings": original,
            "attention_factor": float(attention)}


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
    # The tokenizer's eos_token first: chat templates get it as `eos_token` (the engine passes
    # the first stop id, as transformers passes the tokenizer's).
    content = _token_content(tokenizer_config.get("eos_token"))
    ids = [vocab[content]] if content in vocab else []
    ids += _ids(generation_config.get("eos_token_id")) + _ids(config.get("eos_token_id"))
    # A ChatML template ends each turn with <|im_end|>, Gemma's with <end_of_turn>, whatever eos
    # the config names.
    for turn_end in ("<|im_end|>", "<end_of_turn>"):
        if chat_template and turn_end in chat_template and turn_end in vocab:
            ids.append(vocab[turn_end])
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
        files = shards(index)
    else:
        other = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pth")]
        hint = (f" Found {', '.join(sorted(other))}: convert them to safetensors (load with transformers and "
                "`save_pretrained(folder)`).") if other else ""
        raise SourceError(f"{folder}: no model.safetensors or model.safetensors.index.json.{hint}")
    tensors = safetensors_tensors(files, index.name, _IGNORED_SUFFIXES)
    weight_files = ([index] if index.is_file() and not single.is_file() else []) + list(files)
    return weight_files, tensors

