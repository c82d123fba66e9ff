"""Read a WebAssembly module's imports, to check a build against what tvmjs supplies."""

from __future__ import annotations

from pathlib import Path

# Everything tvmjs' instantiate() (with createPolyfillWASI) provides to a module.
# A build that imports anything else fails at load time in the browser; a test
# checks every build against this list to catch toolchain drift early.
TVMJS_SUPPLIED = frozenset({
    "TVMFFIWasmSafeCall", "TVMFFIWasmFunctionDeleter", "emscripten_notify_memory_growth",
    "clock_time_get", "proc_exit", "fd_write", "fd_read", "fd_close", "fd_seek",
    "environ_get", "environ_sizes_get",
})

_KIND = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def name(self) -> str:
        n = self.uleb()
        s = self.data[self.pos : self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def limits(self) -> None:
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()


def read_imports(path: str | Path) -> list[tuple[str, str, str]]:
    """(module, name, kind) for every import of the wasm file."""
    data = Path(path).read_bytes()
    if data[:4] != b"\0asm":
        raise ValueError(f"{path} is not a WebAssembly module (bad magic)")
    r = _Reader(data, 8)
    imports: list[tuple[str, str, str]] = []
    while r.pos < len(data):
        section, size = r.byte(), r.uleb()
        end = r.pos + size
        if section == 2:
            for _ in range(r.uleb()):
                module, name, kind = r.name(), r.name(), r.byte()
                if kind == 0:
                    r.uleb()  # type index
                elif kind == 1:
                    r.byte()  # element type
                    r.limits()
                elif kind == 2:
                    r.limits()
                elif kind == 3:
                    r.byte(), r.byte()  # value type, mutability
                elif kind == 4:
                    r.byte(), r.uleb()
                imports.append((module, name, _KIND.get(kind, str(kind))))
            return imports
        r.pos = end
    return imports


def unexpected_imports(path: str | Path) -> list[str]:
    """Function imports tvmjs does not supply (empty for a good build)."""
    return sorted(
        f"{module}.{name}"
        for module, name, kind in read_imports(path)
        if kind == "func" and name not in TVMJS_SUPPLIED
    )
