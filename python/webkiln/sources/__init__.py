"""Model sources: a GGUF file, a Hugging Face folder or a Hub id, loaded into one ModelSource.

    from webkiln.sources import load_source
    source = load_source("SmolLM2-135M-Instruct.Q4_1.gguf")   # or a folder, or "org/name"
"""

from __future__ import annotations

from pathlib import Path

from ..model_source import (
    KEPT_GGML_TYPES,
    SUPPORTED_ARCHITECTURES,
    LlmConfig,
    ModelSource,
    SourceError,
    SourceTensor,
)
from .diffusers_folder import DiffusersPipeline, load_diffusers_folder
from .gguf import load_gguf
from .hf_folder import load_hf_folder
from .hub import load_hub, looks_like_hub_id

__all__ = [
    "KEPT_GGML_TYPES", "SUPPORTED_ARCHITECTURES", "LlmConfig", "ModelSource", "SourceError", "SourceTensor",
    "load_source", "load_gguf", "load_hf_folder", "load_hub", "expected_shapes", "check_tensors",
]


def load_source(spec: str | Path, variant: str | None = None) -> ModelSource | DiffusersPipeline:
    """Load a `.gguf` path, a Hugging Face folder (with config.json) or a Hub id `org/name`;
    a diffusers pipeline (a folder or Hub repository with model_index.json) gives a
    DiffusersPipeline (an image model), whose weights may come in a `variant` (e.g. "fp16").

    The result is checked: every tensor the architecture needs is there with its shape.
    Raises SourceError, whose message names the file or field and the fix.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        source = load_gguf(path) if _is_gguf(path) else _unknown_file(path)
    elif path.is_dir():
        if (path / "model_index.json").is_file():  # a diffusers pipeline: an image model
            return load_diffusers_folder(path, variant)  # checked while loading: every tensor bound by name and shape
        if not (path / "config.json").is_file():
            raise SourceError(f"{path}: folder has no config.json; pass a Hugging Face model folder "
                              "(config.json, *.safetensors, tokenizer.json), a diffusers pipeline folder "
                              "(model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/) or a .gguf file.")
        source = load_hf_folder(path)
    elif not path.exists() and looks_like_hub_id(text):
        loaded = load_hub(text, variant=variant)
        if not isinstance(loaded, ModelSource):
            return loaded  # a diffusers pipeline, checked while loading
        source = loaded
    else:
        raise SourceError(f"{text}: path does not exist. Pass an existing .gguf file, a Hugging Face model folder, "
                          "or a Hugging Face Hub id such as HuggingFaceTB/SmolLM2-135M-Instruct.")
    check_tensors(source)
    return source


def _is_gguf(path: Path) -> bool:
    if path.suffix.lower() == ".gguf":
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == b"GGUF"


def _unknown_file(path: Path) -> ModelSource:
    raise SourceError(f"{path}: not a .gguf file; pass a .gguf file, or the folder that holds a Hugging Face "
                      "model (config.json, *.safetensors, tokenizer.json).")


def expected_shapes(config: LlmConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a model of `config` needs, by Hugging Face name."""
    hidden, head_dim = config.hidden_size, config.head_dim
    q_rows, kv_rows = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, hidden),
                                          "model.norm.weight": (hidden,)}
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, hidden)
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        shapes.update({
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
            prefix + "self_attn.q_proj.weight": (q_rows, hidden),
            prefix + "self_attn.k_proj.weight": (kv_rows, hidden),
            prefix + "self_attn.v_proj.weight": (kv_rows, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, q_rows),
            prefix + "mlp.gate_proj.weight": (config.intermediate_size, hidden),
            prefix + "mlp.up_proj.weight": (config.intermediate_size, hidden),
            prefix + "mlp.down_proj.weight": (hidden, config.intermediate_size),
        })
        if config.sandwich_norms:
            shapes.update({prefix + "pre_feedforward_layernorm.weight": (hidden,),
                           prefix + "post_feedforward_layernorm.weight": (hidden,)})
        if config.qk_norm:
            shapes.update({prefix + "self_attn.q_norm.weight": (head_dim,),
                           prefix + "self_attn.k_norm.weight": (head_dim,)})
        if config.attention_bias:
            shapes.update({prefix + "self_attn.q_proj.bias": (q_rows,),
                           prefix + "self_attn.k_proj.bias": (kv_rows,),
                           prefix + "self_attn.v_proj.bias": (kv_rows,)})
    return shapes


def check_tensors(source: ModelSource) -> None:
    """SourceError unless the tensors are exactly what the config calls for (a tied
    model may still carry its lm_head copy)."""
    expected = expected_shapes(source.config)
    for name, shape in expected.items():
        tensor = source.tensors.get(name)
        if tensor is None:
            raise SourceError(f"{source.origin}: tensor {name} is missing; the weights are incomplete "
                              "or belong to a different model than the config.")
        if tuple(tensor.shape) != shape:
            raise SourceError(f"{source.origin}: tensor {name} has shape {list(tensor.shape)}, the config calls "
                              f"for {list(shape)}; the weights do not match the config.")
    extra = sorted(set(source.tensors) - set(expected) - {"lm_head.weight"})
    if extra:
        raise SourceError(f"{source.origin}: unexpected tensors {', '.join(extra[:5])}"
                          f"{' ...' if len(extra) > 5 else ''}; this {source.config.architecture} variant is "
                          "not supported.")
