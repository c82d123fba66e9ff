"""Toolchain: version pins, the runtime-library cache, our runtime headers, link modes, imports."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest

from webkiln.toolchain import pins, runtime, system
from webkiln.toolchain.errors import ToolchainError
from webkiln.toolchain.wasm_imports import TVMJS_SUPPLIED, read_imports, unexpected_imports

REPO = Path(__file__).resolve().parents[1]
HEADERS = REPO / "python" / "webkiln" / "toolchain" / "runtime_headers"


# ---------------------------------------------------------------- pins
def test_pins_agree_everywhere():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert f"apache-tvm=={pins.TVM_VERSION}" in pyproject["project"]["dependencies"]
    package = json.loads((REPO / "web" / "package.json").read_text())
    # The runtime is bundled into every product bundle and into the npm package (which has no
    # runtime dependencies), so web/ pins it as a build-time dependency, and only there.
    assert package["devDependencies"]["@mlc-ai/web-runtime"] == pins.WEB_RUNTIME_VERSION
    assert "@mlc-ai/web-runtime" not in package.get("dependencies", {})
    lock = json.loads((REPO / "web" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@mlc-ai/web-runtime"]["version"] == pins.WEB_RUNTIME_VERSION
    import importlib.metadata

    assert importlib.metadata.version("apache-tvm") == pins.TVM_VERSION


def test_typescript_is_strict_and_typechecks():
    """web/ in strict mode, the browser code and the Node runner (its own tsconfig: Node's types
    must not leak into browser code) both typecheck."""
    config = json.loads((REPO / "web" / "tsconfig.json").read_text())
    assert config["compilerOptions"]["strict"] is True and "node" not in config["compilerOptions"]["types"]
    proc = subprocess.run(["npm", "run", "-s", "typecheck"], cwd=REPO / "web", capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- wasm imports
def test_built_modules_import_only_what_tvmjs_supplies(site_root):
    for wasm in sorted((site_root / "kernel-check").glob("*.wasm")):
        names = {name for _, name, kind in read_imports(wasm) if kind == "func"}
        assert names, f"{wasm.name}: no imports read (parser broken?)"
        assert unexpected_imports(wasm) == [], wasm.name
        assert names <= TVMJS_SUPPLIED


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_import_check_catches_drift(tmp_path):
    """A module importing a function tvmjs does not supply is reported by name."""
    def name(s: str) -> bytes:
        return _leb(len(s)) + s.encode()

    types = b"\x01" + _leb(4) + b"\x01\x60\x00\x00"  # one type: () -> ()
    entries = [name("env") + name("TVMFFIWasmSafeCall") + b"\x00\x00",
               name("env") + name("__cxa_throw") + b"\x00\x00",
               name("env") + name("memory") + b"\x02\x00\x01"]
    body = _leb(len(entries)) + b"".join(entries)
    imports = b"\x02" + _leb(len(body)) + body
    wasm = tmp_path / "drift.wasm"
    wasm.write_bytes(b"\0asm\x01\0\0\0" + types + imports)
    assert read_imports(wasm)[2] == ("env", "memory", "memory")
    assert unexpected_imports(wasm) == ["env.__cxa_throw"]


# ---------------------------------------------------------------- our runtime headers
def _compile_cpp(tmp_path: Path, source: str, includes: list[Path]) -> Path:
    src = tmp_path / "harness.cc"
    src.write_text(source)
    exe = tmp_path / "harness"
    cmd = ["g++", "-std=c++17", "-O1", "-Wall", "-Werror", *[f"-I{p}" for p in includes], str(src), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def test_fp16_conversions_bit_exact_against_numpy(tmp_path):
    exe = _compile_cpp(tmp_path, r'''
#include "builtin_fp16.h"
#include <cstdio>
int main() {
  char mode; unsigned v;
  while (std::scanf(" %c %u", &mode, &v) == 2) {
    if (mode == 'e') {
      float f = __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>((uint16_t)v);
      uint32_t b; std::memcpy(&b, &f, 4); std::printf("%u\n", b);
    } else {
      float f; uint32_t b = v; std::memcpy(&f, &b, 4);
      std::printf("%u\n", (unsigned)__truncXfYf2__<float, uint32_t, 23, uint16_t, uint16_t, 10>(f));
    }
  }
}''', [HEADERS / "3rdparty" / "compiler-rt"])

    def run(mode: str, values: np.ndarray) -> np.ndarray:
        out = subprocess.run([str(exe)], input="".join(f"{mode} {v}\n" for v in values),
                             capture_output=True, text=True, check=True).stdout
        return np.array(out.split(), dtype=np.uint64)

    halves = np.arange(65536, dtype=np.uint32)
    expected = halves.astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32)
    assert np.array_equal(run("e", halves), expected), "half -> float differs from numpy"

    rng = np.random.default_rng(0)
    finite = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    midpoints = (finite[:-1] + finite[1:]) / 2  # exact ties: round-half-to-even is exercised
    floats = np.concatenate([
        expected.view(np.float32),
        midpoints.astype(np.float32), -midpoints.astype(np.float32),
        rng.standard_normal(50_000).astype(np.float32) * np.float32(1e-4),
        rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array([65504, 65519.99, 65520, 1e9, 6e-8, 2.98e-8, 1e-30, 0.0, -0.0], np.float32),
    ])
    floats = floats[~np.isnan(floats)]
    with np.errstate(over="ignore"):
        want = floats.astype(np.float16).view(np.uint16)
    assert np.array_equal(run("t", floats.view(np.uint32)), want), "float -> half differs from numpy"
    nan_half = run("t", np.array([0x7FC00000, 0x7F800001], np.uint32))
    assert all((h & 0x7C00) == 0x7C00 and (h & 0x3FF) for h in nan_half), "NaN must stay NaN"


def test_support_headers(tmp_path):
    """Ring buffer, arena, base64 and string helpers behave as the runtime expects."""
    include = tmp_path / "inc"
    runtime._copy_tirx_headers(include)  # the real tvm/support/io.h the runtime uses
    data = bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8))
    exe = _compile_cpp(tmp_path, r'''
#include <tvm/support/io.h>
#include "src/support/arena.h"
#include "src/support/base64.h"
#include "src/support/ring_buffer.h"
#include "src/support/utils.h"
#include <cassert>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
using namespace tvm::support;
struct StringStream : Stream {
  std::string s; size_t pos = 0;
  size_t Read(void* p, size_t n) override { n = std::min(n, s.size() - pos); std::memcpy(p, s.data() + pos, n); pos += n; return n; }
  size_t Write(const void* p, size_t n) override { s.append((const char*)p, n); return n; }
};
int main(int argc, char** argv) {
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  size_t len = std::stoul(argv[1]);
  // base64 of every prefix length 0..len (covers all padding cases)
  for (size_t n = 0; n <= len; n += (n < 16 ? 1 : 997)) {
    StringStream text; Base64OutStream enc(&text); enc.Write(input.data(), n); enc.Finish();
    std::printf("%s\n", text.s.c_str());
    StringStream in; in.s = "  \n" + text.s + "\n"; Base64InStream dec(&in); dec.InitPosition();
    std::string back(n + 8, '\0'); size_t got = dec.Read(&back[0], n + 8);
    if (got != n || back.compare(0, n, input, 0, n) != 0) { std::printf("DECODE MISMATCH %zu\n", n); return 1; }
  }
  // ring buffer: writes and reads of both kinds, across wrap-around and growth, keep byte order
  RingBuffer rb; std::string received; size_t w = 0;
  for (int step = 0; received.size() < input.size(); ++step) {
    size_t chunk = std::min<size_t>(input.size() - w, 700);
    if (step % 2) { rb.Write(input.data() + w, chunk); w += chunk; }
    else w += rb.WriteWithCallback([&](void* p, size_t n) { std::memcpy(p, input.data() + w, n); return n; }, chunk);
    size_t take = std::min<size_t>(rb.bytes_available(), 450);
    if (step % 3) { std::string buf(take, '\0'); rb.Read(&buf[0], take); received += buf; }
    else rb.ReadWithCallback([&](const void* p, size_t n) { received.append((const char*)p, n); return n; }, take);
    if (step > 100000) { std::printf("RING STUCK\n"); return 1; }
  }
  if (received != input || rb.bytes_available() != 0) { std::printf("RING MISMATCH\n"); return 1; }
  // arena: aligned, disjoint, reusable
  Arena arena;
  for (int round = 0; round < 3; ++round) {
    char* a = arena.allocate_<char>(3); double* d = arena.allocate_<double>(5000); int64_t* i = arena.allocate_<int64_t>(2);
    if ((uintptr_t)d % alignof(double) || (uintptr_t)i % alignof(int64_t)) { std::printf("ALIGN\n"); return 1; }
    std::memset(a, 1, 3); for (int k = 0; k < 5000; ++k) d[k] = k; i[0] = i[1] = -1;
    if (d[4999] != 4999 || a[2] != 1) { std::printf("ARENA OVERLAP\n"); return 1; }
    arena.RecycleAll();
  }
  if (!StartsWith("RPCSessionTimeoutError: x", "RPCSessionTimeoutError: ") || StartsWith("ab", "abc") ||
      !EndsWith("model.wasm", ".wasm") || Split("a,,b", ',').size() != 3) { std::printf("UTILS\n"); return 1; }
  std::printf("OK\n");
}''', [HEADERS, HEADERS / "include", include / "include"])
    out = subprocess.run([str(exe), str(len(data))], input=data.decode("latin-1"),
                         capture_output=True, text=True, encoding="latin-1")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and lines[-1] == "OK", out.stdout[-500:]
    lengths = list(range(16)) + list(range(16, len(data) + 1, 997))
    assert lines[:-1] == [base64.b64encode(data[:n]).decode() for n in lengths]


# ---------------------------------------------------------------- emscripten discovery
def test_missing_toolchain_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(system, "LLVM_ROOT", tmp_path / "no-llvm")
    with pytest.raises(ToolchainError) as err:
        system.find_emscripten.__wrapped__(install=False)
    message = str(err.value)
    assert str(tmp_path / "no-llvm" / "clang") in message
    assert "apt-get install -y emscripten clang-22 lld-22 llvm-22" in message


# ---------------------------------------------------------------- runtime cache
def test_runtime_cache_reused_and_corruption_rebuilt(tmp_path, monkeypatch):
    real = runtime.ensure_runtime()  # the machine's cache (built once)
    cache = tmp_path / "cache"
    monkeypatch.setenv("WEBKILN_CACHE_DIR", str(cache))
    entry = runtime.runtime_dir()
    entry.parent.mkdir(parents=True)
    shutil.copytree(real.directory, entry)
    if (real.directory.parents[1] / "downloads").is_dir():  # avoid downloading the headers wheel again
        shutil.copytree(real.directory.parents[1] / "downloads", cache / "downloads")

    again = runtime.ensure_runtime(log=lambda _: None)
    assert again.built is False and again.directory == entry

    victim = entry / "wasm_runtime.o"
    size = victim.stat().st_size
    with victim.open("r+b") as f:
        f.truncate(size // 2)  # an interrupted write
    assert runtime.verify(entry) is None
    messages: list[str] = []
    rebuilt = runtime.ensure_runtime(log=messages.append)
    assert rebuilt.built is True
    assert any("incomplete or corrupted" in m for m in messages)
    # Builds are reproducible: the rebuilt object equals the one the machine cache holds.
    assert victim.read_bytes() == (real.directory / victim.name).read_bytes()
    assert runtime.verify(entry) is not None

    (entry / runtime.MANIFEST).unlink()  # a build that never finished has no manifest
    assert runtime.verify(entry) is None


def test_cache_key_follows_inputs(monkeypatch):
    emcc = system.find_emscripten()
    key = runtime.cache_key(emcc)
    monkeypatch.setattr(runtime, "COMPILE_FLAGS", (*runtime.COMPILE_FLAGS, "-DX"))
    assert runtime.cache_key(emcc) != key


# ---------------------------------------------------------------- link modes
def test_release_link_runs_in_browser(tmp_path, site_root, page):
    """The -O3 link produces a smaller module that still matches NumPy in Chromium."""
    from conftest import LiveServer

    from webkiln.compile import build_module
    from webkiln.models import kernel_check as kc
    from webkiln.package.kernel_check import TOLERANCE, make_spec
    from webkiln.toolchain.link import LinkMode

    root = tmp_path / "site"
    shutil.copytree(site_root, root)
    mod, _ = kc.build_ir()
    out = build_module(mod, "webgpu", root / "kernel-check" / "release.wasm", LinkMode.RELEASE)
    fast = root / "kernel-check" / "kernel-check-webgpu.wasm"
    assert out.stat().st_size < 0.8 * fast.stat().st_size
    assert unexpected_imports(out) == []
    spec, reference = make_spec(kc.KernelCheckConfig(), "prefill", rows=2, seed=11)
    with LiveServer(root) as server:
        page.goto(f"{server.url}/kernel-check.html")
        page.wait_for_function("window.webkiln !== undefined")
        result = page.evaluate("([u, s]) => window.webkiln.runKernelCheck(u, 'webgpu', s)",
                               ["kernel-check/release.wasm", spec])
    err = np.abs(np.asarray(result["outputs"]["probs"]) - np.asarray(reference["probs"])).max()
    assert err <= TOLERANCE
