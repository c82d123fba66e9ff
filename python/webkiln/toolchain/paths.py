"""Where webkiln keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """User cache dir; WEBKILN_CACHE_DIR overrides it (tests use a private one)."""
    override = os.environ.get("WEBKILN_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("webkiln"))
