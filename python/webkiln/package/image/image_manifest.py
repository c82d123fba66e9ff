"""The manifest of an image model (docs/FORMAT.md, "Image models") from its plans, and the
plan-only report derived from it."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ... import __version__
from ...models.diffusion.params import ENTRY_POINTS
from ...sources.diffusers_folder import DiffusersPipeline
from ..manifest import (
    MANIFEST_FORMAT,
    ComponentTensor,
    ImageBackendEntry,
    ImageComponents,
    ImageGenerationDefaults,
    ImageManifest,
    ImageMemory,
    ImageSize,
    ImageTensors,
    ImageTokenizer,
    LargestActivation,
    ManifestFile,
    ModelSchedulerConfig,
    SourceInfo,
    TextEncoderEntry,
    UNetEntry,
    VaeEntry,
)
from ..chat_build import CPU_HEAP_OVERHEAD
from .plan import BackendPlan
from .schemes import ARCHITECTURE
from .shape import ImageShape

# Generation defaults: a classifier-free-guidance pipeline, and an adversarially distilled
# (SD-Turbo-like) one that samples in 1-4 steps without guidance.
STANDARD_GENERATION = {"steps": 25, "max_steps": 100, "guidance_scale": 7.5}
TURBO_GENERATION = {"steps": 1, "max_steps": 4, "guidance_scale": 0.0}


def _backend(plan: BackendPlan, library_bytes: int) -> ImageBackendEntry:
    """`library_bytes`: the size of the backend's .wasm (0 in a plan, which compiles nothing)."""
    weights = plan.weights_bytes  # = the sizes of its shards, which the records tile exactly
    activations = max(b.peak_bytes for b in plan.buffers.values())
    largest = {c: LargestActivation(b.largest_bytes, b.largest) for c, b in plan.buffers.items()}
    if plan.device == "cpu":
        # One wasm32 memory holds it all: the weights, the activations, the library's own
        # data and the runtime's allocations (the same allowance as chat models'). The
        # browser checks total_bytes against wasm32's 4 GiB before downloading anything.
        return ImageBackendEntry(
            wasm=f"{plan.name}.wasm", device="cpu", activation_dtype="float32", required_features=[],
            required_limits={}, largest_activations=largest, tensors=plan.dtype,
            memory=ImageMemory(weights, activations, weights + activations + library_bytes + CPU_HEAP_OVERHEAD),
        )
    return ImageBackendEntry(
        wasm=f"{plan.name}.wasm",
        device="webgpu",
        activation_dtype="float16" if plan.dtype == "float16" else "float32",
        required_features=["shader-f16"] if plan.dtype == "float16" else [],
        required_limits={"maxStorageBufferBindingSize": plan.largest_binding, "maxBufferSize": plan.largest_binding},
        largest_activations=largest,
        tensors=plan.dtype,
        memory=ImageMemory(weights, activations, weights + activations),
    )


def _components(pipeline: DiffusersPipeline, shape: ImageShape) -> ImageComponents:
    text, unet, vae = pipeline.text_encoder.config, pipeline.unet.config, pipeline.vae.config
    batch, tokens = shape.unet_batch, text.max_position_embeddings
    latents = [vae.latent_channels, shape.latent_height, shape.latent_width]
    return ImageComponents(
        text_encoder=TextEncoderEntry(
            ENTRY_POINTS["text_encoder"], text, {"input_ids": ComponentTensor([1, tokens], "int32")},
            ComponentTensor([1, tokens, text.hidden_size], "activation")),
        unet=UNetEntry(
            ENTRY_POINTS["unet"], unet, batch,
            {"latents": ComponentTensor([batch, *latents], "activation"),
             "timestep": ComponentTensor([batch], "float32"),
             "text_embeds": ComponentTensor([batch, tokens, unet.cross_attention_dim], "activation")},
            ComponentTensor([batch, *latents], "activation")),
        vae=VaeEntry(
            ENTRY_POINTS["vae"], vae, vae.scaling_factor, vae.shift_factor,
            {"latents": ComponentTensor([1, *latents], "activation")},
            ComponentTensor([1, vae.out_channels, shape.height, shape.width], "activation", (-1, 1))),
    )


def image_manifest(pipeline: DiffusersPipeline, model_id: str, quantization: str, shape: ImageShape, turbo: bool,
                   plans: list[BackendPlan], scheduler: ModelSchedulerConfig, tensors: dict[str, ImageTensors],
                   files: list[ManifestFile], library_bytes: dict[str, int] | None = None) -> ImageManifest:
    """`library_bytes`: each backend's .wasm size (none in a plan)."""
    tok, vae = pipeline.tokenizer, pipeline.vae.config
    backends = {plan.name: _backend(plan, (library_bytes or {}).get(plan.name, 0)) for plan in plans}
    # The GPU estimate of the preferred WebGPU backend (webgpu-f16 where built: what a device
    # with shader-f16 runs); the CPU backend's is in its own entry.
    preferred = [plan.name for plan in plans if plan.device == "webgpu"][-1]
    return ImageManifest(
        format=MANIFEST_FORMAT,
        webkiln_version=__version__,
        id=model_id,
        task="image",
        name=pipeline.name,
        architecture=ARCHITECTURE,
        pipeline_class=pipeline.pipeline_class,
        quantization=quantization,
        source=SourceInfo("diffusers-folder", os.path.basename(pipeline.origin.rstrip("/"))),
        image=ImageSize(shape.height, shape.width, vae.latent_channels, shape.latent_height, shape.latent_width,
                        vae.upscale),
        components=_components(pipeline, shape),
        tokenizer=ImageTokenizer("tokenizer.json", "clip-bpe", pipeline.text_encoder.config.max_position_embeddings,
                                 tok.bos_token_id, tok.eos_token_id, tok.pad_token_id),
        scheduler=scheduler,
        generation=ImageGenerationDefaults(**(TURBO_GENERATION if turbo else STANDARD_GENERATION), turbo=turbo,
                                   width=shape.width, height=shape.height, negative_prompt=""),
        backends=backends,
        memory=dataclasses.replace(backends[preferred].memory),
        tensors=tensors,
        files=files,
    )


def plan_json(manifest: ImageManifest) -> dict[str, Any]:
    """A plan is the manifest a build would write less what only compiling and writing the
    weights produce: no libraries (`wasm` null), no shard pieces, no files; marked `plan_only`."""
    data = manifest.to_json()
    for backend in data["backends"].values():
        backend["wasm"] = None
    for weight_set in data["tensors"].values():
        for record in weight_set["records"]:
            del record["pieces"]
    data["plan_only"] = True
    return data
