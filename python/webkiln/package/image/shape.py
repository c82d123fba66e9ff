"""The image a build is for: its pixel and latent size, and whether the pipeline is an
SD-Turbo-like one (no guidance: a UNet batch of 1)."""

from __future__ import annotations

import dataclasses

from ...sources.diffusers_folder import DiffusersPipeline
from .errors import ImageBuildError


@dataclasses.dataclass(frozen=True)
class ImageShape:
    height: int  # image pixels
    width: int
    latent_height: int
    latent_width: int
    unet_batch: int  # 2: [unconditional, conditional] in one call; 1: no guidance in one call


def image_shape(pipeline: DiffusersPipeline, size: int | tuple[int, int] | None, turbo: bool) -> ImageShape:
    unet, vae = pipeline.unet.config, pipeline.vae.config
    scale = vae.upscale
    if size is None:
        size = unet.sample_size * scale
    height, width = (size, size) if isinstance(size, int) else size
    step = scale * unet.downscale
    for label, value in (("height", height), ("width", width)):
        if value <= 0 or value % step:
            raise ImageBuildError(
                f"image {label} {value} is not a positive multiple of {step} (the VAE upscales latents {scale}x "
                f"and the UNet halves them {len(unet.block_out_channels) - 1} times); pass --size as a multiple "
                f"of {step}, e.g. {max(step, round(value / step) * step)}.")
    return ImageShape(height, width, height // scale, width // scale, 1 if turbo else 2)


def is_turbo(pipeline: DiffusersPipeline) -> bool:
    """SD-Turbo-like: the folder or the pipeline it was saved from is named *turbo*."""
    names = [pipeline.name, str(pipeline.model_index.get("_name_or_path", "")),
             str(pipeline.unet.raw_config.get("_name_or_path", ""))]
    return any("turbo" in n.lower() for n in names)
