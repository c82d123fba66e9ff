"""Versions that must match each other, in one place.

The compiler (the `apache-tvm` wheel) and the JavaScript runtime that loads its
output (`@mlc-ai/web-runtime`, a.k.a. tvmjs) speak one ABI; the runtime
libraries we build come from the same wheel's sources. `pyproject.toml` and
`web/package.json` repeat these strings because their formats require it;
tests/test_toolchain.py fails if they drift apart.
"""

TVM_VERSION = "0.27.0.post1"
WEB_RUNTIME_VERSION = "0.27.0-dev0"
# Ships three runtime headers the apache-tvm wheel lacks (io.h, serializer.h, bytes_io.h).
TVM_TIRX_VERSION = "0.1.0a4"
# Must equal the LLVM major bundled in the TVM wheel: the runtime bitcode and
# TVM's own objects are read by this LLVM's wasm-ld.
LLVM_MAJOR = 22
APT_PACKAGES = ("emscripten", f"clang-{LLVM_MAJOR}", f"lld-{LLVM_MAJOR}", f"llvm-{LLVM_MAJOR}")
