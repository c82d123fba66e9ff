"""Threaded wasm-cpu (toolchain/threads.py, web/src/compiled/threads.ts) in headless Chromium.

A TVM-compiled module whose TIR has a `parallel` loop (a 4-bit dequantizing GEMV, the shape of
a decode step's matmul) is built twice: the single-threaded library the product links today
and the threaded one (shared memory, webkiln's thread pool). On a cross-origin isolated page
the threaded library runs on 2 threads, helpers really run tasks, and every output is
bit-identical to the single-threaded library's; without isolation the same library runs on
one thread and says why. Speed is not asserted (CI machines share their cores); the numbers
are in the threads notes.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, LiveServer

ROWS, COLS = 1024, 512  # small: the test is about correctness and the path taken
ROWS_PER_TASK_CHUNK = 4
GROUP = 32


def _qgemv():
    """y[i] = sum_k x[k] * (nibble(w, i, k) - 8) * s[i, k // 32], rows in a `parallel` loop."""
    import tvm
    from tvm import s_tir, te

    x = te.placeholder((COLS,), "float32", name="x")
    w = te.placeholder((ROWS, COLS // 2), "uint8", name="w")
    s = te.placeholder((ROWS, COLS // GROUP), "float32", name="s")
    k = te.reduce_axis((0, COLS), name="k")

    def weight(i, kk):
        nibble = (w[i, kk // 2] >> ((kk % 2) * 4).astype("uint8")) & tvm.tirx.const(15, "uint8")
        return (nibble.astype("float32") - 8.0) * s[i, kk // GROUP]

    y = te.compute((ROWS,), lambda i: te.sum(x[k] * weight(i, k), axis=k), name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, w, s, y]).with_attr("global_symbol", "qgemv"))
    rows, _ = sch.get_loops(sch.get_sblock("y"))
    outer, _ = sch.split(rows, [None, ROWS_PER_TASK_CHUNK])
    sch.parallel(outer)
    return sch.mod["main"]


def _relax_module():
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    args = [
        relax.Var("x", relax.TensorType((COLS,), "float32")),
        relax.Var("w", relax.TensorType((ROWS, COLS // 2), "uint8")),
        relax.Var("s", relax.TensorType((ROWS, COLS // GROUP), "float32")),
    ]
    with bb.function("main", args):
        gv = bb.add_func(_qgemv(), "qgemv")
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(gv, args, relax.TensorType((ROWS,), "float32")))
        bb.emit_func_output(out)
    assert isinstance(bb.get(), tvm.IRModule)
    return bb.get()


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal(COLS).astype(np.float32),
        "w": rng.integers(0, 256, (ROWS, COLS // 2), dtype=np.uint8),
        "s": (rng.random((ROWS, COLS // GROUP)) * 0.1).astype(np.float32),
    }


def _reference(x: np.ndarray, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    q = np.stack([(w & 15), (w >> 4)], axis=-1).reshape(ROWS, COLS).astype(np.float64) - 8
    return (q * np.repeat(s.astype(np.float64), GROUP, axis=1)) @ x.astype(np.float64)


WASM32 = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": ["+simd128"]}


@pytest.fixture(scope="module")
def libraries(tmp_path_factory) -> dict[str, Path]:
    """One TVM compile for the wasm-cpu target, linked twice: as today and threaded."""
    import tvm

    from webkiln.toolchain.link import fcompile
    from webkiln.toolchain.threads import fcompile_threaded

    out = tmp_path_factory.mktemp("threads")
    executable = tvm.compile(_relax_module(), target=tvm.target.Target(WASM32))
    executable.export_library(str(out / "single.wasm"), fcompile=fcompile())
    executable.export_library(str(out / "threaded.wasm"), fcompile=fcompile_threaded())
    return {"single": out / "single.wasm", "threaded": out / "threaded.wasm"}


@pytest.fixture(scope="module")
def threads_site(tmp_path_factory, libraries) -> Path:
    """The page, its Worker bundle (esbuild, as build.mjs bundles test pages), both libraries
    and the inputs."""
    root = tmp_path_factory.mktemp("threads-site")
    (root / "assets").mkdir()
    shutil.copy(REPO / "tests/site/test-threads.html", root / "test-threads.html")
    web = REPO / "web"
    run = subprocess.run(
        [str(web / "node_modules/.bin/esbuild"), str(REPO / "tests/web/threads_page.ts"), "--bundle", "--format=esm",
         "--platform=browser", "--target=es2022", f"--outfile={root / 'assets/threads-page.js'}", "--log-level=warning",
         *[f"--external:{m}" for m in ("fs", "path", "perf_hooks", "ws", "url", "module")]],
        cwd=web, capture_output=True, text=True, env={"NODE_PATH": str(web / "node_modules"), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for name, path in libraries.items():
        shutil.copy(path, root / f"{name}.wasm")
    for name, array in _inputs().items():
        array.tofile(root / f"{name}.bin")
    return root


REQUEST = {
    "single": "single.wasm",
    "threaded": "threaded.wasm",
    "threads": [1, 2],
    "repeats": 20,
    "inputs": [
        {"name": "x", "url": "x.bin", "dtype": "float32", "shape": [COLS]},
        {"name": "w", "url": "w.bin", "dtype": "uint8", "shape": [ROWS, COLS // 2]},
        {"name": "s", "url": "s.bin", "dtype": "float32", "shape": [ROWS, COLS // GROUP]},
    ],
}


def _run(browser, site: Path, isolated: bool) -> dict:
    with LiveServer(site, cross_origin_isolated=isolated) as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{server.url}/test-threads.html")
            result = page.evaluate("(request) => window.runThreads(request)", REQUEST)
        finally:
            context.close()
    assert not result.get("error"), result["error"]
    return result


def _outputs(result: dict) -> dict[str, np.ndarray]:
    return {k: np.frombuffer(base64.b64decode(v), np.float32) for k, v in result["outputs"].items()}


def test_threaded_library_imports_only_tvmjs_functions_and_a_shared_memory(libraries) -> None:
    from webkiln.toolchain.threads import threaded_import_problems
    from webkiln.toolchain.wasm_imports import read_imports, unexpected_imports

    assert threaded_import_problems(libraries["threaded"]) == []
    assert unexpected_imports(libraries["threaded"]) == []
    # The single-threaded library keeps its own memory: its loading path is unchanged.
    assert not [i for i in read_imports(libraries["single"]) if i[2] == "memory"]
    assert threaded_import_problems(libraries["single"])  # not a threaded library: said so


def test_two_threads_give_the_bits_of_one_on_an_isolated_page(browser, threads_site) -> None:
    result = _run(browser, threads_site, isolated=True)
    assert result["crossOriginIsolated"] is True and result["unavailable"] is None
    assert result["started"] == 2, "the helper thread did not start"
    # The helper ran tasks of the parallel loop, so the multi-threaded path ran, not the serial
    # fallback. How many is the OS scheduler's call: the pool gives each task to whichever
    # thread is free (thread_pool.c), and a launch this small (~50 us) is often over before a
    # helper that lost its core gets it back (a CI run once saw 2 helper tasks in 4 launches on
    # a loaded 2-core machine). The share a helper takes of real work is checked in
    # test_chat_browser.py::test_two_cpu_threads_write_the_reply_of_one_on_an_isolated_page.
    assert result["helperTasks"] >= 1
    outputs = _outputs(result)
    single = outputs["single"]
    for name in ("threaded-1", "threaded-2"):
        assert outputs[name].view(np.uint32).tolist() == single.view(np.uint32).tolist(), f"{name} differs from single"
    x, w, s = _inputs().values()
    np.testing.assert_allclose(single, _reference(x, w, s), rtol=1e-4, atol=1e-4)


def test_without_isolation_the_threaded_library_runs_on_one_thread_and_says_why(browser, threads_site) -> None:
    result = _run(browser, threads_site, isolated=False)
    assert result["crossOriginIsolated"] is False
    assert "Cross-Origin-Opener-Policy" in result["unavailable"] and "--isolate" in result["unavailable"]
    assert result["started"] == 1 and result["helperTasks"] == 0
    outputs = _outputs(result)
    assert set(outputs) == {"single", "threaded-1"}
    assert outputs["threaded-1"].view(np.uint32).tolist() == outputs["single"].view(np.uint32).tolist()


def test_threaded_link_of_thread_locals_compiled_without_atomics_names_the_fix(tmp_path) -> None:
    from webkiln.toolchain.errors import ToolchainError
    from webkiln.toolchain.system import find_emscripten
    from webkiln.toolchain.threads import link_threaded_wasm

    def compile_c(src: Path, obj: Path, flags: list[str]) -> Path:
        find_emscripten().run([*flags, "-c", str(src), "-o", str(obj)], f"compiling {src.name}")
        return obj

    source = tmp_path / "counter.c"
    source.write_text("_Thread_local int counter;\nint webkiln_test_bump(void) { return ++counter; }\n")
    obj = compile_c(source, tmp_path / "counter.o", ["-O2"])
    with pytest.raises(ToolchainError) as error:
        link_threaded_wasm(tmp_path / "bad.wasm", [obj])
    message = str(error.value)
    assert "disallowed by" in message and "-pthread" in message
    # The fix works: the same source built with -pthread links.
    fixed = compile_c(source, tmp_path / "counter_mt.o", ["-O2", "-pthread"])
    assert link_threaded_wasm(tmp_path / "good.wasm", [fixed]).is_file()


def test_threaded_link_flags_agree_with_the_single_threaded_link() -> None:
    """threads.py repeats link.py's flags (private there): a change to one must reach the other."""
    from webkiln.toolchain import link, threads

    assert list(threads.BASE_LINK_FLAGS) == link._LINK_FLAGS
    assert {m.value: list(f) for m, f in link._MODE_FLAGS.items()} == {k: list(v) for k, v in threads.MODE_FLAGS.items()}


def test_threaded_library_memory_limits_are_the_single_ones(libraries) -> None:
    from webkiln.toolchain.threads import imported_memory

    # 64 MiB to start (link.py's INITIAL_MEMORY), 4 GiB at most: threads.ts creates exactly this.
    assert imported_memory(libraries["threaded"]) == {"initial": 1024, "maximum": 65536, "shared": True}
    assert imported_memory(libraries["single"]) is None
