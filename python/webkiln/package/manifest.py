"""The built-model format (docs/FORMAT.md): manifest.json and models/index.json as typed
dataclasses. This module is the one owner of their shape.

Both builders construct these objects, `to_json()` writes them, and `from_json()` reads a
written file back, refusing a key the schema lacks and a missing one (schema.py), so the
Python side and a file can never quietly disagree. The browser's types
(web/src/base/manifest_types.ts) are generated from these classes by
`python -m webkiln.package.manifest_ts`; a test fails when the checked-in TypeScript drifts
from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

from ..models.diffusion.config import ClipTextConfig, UNetConfig, VaeConfig
from ..model_source import LlmConfig
from .schema import ManifestError, Schema, extra, optional, renamed

# Version of the layout below: the browser refuses a manifest or index of another one.
# 2: backends name their device ("webgpu" or "cpu") and their own memory need.
MANIFEST_FORMAT = 2

SchedulerName = Literal["euler", "euler_a", "dpmpp_2m"]
# diffusers scheduler classes the browser implements, by the API's name for each (the one
# scheduler vocabulary: request field, engine, pipeline, UI). A model made with another
# class (e.g. PNDMScheduler) is built all the same and sampled with "euler" by default.
SCHEDULER_CLASSES: dict[str, SchedulerName] = {
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_a",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
}

ImageComponentName = Literal["text_encoder", "unet", "vae"]
FloatDType = Literal["float32", "float16"]
# Where a backend's library runs: WebGPU (WGSL kernels, wasm32 host code) or the CPU
# (WebAssembly with SIMD, no WebGPU needed).
BackendDevice = Literal["webgpu", "cpu"]


# --- parts shared by chat and image models ---------------------------------------------------


@dataclass
class ManifestFile(Schema):
    """One file of a built model's folder; the browser verifies each before use."""

    path: str  # relative to the manifest's folder
    size: int  # exact size in bytes
    sha256: str  # lower-case hex


@dataclass
class TensorPiece(Schema):
    shard: int  # index into `shards`
    offset: int
    nbytes: int


@dataclass
class TensorRecord(Schema):
    """One parameter, in the order the library's functions take them."""

    name: str
    shape: list[int]
    dtype: str
    nbytes: int
    pieces: list[TensorPiece]  # a tensor larger than a shard is split over several


@dataclass
class SourceInfo(Schema):
    kind: str  # "gguf", "hf-folder", "hub", "diffusers-folder"
    origin: str  # the file or folder name


# --- chat models -----------------------------------------------------------------------------


@dataclass
class BackendEntry(Schema):
    wasm: str
    device: BackendDevice
    required_features: list[str]  # WebGPU features (none on the CPU)
    # maxStorageBufferBindingSize / maxBufferSize: the largest single buffer a kernel binds
    # (none on the CPU)
    required_limits: dict[str, int]
    # What this backend holds at the context window: weights + KV cache + activations (on
    # the GPU, or in the wasm heap, which wasm32 caps at 4 GiB, for the CPU)
    memory_bytes: int
    # CPU only: the same library linked for threads (shared memory; loaded instead of `wasm`
    # where the page is cross-origin isolated and more than one thread is wanted)
    threads_wasm: str | None = optional()


@dataclass
class KvCache(Schema):
    page_size: int
    dtype: str


@dataclass
class ChatGenerationDefaults(Schema):
    temperature: float
    top_p: float
    max_tokens: int
    source_defaults: dict[str, Any] = extra()  # the source's generation_config values


@dataclass
class ChatMemory(Schema):
    weights_bytes: int
    kv_cache_bytes: int  # at context_window
    activations_bytes: int
    total_bytes: int


@dataclass
class QuantizationQuality(Schema):
    """How far the packaged weights are from the source's (package/quality.py)."""

    text_tokens: int  # positions of the fixed text compared
    # what the packaged model is compared with: "source-weights" (a folder's own floats) or
    # "gguf-dequantized" (a GGUF's blocks, dequantized by gguf: all the file has)
    reference: str
    top1_agreement: float  # share of positions whose most likely next token agrees
    mean_kl: float  # mean KL(reference || packaged) of the next-token distributions, nats


@dataclass
class ChatTensors(Schema):
    shards: list[str]
    records: list[TensorRecord]


@dataclass
class ChatManifest(Schema):
    format: int
    webkiln_version: str
    id: str
    task: Literal["chat"]
    name: str
    architecture: str
    config: LlmConfig
    quantization: str
    activation_dtype: str
    source: SourceInfo
    context_window: int
    prefill_chunk_size: int
    kv_cache: KvCache
    chat_template: str | None
    bos_token_id: int | None
    stop_token_ids: list[int]
    generation: ChatGenerationDefaults
    backends: dict[str, BackendEntry]
    memory: ChatMemory
    tensors: ChatTensors
    files: list[ManifestFile]
    # Each stored matrix's weight format (quant/formats.py), by module path: a GGUF tensor of a
    # kept block type keeps its type, so one model can mix several; "a+b+c" is a fused matrix
    # (q/k/v, gate/up) stored as one matrix per source tensor because their types differ
    weight_formats: dict[str, str] | None = optional()
    quality: QuantizationQuality | None = optional()


# --- image models ----------------------------------------------------------------------------


@dataclass
class ImageSize(Schema):
    height: int
    width: int
    latent_channels: int
    latent_height: int
    latent_width: int
    vae_scale_factor: int


