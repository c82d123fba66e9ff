"""The foundation path: Relax module -> TVM -> .wasm (+WGSL) -> tvmjs in real headless Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest

from webkiln.models import kernel_check as kc
from webkiln.package.kernel_check import TOLERANCE, make_spec

BACKENDS = ("webgpu", "wasm-cpu")


def run_in_page(page, live_server, backend: str, spec: dict) -> dict:
    page.goto(f"{live_server.url}/kernel-check.html")
    page.wait_for_function("window.webkiln !== undefined")
    return page.evaluate(
        "([url, backend, spec]) => window.webkiln.runKernelCheck(url, backend, spec)",
        [f"kernel-check/kernel-check-{backend}.wasm", backend, spec],
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry,rows", [("prefill", 5), ("decode", 1)])
def test_kernels_match_numpy(page, live_server, backend, entry, rows):
    spec, reference = make_spec(kc.KernelCheckConfig(), entry, rows=rows, seed=3)
    result = run_in_page(page, live_server, backend, spec)
    assert result["backend"] == backend
    for name in kc.OUTPUTS:
        got = np.asarray(result["outputs"][name])
        want = np.asarray(reference[name])
        assert got.shape == want.shape, name
        err = np.abs(got - want).max()
        assert err <= TOLERANCE, f"{backend} {entry} {name}: max abs error {err:.3g} > {TOLERANCE}"
    # The check must be able to fail: the reference differs from a wrong answer.
    assert np.abs(np.asarray(reference["logits"])).max() > 10 * TOLERANCE
    assert not page.errors


def test_webgpu_and_cpu_in_one_page(page, live_server):
    """Both backends load side by side in the same page and agree."""
    spec, _ = make_spec(kc.KernelCheckConfig(), "prefill", rows=3, seed=7)
    page.goto(f"{live_server.url}/kernel-check.html")
    page.wait_for_function("window.webkiln !== undefined")
    results = page.evaluate(
        """async (spec) => Promise.all(['webgpu', 'wasm-cpu'].map(b =>
             window.webkiln.runKernelCheck(`kernel-check/kernel-check-${b}.wasm`, b, spec)))""",
        spec,
    )
    gpu, cpu = (np.asarray(r["outputs"]["probs"]) for r in results)
    assert np.abs(gpu - cpu).max() <= TOLERANCE


def test_webgpu_device_gets_adapter_limits(page, live_server):
    page.goto(f"{live_server.url}/kernel-check.html")
    page.wait_for_function("window.webkiln !== undefined")
    info = page.evaluate("window.webkiln.describeGPU()")
    # SwiftShader offers 1 GiB bindings; the device must have asked for them, not kept the 128 MiB default.
    assert info["limits"]["maxStorageBufferBindingSize"] > 128 * 1024 * 1024
    assert info["limits"]["maxComputeInvocationsPerWorkgroup"] >= 256
    assert ("shader-f16" in info["features"]) == ("shader-f16" in info["adapterFeatures"])


def test_kernel_check_page_reports_pass(page, live_server, site_root):
    page.goto(f"{live_server.url}/kernel-check.html")
    page.wait_for_function("document.getElementById('status').textContent !== 'Running…'", timeout=120_000)
    status = page.inner_text("#status")
    assert status == "All kernels match the NumPy reference.", status
    rows = page.locator("#results tr").count()
    check = json.loads((site_root / "kernel-check" / "check.json").read_text())
    assert rows == len(check["modules"]) * len(kc.OUTPUTS)


def test_webgpu_module_carries_wgsl(site_root):
    gpu = (site_root / "kernel-check" / "kernel-check-webgpu.wasm").read_bytes()
    cpu = (site_root / "kernel-check" / "kernel-check-wasm-cpu.wasm").read_bytes()
    assert b"@compute" in gpu and b"@workgroup_size" in gpu
    assert b"@compute" not in cpu
