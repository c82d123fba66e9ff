#!/usr/bin/env bash
# Sets up what is missing, then runs the whole test suite (pytest + Playwright/Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
