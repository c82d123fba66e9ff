"""Times weights-only rebuilds of the default chat model (SmolLM2 q4f32, fast link):
build_chat_model three times on a source loaded once, as `webkiln bench` times its
rebuild (the first build may compile; later ones reuse the compile cache).

    .venv/bin/python scripts/bench_rebuild.py

To compare two commits side by side, run it with PYTHONPATH=<checkout>/python for each
(e.g. a `git worktree` of the older commit), alternating.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import webkiln
from webkiln.package.chat_build import build_chat_model
from webkiln.sources import load_source
from webkiln.sources.default_model import fetch_default_model
from webkiln.toolchain.link import LinkMode


def main() -> None:
    source = load_source(fetch_default_model())
    out = tempfile.mkdtemp(prefix="webkiln-rebuild-")
    try:
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            build_chat_model(source, out, "q4f32", link_mode=LinkMode.FAST, log=lambda _: None)
            seconds.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"{webkiln.__file__}: builds {', '.join(f'{s:.2f} s' for s in seconds)}")


if __name__ == "__main__":
    main()
