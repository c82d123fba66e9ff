#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system packages (apt), the Python
# environment (.venv), the npm packages and the browser bundle. Sourced by
# serve.sh and test.sh; each step is skipped when already done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "[setup] $*"; }

# System packages: emscripten + LLVM (pinned in python/webkiln/toolchain/pins.py), Chromium, and
# Mesa's EGL/OpenGL ES (Dawn's OpenGL ES backend in Node: the --node-dawn runner without a GPU).
apt_packages="$(python3 -c 'exec(open("python/webkiln/toolchain/pins.py").read()); print(" ".join(APT_PACKAGES))') chromium"
apt_packages="$apt_packages libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri"
missing=""
for pkg in $apt_packages; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    log "installing with apt:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q $missing >/dev/null
  else
    echo "error: missing system packages:$missing" >&2
    echo "install them with: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
  fi
fi

# Python environment, reinstalled when pyproject.toml changes.
stamp=".venv/.webkiln-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "creating .venv and installing webkiln (pip)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import webkiln, tvm, playwright" # fail loudly if the install did not work
  rm -f .venv/.webkiln-setup-* && touch "$stamp"
fi

# npm packages, reinstalled when the lock file changes; then the bundle (fast).
lock_stamp="web/node_modules/.webkiln-$(sha256sum web/package-lock.json | cut -c1-16)"
if [ ! -f "$lock_stamp" ]; then
  log "installing npm packages"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  touch "$lock_stamp"
fi
(cd web && node build.mjs --release >/dev/null)
