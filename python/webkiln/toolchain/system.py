"""Find (or install) emscripten and LLVM, and configure emscripten to use that LLVM.

Debian's emscripten 3.1.6 ships configured for clang/lld 14, which cannot read
the LLVM-22 objects TVM emits. We point it at Debian's LLVM 22 through our own
EM_CONFIG file instead of touching the system one.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolchainError
from .paths import cache_dir
from .pins import APT_PACKAGES, LLVM_MAJOR

EMSCRIPTEN_ROOT = Path("/usr/share/emscripten")
LLVM_ROOT = Path(f"/usr/lib/llvm-{LLVM_MAJOR}/bin")


@dataclass(frozen=True)
class Emscripten:
    emcc: Path
    em_config: Path
    version: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["EM_CONFIG"] = str(self.em_config)
        # A custom EM_CACHE breaks Debian's frozen sysroot cache.
        env.pop("EM_CACHE", None)
        return env

    def run(self, args: list[str], what: str) -> str:
        proc = subprocess.run(
            [str(self.emcc), *args], env=self.env(), capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise ToolchainError(
                f"{what} failed (emcc exit {proc.returncode}).\n"
                f"command: emcc {' '.join(args)}\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout + proc.stderr


def install_command() -> str:
    return "apt-get update && apt-get install -y " + " ".join(APT_PACKAGES)


def _missing() -> list[str]:
    missing = []
    if shutil.which("emcc") is None or not EMSCRIPTEN_ROOT.is_dir():
        missing.append("emscripten")
    for tool in ("clang", "wasm-ld", "llvm-ar"):
        if not (LLVM_ROOT / tool).exists():
            missing.append(f"{LLVM_ROOT / tool}")
    return missing


def _install_with_apt() -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"[webkiln] installing {' '.join(APT_PACKAGES)} with apt (one time)...", flush=True)
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *APT_PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError(
                f"'{' '.join(cmd)}' failed with exit {proc.returncode}:\n{proc.stderr[-2000:]}"
            )


def _write_em_config() -> Path:
    text = (
        f"EMSCRIPTEN_ROOT = '{EMSCRIPTEN_ROOT}'\n"
        f"LLVM_ROOT = '{LLVM_ROOT}'\n"
        "BINARYEN_ROOT = '/usr'\n"
        f"NODE_JS = '{shutil.which('node') or '/usr/bin/node'}'\n"
        # Debian prebuilt the sysroot; emcc must never try to rebuild it.
        "FROZEN_CACHE = True\n"
    )
    path = cache_dir() / f"emscripten-llvm{LLVM_MAJOR}.config"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


@functools.lru_cache(maxsize=1)
def find_emscripten(install: bool = True) -> Emscripten:
    """Returns a configured emscripten; installs it with apt when missing and running as root."""
    missing = _missing()
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        _install_with_apt()
        missing = _missing()
    if missing:
        raise ToolchainError(
            "webkiln needs emscripten and LLVM "
            f"{LLVM_MAJOR} to build WebAssembly, but these are missing: {', '.join(missing)}.\n"
            f"Install them (as root) with:\n    {install_command()}"
        )
    emcc = Path(shutil.which("emcc") or "")
    config = _write_em_config()
    tool = Emscripten(emcc=emcc, em_config=config, version="")
    first_line = tool.run(["--version"], "emcc --version").splitlines()[0]
    return Emscripten(emcc=emcc, em_config=config, version=first_line.strip())