@dataclass
class ComponentTensor(Schema):
    shape: list[int]
    dtype: str  # "activation": the backend's activation_dtype
    range: tuple[float, float] | None = optional()  # the values' nominal range, when known


@dataclass
class TextEncoderEntry(Schema):
    entry: str
    config: ClipTextConfig
    inputs: dict[str, ComponentTensor]
    output: ComponentTensor


@dataclass
class UNetEntry(Schema):
    entry: str
    config: UNetConfig
    batch: int  # 2: [unconditional, conditional] in one call; 1: no guidance (Turbo)
    inputs: dict[str, ComponentTensor]
    output: ComponentTensor


@dataclass
class VaeEntry(Schema):
    entry: str
    config: VaeConfig
    scaling_factor: float
    shift_factor: float
    inputs: dict[str, ComponentTensor]
    output: ComponentTensor


@dataclass
class ImageComponents(Schema):
    text_encoder: TextEncoderEntry
    unet: UNetEntry
    vae: VaeEntry


@dataclass
class ImageTokenizer(Schema):
    file: str
    kind: str
    max_length: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int


@dataclass
class ModelSchedulerConfig(Schema):
    """diffusers' scheduler_config.json with diffusers' defaults filled in."""

    class_name: str | None = renamed("class")  # its `_class_name`
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: list[float] | None = None
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    set_alpha_to_one: bool = True
    clip_sample: bool = False
    other: dict[str, Any] = extra()  # any other fields of the file


@dataclass
class ImageGenerationDefaults(Schema):
    steps: int
    max_steps: int
    guidance_scale: float
    turbo: bool
    width: int
    height: int
    negative_prompt: str


@dataclass
class LargestActivation(Schema):
    bytes: int
    what: str  # which kernel output or input, for messages


@dataclass
class ImageMemory(Schema):
    weights_bytes: int
    activations_bytes: int
    total_bytes: int


@dataclass
class ImageBackendEntry(Schema):
    wasm: str
    device: BackendDevice
    activation_dtype: FloatDType
    required_features: list[str]
    required_limits: dict[str, int]
    largest_activations: dict[str, LargestActivation]  # per component
    tensors: str  # the weight set it reads: a key of the manifest's `tensors`
    memory: ImageMemory


@dataclass
class TensorSplit(Schema):
    """A part of a weight too large for one binding: rows [first, end) along `axis` of `of`."""

    of: str
    axis: int
    rows: tuple[int, int]


@dataclass
class ImageTensorRecord(TensorRecord):
    component: ImageComponentName
    split: TensorSplit | None = optional()


@dataclass
class ImageTensors(Schema):
    shards: list[str]
    records: list[ImageTensorRecord]


@dataclass
class ImageManifest(Schema):
    format: int
    webkiln_version: str
    id: str
    task: Literal["image"]
    name: str
    architecture: str
    pipeline_class: str
    quantization: str
    source: SourceInfo
    image: ImageSize
    components: ImageComponents
    tokenizer: ImageTokenizer
    scheduler: ModelSchedulerConfig
    generation: ImageGenerationDefaults
    backends: dict[str, ImageBackendEntry]
    memory: ImageMemory  # the preferred backend's (webgpu-f16 where built)
    tensors: dict[str, ImageTensors]  # by weight set: "float32", "float16"
    files: list[ManifestFile]


Manifest = Union[ChatManifest, ImageManifest]
_BY_TASK: dict[str, type[ChatManifest] | type[ImageManifest]] = {"chat": ChatManifest, "image": ImageManifest}


def parse_manifest(data: Any, where: str = "manifest.json") -> Manifest:
    """A manifest.json's JSON as its dataclass; ManifestError naming the key when it is not one."""
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ManifestError(f"{where}: format {found!r}, this webkiln reads format {MANIFEST_FORMAT}; rebuild the model.")
    cls = _BY_TASK.get(data.get("task"))
    if cls is None:
        raise ManifestError(f"{where}: unknown task {data.get('task')!r} (expected one of {', '.join(_BY_TASK)})")
    return cls.from_json(data, where)


# --- models/index.json -------------------------------------------------------------------------


@dataclass
class IndexBackend(Schema):
    device: BackendDevice
    required_features: list[str]


@dataclass
class ModelIndexEntry(Schema):
    """One model of models/index.json: what the app needs to list it without its manifest."""

    id: str
    task: Literal["chat", "image"]
    name: str
    architecture: str
    quantization: str
    manifest: str  # the manifest's path, relative to the index
    download_bytes: int  # every file of the folder
    memory_bytes: int
    context_window: int | None  # null for image models
    backends: dict[str, IndexBackend]

    @classmethod
    def of(cls, manifest: Manifest, manifest_path: str) -> ModelIndexEntry:
        """The one place an index entry is made from a manifest."""
        return cls(
            id=manifest.id, task=manifest.task, name=manifest.name, architecture=manifest.architecture,
            quantization=manifest.quantization, manifest=manifest_path,
            download_bytes=sum(f.size for f in manifest.files), memory_bytes=manifest.memory.total_bytes,
            context_window=manifest.context_window if isinstance(manifest, ChatManifest) else None,
            backends={k: IndexBackend(v.device, v.required_features) for k, v in manifest.backends.items()},
        )


@dataclass
class ModelIndex(Schema):
    format: int
    models: list[ModelIndexEntry]

