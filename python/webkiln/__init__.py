"""webkiln: compile language and image models for WebGPU and run them in the browser."""

__version__ = "0.1.0"
