"""Stable Diffusion-family components (CLIP text encoder, UNet, VAE decoder) as
tvm.relax.frontend.nn modules.

`config` imports nothing from TVM; `clip`, `unet`, `vae`, `layers` do, and `params`
imports them only when a module is built.
"""

from .config import (
           ClipTextConfig,
           UNetConfig,
           VaeConfig,
           parse_clip_config,
           parse_unet_config,
           parse_vae_config,
)

__all__ = ["ClipTextConfig", "UNetConfig", "VaeConfig", "parse_clip_config", "parse_unet_config",
           "parse_vae_config"]
