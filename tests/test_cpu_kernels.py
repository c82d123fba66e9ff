"""The wasm-cpu backend's hand-written matmul kernels (python/webkiln/compile/cpu_kernels/)
against NumPy on the stored weight formats, compiled by emscripten with the flags a model
build uses and run in Node (V8's WebAssembly SIMD, as in Chromium).

Each format (q4_affine = GGUF Q4_1, q4_sym = Q4_0, q8_sym = Q8_0, q5_sym = Q5_0, q5_affine = Q5_1,
and the k-quants q4_k, q5_k, q6_k) is checked on the decode path (one token: the GEMV that dots
the raw nibbles, q5's completed by their fifth bits, or for the k-quants a dequantized row) and the prefill path (several
tokens: rows dequantized once, tiles of 4 tokens), with token counts that leave a ragged last tile
and an odd row count that leaves a ragged last row pair. Tolerance: the kernels accumulate in f32
in their own order, so |kernel - float64 reference| <= 1e-5 * sum_k |x_k| * (|q_k * d| + |offset|)
(a few hundred ulps of the largest partial sums; an indexing or decoding bug is off by O(1)).
The prefill path's dequantization must also be exact: with one-hot tokens the output is the
dequantized weight matrix itself, compared bit for bit with WeightFormat.dequantize.

The kernels split their rows over TVMBackendParallelLaunch's tasks (threads in a threaded
library). Here a test launch (LAUNCH below) runs a chosen number of tasks one after the other,
last first: every task count must give the bits of one task (the threaded library's promise).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from webkiln.compile import cpu_matmul
from webkiln.quant.formats import FORMATS, GROUP
from webkiln.quant.kquant_formats import SUPER, KQuantFormat
from webkiln.toolchain.system import find_emscripten

# Loads the kernels' wasm, copies the inputs in, calls one entry, writes y back.
RUNNER = r"""
import fs from "node:fs";
const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { instance } = await WebAssembly.instantiate(fs.readFileSync(job.wasm), {
  env: { emscripten_notify_memory_growth: () => {} },
  wasi_snapshot_preview1: { proc_exit: () => {}, fd_write: () => 0, fd_close: () => 0, fd_seek: () => 0 },
});
const e = instance.exports;
e._initialize?.();
e.webkiln_test_tasks(job.tasks);
const bytes = (p) => new Uint8Array(fs.readFileSync(p));
const place = (data) => {
  const at = e.malloc(data.length + 16);
  new Uint8Array(e.memory.buffer, at, data.length).set(data);
  return at;
};
const args = job.inputs.map((p) => place(bytes(p)));
const y = e.malloc(job.n * job.out_f * 4);
const work = e.malloc(job.work * 4);
const rc = e[job.symbol](...args, y, work, job.n, job.out_f, job.in_f);
if (rc !== 0) throw new Error(`${job.symbol} returned ${rc}`);
fs.writeFileSync(job.output, new Uint8Array(e.memory.buffer, y, job.n * job.out_f * 4));
"""


# TVM's runtime is not linked here: this launch stands in for it. A runtime decides how many
# tasks run (TVM's serial one runs 1 whatever the kernel asks, webkiln's pool what it asks): this
# one runs `tasks`, in reverse order on one thread.
LAUNCH = r"""
typedef struct { void* sync_handle; int num_task; } Env;
static int tasks = 1;
__attribute__((export_name("webkiln_test_tasks"))) void webkiln_test_tasks(int n) { tasks = n; }
int TVMBackendParallelLaunch(int (*lambda)(int, Env*, void*), void* data, int num_task) {
  (void)num_task;
  Env env = {0, tasks};
  int rc = 0;
  for (int i = env.num_task - 1; i >= 0; i--) if (lambda(i, &env, data) != 0) rc = -1;
  return rc;
}
"""


@pytest.fixture(scope="module")
def kernels_wasm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kernels")
    wasm = out / "kernels.wasm"
    launch = out / "launch.c"
    launch.write_text(LAUNCH)
    exports = ",".join(["_malloc", *(f"_{symbol}" for symbol, _ in cpu_matmul.KERNELS.values())])
    find_emscripten().run(
        [*cpu_matmul.C_FLAGS, *map(str, cpu_matmul.kernel_sources()), str(launch), "--no-entry", "-s", "STANDALONE_WASM=1",
         "-s", "ALLOW_MEMORY_GROWTH=1", "-s", f"EXPORTED_FUNCTIONS={exports}", "-Wl,--no-stack-first",
         "-o", str(wasm)],
        "compiling the wasm-cpu kernels for the test")
    return wasm


def _in_f(fmt_name: str, in_f: int) -> int:
    """`in_f`, or for a k-quant the next multiple of its 256-element super-block."""
    return -(-in_f // SUPER) * SUPER if isinstance(FORMATS[fmt_name], KQuantFormat) else in_f


def _stored(fmt_name: str, out_f: int, in_f: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random stored arrays of the format (any bit pattern is a valid weight), GGUF-like f16 scales
    (k-quants: small super-block scales, their integer group scales random bytes)."""
    fmt = FORMATS[fmt_name]
    arrays = {}
    for name, (shape, dtype) in fmt.param_specs(out_f, in_f, "float32").items():
        if dtype == "uint32":
            arrays[name] = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32)
        else:
            spread = {"scale": 0.02, "minimum": 0.1}[name] / (64 if isinstance(fmt, KQuantFormat) else 1)
            arrays[name] = (rng.standard_normal(shape) * spread).astype(np.float16).astype(np.float32)
    return arrays


