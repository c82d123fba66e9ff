#!/usr/bin/env bash
# Sets up what is missing, then runs the whole test suite: the TypeScript unit tests
# (tests/web/unit, Node's test runner, about a second), then pytest + Playwright/Chromium.
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
(cd web && npm test --silent)
exec .venv/bin/python -m pytest "$@"
