"""Load a Stable Diffusion pipeline folder in the standard diffusers layout.

    model_index.json
    text_encoder/  config.json + model.safetensors (or sharded, or pytorch_model.bin)
    tokenizer/     vocab.json + merges.txt (or tokenizer.json) (+ tokenizer_config.json, ...)
    unet/          config.json + diffusion_pytorch_model.safetensors (or .bin)
    vae/           config.json + diffusion_pytorch_model.safetensors (or .bin)
    scheduler/     scheduler_config.json

into a DiffusersPipeline: parsed configs (models/diffusion/config.py), lazily read tensors
(only safetensors headers are read up front; `.bin` files are opened with
`torch.load(weights_only=True, mmap=True)`), and the binding of every parameter of our
modules to a checkpoint tensor, checked by name and shape. Every problem is one
SourceError naming the file, field or tensor. Nothing is ever written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from ..models.diffusion.config import (
    ClipTextConfig,
    UNetConfig,
    VaeConfig,
    parse_clip_config,
    parse_unet_config,
    parse_vae_config,
)
from ..models.diffusion.params import Binding, bind, convert, export, param_specs
from ..model_source import SourceError, SourceTensor
from .files import read_json, safetensors_tensors, shards

SUBFOLDERS = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")
_LAYOUT = ("model_index.json, text_encoder/, tokenizer/, unet/, vae/ and scheduler/ "
           "(what `StableDiffusionPipeline.save_pretrained(folder)` writes)")
_WEIGHT_STEMS = {"text_encoder": ("model", "pytorch_model"),
                 "unet": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
                 "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model")}


@dataclass
class Component:
    """One model of the pipeline (text_encoder, unet or vae)."""

    name: str
    folder: Path
    config: Any  # ClipTextConfig | UNetConfig | VaeConfig
    raw_config: dict[str, Any]
    tensors: dict[str, SourceTensor]  # checkpoint name -> lazily read tensor
    bindings: list  # [models.diffusion.params.Binding], our packed parameter order
    weight_files: list[Path]

    def params(self, dtype: str = "float32") -> list[np.ndarray]:
        """Our parameters, converted, in the packed order of `models.diffusion.params.export(...)`."""
        specs = param_specs(self.name, self.config, dtype)
        assert [s[0] for s in specs] == [b.param for b in self.bindings]
        bindings = [Binding(b.param, b.source, b.shape, dtype_) for b, (_, _, dtype_) in zip(self.bindings, specs)]
        return convert(bindings, lambda name: self.tensors[name].dequantize())


@dataclass
class ClipTokenizerFiles:
    vocab: dict[str, int]
    merges: list[str]  # "a b" pairs, without the "#version" line
    config: dict[str, Any]  # tokenizer_config.json merged over special_tokens_map.json
    model_max_length: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int

    def tokenizer_json(self) -> str:
        """The tokenizer in Hugging Face `tokenizers` JSON (what the browser's tokenizer loads).

        CLIP's BPE: NFC + whitespace collapsing + lowercasing, words split by CLIP's pattern,
        byte-level symbols, word-final pieces marked with `</w>`, and <bos> ... <eos> around
        every encoding.
        """
        id_to_token = {i: t for t, i in self.vocab.items()}
        bos, eos = id_to_token[self.bos_token_id], id_to_token[self.eos_token_id]
        merges = [tuple(m.split(" ")) for m in self.merges]
        tokenizer = Tokenizer(BPE(vocab=dict(self.vocab), merges=merges, continuing_subword_prefix="",
                                  end_of_word_suffix="</w>", fuse_unk=False, unk_token=eos))
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
        words = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ])
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens([bos, eos])
        tokenizer.post_processor = processors.RobertaProcessing((eos, self.eos_token_id), (bos, self.bos_token_id),
                                                                trim_offsets=False, add_prefix_space=False)
        return tokenizer.to_str()

    def encode_prompt(self, text: str, length: int | None = None) -> list[int]:
        """`length` (default model_max_length) ids as Stable Diffusion pipelines feed the text
        encoder: <bos>, at most `length - 2` tokens, <eos>, then padding."""
        length = length or self.model_max_length
        ids = Tokenizer.from_str(self.tokenizer_json()).encode(text, add_special_tokens=False).ids
        ids = [self.bos_token_id, *ids[: length - 2], self.eos_token_id]
        return ids + [self.pad_token_id] * (length - len(ids))


@dataclass
class DiffusersPipeline:
    origin: str
    name: str
    pipeline_class: str  # model_index.json `_class_name`
    model_index: dict[str, Any]
    text_encoder: Component
    unet: Component
    vae: Component
    tokenizer: ClipTokenizerFiles
    scheduler: dict[str, Any]  # scheduler_config.json (with `_class_name`)
    files: list[Path] = field(default_factory=list)

    @property
    def components(self) -> dict[str, Component]:
        return {"text_encoder": self.text_encoder, "unet": self.unet, "vae": self.vae}

    def export(self, component: str, dtype: str = "float32", latent_height: int | None = None,
               latent_width: int | None = None, batch: int = 2):
        """models.diffusion.params.export for one component of this pipeline: latent sizes default
        to the UNet's sample_size, the UNet's text length is the text encoder's."""
        size = self.unet.config.sample_size
        return export(component, self.components[component].config, dtype, latent_height or size,
                      latent_width or size, batch, self.text_encoder.config.max_position_embeddings)


def load_diffusers_folder(folder: str | Path, variant: str | None = None, origin: str | None = None,
                          name: str | None = None) -> DiffusersPipeline:
    """`variant` (e.g. "fp16") prefers `diffusion_pytorch_model.fp16.safetensors`-style files.
    `origin` and `name` default to the folder (a Hub download passes the repository's)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a folder; a diffusers pipeline is a folder with {_LAYOUT}.")
    model_index = _read_json(folder / "model_index.json")
    for sub in SUBFOLDERS:
        if not (folder / sub).is_dir():
            raise SourceError(f"{folder}: subfolder '{sub}/' is missing; a diffusers pipeline folder needs "
                              f"{_LAYOUT}.")
    text_cfg_raw = _read_json(folder / "text_encoder" / "config.json")
    unet_cfg_raw = _read_json(folder / "unet" / "config.json")
    vae_cfg_raw = _read_json(folder / "vae" / "config.json")
    text_cfg = parse_clip_config(text_cfg_raw, str(folder / "text_encoder" / "config.json"))
    unet_cfg = parse_unet_config(unet_cfg_raw, str(folder / "unet" / "config.json"))
    vae_cfg = parse_vae_config(vae_cfg_raw, str(folder / "vae" / "config.json"))
    _check_compatible(folder, text_cfg, unet_cfg, vae_cfg)
    scheduler_path = folder / "scheduler" / "scheduler_config.json"
    scheduler = _read_json(scheduler_path)
    tokenizer, tokenizer_files = _tokenizer(folder / "tokenizer")
    components = {}
    for part, cfg, raw in (("text_encoder", text_cfg, text_cfg_raw), ("unet", unet_cfg, unet_cfg_raw),
                           ("vae", vae_cfg, vae_cfg_raw)):
        components[part] = _component(folder / part, part, cfg, raw, variant)
    files = [folder / "model_index.json", scheduler_path, *tokenizer_files]
    for component in components.values():
        files += [component.folder / "config.json", *component.weight_files]
    return DiffusersPipeline(
        origin=origin or str(folder),
        name=name or folder.resolve().name,
        pipeline_class=str(model_index.get("_class_name", "StableDiffusionPipeline")),
        model_index=model_index,
        tokenizer=tokenizer,
        scheduler=scheduler,
        files=files,
        **components,
    )


# --- configs -------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path, f"a diffusers pipeline folder holds {_LAYOUT}")


def _check_compatible(folder: Path, text: ClipTextConfig, unet: UNetConfig, vae: VaeConfig) -> None:
    if unet.cross_attention_dim != text.hidden_size:
        raise SourceError(f"{folder}: unet/config.json cross_attention_dim {unet.cross_attention_dim} differs from "
                          f"text_encoder/config.json hidden_size {text.hidden_size}; the components come from "
                          "different pipelines.")
    if unet.in_channels != vae.latent_channels or unet.out_channels != vae.latent_channels:
        raise SourceError(f"{folder}: unet/config.json in_channels / out_channels ({unet.in_channels} / "
                          f"{unet.out_channels}) differ from vae/config.json latent_channels "
                          f"{vae.latent_channels}; webkiln supports text-to-image UNets whose input and output "
                          "are the VAE latents.")


# --- tokenizer -----------------------------------------------------------------------


def _token(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _tokenizer(folder: Path) -> tuple[ClipTokenizerFiles, list[Path]]:
    """vocab.json + merges.txt (the hub layout), or a tokenizer.json (what transformers 5 saves)."""
    vocab_path, merges_path, fast_path = folder / "vocab.json", folder / "merges.txt", folder / "tokenizer.json"
    if vocab_path.is_file() and merges_path.is_file():
        vocab = _read_json(vocab_path)
        lines = merges_path.read_text(encoding="utf-8").splitlines()
        merges = [line for line in lines if line and not line.startswith("#version")]
        files, where = [vocab_path, merges_path], merges_path
        if fast_path.is_file():  # transformers 5 reads tokenizer.json first: both must say the same
            fast = _read_json(fast_path).get("model")
            fast_vocab = fast.get("vocab") if isinstance(fast, dict) else None
            if isinstance(fast_vocab, dict) and fast_vocab != vocab:
                token = next((t for t in fast_vocab if vocab.get(t) != fast_vocab[t]), None)
                detail = (f"token {token!r} is {vocab.get(token)} in vocab.json but {fast_vocab[token]} in tokenizer.json"
                          if token is not None else "vocab.json has tokens tokenizer.json lacks")
                raise SourceError(f"{folder}: vocab.json and tokenizer.json disagree ({detail}); the text encoder was "
                                  "trained with one of them. Keep that one and delete the other (transformers 5 "
                                  "reads tokenizer.json when both are there).")
    elif fast_path.is_file():
        model = _read_json(fast_path).get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise SourceError(f"{fast_path}: not a BPE tokenizer (field 'model.type' must be \"BPE\"); Stable "
                              "Diffusion text encoders use CLIP's BPE tokenizer.")
        vocab = model["vocab"]
        merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges") or []]
        files, where = [fast_path], fast_path
    else:
        raise SourceError(f"{folder}: no tokenizer files; webkiln reads the CLIP tokenizer from tokenizer/vocab.json "
                          "and tokenizer/merges.txt (or tokenizer/tokenizer.json).")
    if not all(isinstance(v, int) for v in vocab.values()):
        raise SourceError(f"{files[0]}: expected the vocabulary as a JSON object of token -> integer id.")
    for number, line in enumerate(merges, 1):
        if not isinstance(line, str) or len(line.split(" ")) != 2:
            raise SourceError(f"{where}: merge {number} {line!r} is not two space-separated tokens; the file "
                              "is corrupt, re-download it.")
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            config.update(_read_json(folder / name))
            files.append(folder / name)

    def token_id(key: str, default: str) -> int:
        token = _token(config.get(key)) or default
        if token not in vocab:
            raise SourceError(f"{folder}: {key} {token!r} is not in vocab.json; the tokenizer files do not belong "
                              "together.")
        return vocab[token]

    bos = token_id("bos_token", "<|startoftext|>")
    eos = token_id("eos_token", "<|endoftext|>")
    pad = token_id("pad_token", "<|endoftext|>")
    max_length = config.get("model_max_length", 77)
    if not isinstance(max_length, int) or max_length > 10**6:  # transformers writes 1e30 for "unbounded"
        max_length = 77
    return ClipTokenizerFiles(vocab, merges, config, max_length, bos, eos, pad), files


# --- weights -------------------------------------------------------------------------


def _weight_candidates(component: str, variant: str | None) -> Iterator[tuple[str, str]]:
    """(kind, file name) of a component's weights, most preferred first: the variant's files
    (`model.fp16.safetensors`), then the plain ones; safetensors, sharded safetensors, `.bin`.
    One order for local folders and for choosing what to download from the Hub."""
    st_stem, bin_stem = _WEIGHT_STEMS[component]
    for suffix in ([f".{variant}"] if variant else []) + [""]:
        yield "single", f"{st_stem}{suffix}.safetensors"
        yield "index", f"{st_stem}{suffix}.safetensors.index.json"
        yield "bin", f"{bin_stem}{suffix}.bin"


def _weight_files(folder: Path, component: str, variant: str | None) -> tuple[list[Path], dict[str, SourceTensor]]:
    for kind, file_name in _weight_candidates(component, variant):
        path = folder / file_name
        if not path.is_file():
            continue
        if kind == "single":
            return [path], safetensors_tensors({path: None})
        if kind == "index":
            listed = shards(path)
            return [path, *listed], safetensors_tensors(listed, path.name)
        return [path], _bin_tensors(path)
    st_stem, bin_stem = _WEIGHT_STEMS[component]
    raise SourceError(f"{folder}: no weights; expected {st_stem}.safetensors (or a sharded "
                      f"{st_stem}.safetensors.index.json, or {bin_stem}.bin) in {component}/.")


def hub_files(repo_id: str, repo_files: Iterable[str], variant: str | None = None) -> list[str]:
    """The files of a Hub repository in the diffusers layout that `load_diffusers_folder` reads:
    model_index.json, the scheduler and tokenizer files, each component's config.json and one set
    of its weights (the order of `_weight_candidates`). Not the rest: a Stable Diffusion repository
    also holds whole-pipeline checkpoints (`v1-5-pruned.safetensors`, several GB), other weight
    formats and variants, a safety checker, ONNX and Flax exports.
    SourceError, before anything is downloaded, when a component is missing."""
    names = set(repo_files)
    chosen = ["model_index.json"]
    for sub in ("scheduler", "tokenizer"):
        files = sorted(n for n in names if n.startswith(f"{sub}/") and n.count("/") == 1
                       and n.endswith((".json", ".txt")))
        if not files:
            raise SourceError(f"{repo_id}: the Hub repository has no {sub}/ files; a diffusers pipeline needs "
                              f"{_LAYOUT}.")
        chosen += files
    for component in ("text_encoder", "unet", "vae"):
        if f"{component}/config.json" not in names:
            raise SourceError(f"{repo_id}: the Hub repository has no {component}/config.json; a diffusers "
                              f"pipeline needs {_LAYOUT}.")
        chosen.append(f"{component}/config.json")
        for kind, file_name in _weight_candidates(component, variant):
            path = f"{component}/{file_name}"
            if path in names:
                chosen.append(path)
                if kind == "index":  # its shards: <stem>-00001-of-00002.safetensors
                    stem = re.escape(path[: -len(".safetensors.index.json")])
                    chosen += sorted(n for n in names if re.fullmatch(stem + r"-\d+-of-\d+\.safetensors", n))
                break
        else:
            raise SourceError(f"{repo_id}: the Hub repository has no weights for {component}/ (expected "
                              f"{component}/{next(_weight_candidates(component, None))[1]} or a .bin).")
    return chosen


def _bin_tensors(path: Path) -> dict[str, SourceTensor]:
    # Lazy: torch is optional (the test extra) and slow to import; only `.bin` checkpoints need it.
    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip errors, or a pickle that is not plain tensors
        raise SourceError(f"{path}: cannot be read as a PyTorch state dict ({error}); re-download it or convert "
                          "it to safetensors.") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SourceError(f"{path}: not a PyTorch state dict (a {type(state).__name__}).")
    tensors = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue  # buffers such as CLIP's int64 position_ids

        def read(value=value) -> np.ndarray:
            return value.detach().float().numpy() if value.dtype == torch.bfloat16 else value.detach().numpy()

        tensors[name] = SourceTensor(name=name, shape=tuple(value.shape), ggml_type=None, raw=read,
                                     dequantize=lambda read=read: read().astype(np.float32, copy=False))
    return tensors


def _component(folder: Path, name: str, cfg: Any, raw: dict[str, Any], variant: str | None) -> Component:
    files, tensors = _weight_files(folder, name, variant)
    where = ", ".join(str(f) for f in files)
    bindings = bind(name, param_specs(name, cfg), {n: t.shape for n, t in tensors.items()}, where)
    return Component(name=name, folder=folder, config=cfg, raw_config=raw, tensors=tensors, bindings=bindings,
                     weight_files=files)
