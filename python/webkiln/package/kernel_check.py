"""Builds the kernel check: the operator module for every browser target, its
inputs and its NumPy reference outputs, as files the static page loads."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..compile import build_module
from ..models import kernel_check as kc
from ..toolchain.link import LinkMode

BROWSER_TARGETS = ("webgpu", "wasm-cpu")
# f32 kernels against a float64 reference: well above rounding (~1e-6), far below any bug.
TOLERANCE = 1e-4


def make_spec(config: kc.KernelCheckConfig, entry: str, rows: int, seed: int = 0):
    """(spec for the page, reference outputs) for one entry point."""
    params = kc.make_params(config, seed)
    x = np.random.default_rng(seed + 1).standard_normal((rows, config.hidden)).astype(np.float32)
    _, names = kc.build_ir(config)

    def tensor(a: np.ndarray) -> dict:
        return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.ravel().tolist()}

    spec = {
        "entry": entry,
        "inputs": {"x": tensor(x), **{n: tensor(params[n]) for n in names}},
        "params": names,
        "outputs": list(kc.OUTPUTS),
    }
    reference = {k: v.astype(np.float64).ravel().tolist() for k, v in kc.reference(config, params, x).items()}
    return spec, reference


def build_kernel_check(out_dir: str | Path, mode: LinkMode = LinkMode.FAST, log=print) -> Path:
    """Writes `<name>.wasm` per browser target and `check.json`; replaces out_dir atomically."""
    out_dir = Path(out_dir)
    config = kc.KernelCheckConfig()
    mod, _ = kc.build_ir(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".kernel-check-", dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "out"
        modules = {}
        for target in BROWSER_TARGETS:
            start = time.monotonic()
            name = f"kernel-check-{target}.wasm"
            build_module(mod, target, staging / name, mode)
            modules[target] = name
            log(f"[webkiln] built {name} ({mode.value} link) in {time.monotonic() - start:.1f} s")
        spec, reference = make_spec(config, "prefill", rows=4)
        (staging / "check.json").write_text(json.dumps(
            {"spec": spec, "reference": reference, "tolerance": TOLERANCE, "modules": modules}
        ))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    return out_dir
