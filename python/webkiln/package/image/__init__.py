"""Packaging a Stable Diffusion-family pipeline (`build_web --model <diffusers folder>`): the
schemes a build can be asked for, the scheduler config, the merged Relax module, its buffer
analysis and limits, the weights, the manifest, and the build that writes them (build.py)."""