def _run(kernels_wasm: Path, tmp_path: Path, fmt_name: str, arrays: dict[str, np.ndarray], x: np.ndarray,
         tasks: int = 1) -> np.ndarray:
    symbol, names = cpu_matmul.KERNELS[fmt_name]
    n, in_f = x.shape
    out_f = arrays["qweight"].shape[0]
    inputs = []
    for name, array in [("x", x), *((name, arrays[name]) for name in names)]:
        path = tmp_path / f"{name}.bin"
        path.write_bytes(np.ascontiguousarray(array).tobytes())
        inputs.append(str(path))
    job = {"wasm": str(kernels_wasm), "symbol": symbol, "inputs": inputs, "n": n, "out_f": out_f, "in_f": in_f,
           "work": cpu_matmul.workspace_floats(in_f), "output": str(tmp_path / "y.bin"), "tasks": tasks}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "run.mjs").write_text(RUNNER)
    run = subprocess.run(["node", str(tmp_path / "run.mjs"), str(tmp_path / "job.json")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return np.frombuffer((tmp_path / "y.bin").read_bytes(), dtype=np.float32).reshape(n, out_f)


def _bound(fmt_name: str, arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """sum_k |x_k| * (|q_k d| + |offset|) for each output: the scale of the f32 rounding."""
    fmt = FORMATS[fmt_name]
    if isinstance(fmt, KQuantFormat):  # dequantized, then a plain dot
        return np.abs(x.astype(np.float64)) @ np.abs(fmt.dequantize(arrays).astype(np.float64)).T
    unit = dict(arrays)
    if fmt.has_min:
        unit["minimum"] = np.zeros_like(arrays["minimum"])
    part = np.abs(fmt.dequantize(unit).astype(np.float64))
    if fmt.has_min:
        part += np.repeat(np.abs(arrays["minimum"]), GROUP, axis=1)
    elif fmt.bits in (4, 5):  # the GEMV's offset: -8 (q4_sym) or -16 (q5_sym) times the scale
        part += np.repeat((1 << (fmt.bits - 1)) * np.abs(arrays["scale"]), GROUP, axis=1)
    return np.abs(x.astype(np.float64)) @ part.T


@pytest.mark.parametrize("fmt_name", sorted(cpu_matmul.KERNELS))
@pytest.mark.parametrize("tokens", [1, 2, 5, 8, 11], ids=lambda n: f"{n}tok")
def test_kernel_equals_numpy(kernels_wasm, tmp_path, fmt_name, tokens):
    rng = np.random.default_rng(7 + tokens)
    out_f, in_f = 37, _in_f(fmt_name, 3 * GROUP * 2)  # odd rows: a ragged last row pair; 6 groups
    arrays = _stored(fmt_name, out_f, in_f, rng)
    x = rng.standard_normal((tokens, in_f)).astype(np.float32)
    got = _run(kernels_wasm, tmp_path, fmt_name, arrays, x)
    want = x.astype(np.float64) @ FORMATS[fmt_name].dequantize(arrays).astype(np.float64).T
    err = np.abs(got - want)
    bound = 1e-5 * _bound(fmt_name, arrays, x)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), (f"{fmt_name}, {tokens} tokens: token {worst[0]} row {worst[1]}: "
                                  f"{got[worst]} vs {want[worst]} (bound {bound[worst]})")


@pytest.mark.parametrize("fmt_name", sorted(cpu_matmul.KERNELS))
def test_prefill_dequantization_is_exact(kernels_wasm, tmp_path, fmt_name):
    rng = np.random.default_rng(3)
    out_f, in_f = 9, _in_f(fmt_name, 2 * GROUP)
    arrays = _stored(fmt_name, out_f, in_f, rng)
    got = _run(kernels_wasm, tmp_path, fmt_name, arrays, np.eye(in_f, dtype=np.float32))
    np.testing.assert_array_equal(got.T, FORMATS[fmt_name].dequantize(arrays))


@pytest.mark.parametrize("fmt_name", sorted(cpu_matmul.KERNELS))
@pytest.mark.parametrize("tokens", [1, 5], ids=lambda n: f"{n}tok")
def test_any_task_count_gives_the_bits_of_one(kernels_wasm, tmp_path, fmt_name, tokens):
    rng = np.random.default_rng(11 + tokens)
    out_f, in_f = 75, _in_f(fmt_name, 4 * GROUP)  # rows that split unevenly, with a ragged last chunk
    arrays = _stored(fmt_name, out_f, in_f, rng)
    x = rng.standard_normal((tokens, in_f)).astype(np.float32)
    one = _run(kernels_wasm, tmp_path, fmt_name, arrays, x)
    # 2 and 3 threads; the most a page starts; more tasks than workspace slots (the rows go to
    # the first MAX_TASKS, the rest do nothing).
    for tasks in (2, 3, cpu_matmul.MAX_TASKS, cpu_matmul.MAX_TASKS + 3):
        got = _run(kernels_wasm, tmp_path, fmt_name, arrays, x, tasks)
        np.testing.assert_array_equal(got, one, err_msg=f"{fmt_name}, {tokens} tokens, {tasks} tasks")


def test_model_calls_the_kernels_on_wasm_cpu_only():
    """The wasm32 target gets the kernels, the reference targets keep the tensor expression."""
    from webkiln.compile.targets import get_target

    assert cpu_matmul.uses_kernels(get_target("wasm-cpu").tvm_target())
    assert not cpu_matmul.uses_kernels(get_target("native-cpu").tvm_target())
    assert not cpu_matmul.uses_kernels(get_target("webgpu").tvm_target())
