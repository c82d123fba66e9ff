#!/usr/bin/env bash
# Sets up what is missing, builds what the page needs, and serves the site on
# http://127.0.0.1:8000/ (pass --port N / --host H / --isolate to change).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
if [ ! -f site/kernel-check/check.json ]; then
  .venv/bin/webkiln kernel-check --release
fi
exec .venv/bin/webkiln serve "$@"
