"""What `webkiln bench` (chat) and `webkiln bench-image` (images) share: the machine facts of a
run, the benchmark's site (served by the dev server), a headless Chromium page on it, and the
text table of the results."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from .errors import WebkilnError
from .server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--enable-unsafe-webgpu", "--disable-quic"]
TIMEOUT_MS = 60 * 60 * 1000  # SwiftShader is slow: a 128-token prefill or one image takes minutes

# The adapter the page got: what the browser numbers were measured on.
ADAPTER_JS = """async () => {
  if (!navigator.gpu) return {available: false};
  const a = await navigator.gpu.requestAdapter();
  if (!a) return {available: true, adapter: null};
  const i = a.info || {};
  return {available: true, vendor: i.vendor, architecture: i.architecture, device: i.device,
          description: i.description, isFallbackAdapter: a.isFallbackAdapter ?? i.isFallbackAdapter ?? null,
          features: Array.from(a.features).sort(),
          maxBufferSize: a.limits.maxBufferSize, maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize};
}"""


class BenchError(WebkilnError, ValueError):
    """A benchmark cannot run as asked (an option out of range, a bundle not built yet)."""


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- machine facts ---------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _chromium_version(executable: str) -> str:
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.strip().splitlines()[0] if out.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _git_state() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (the build reads the work tree)."""
    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        return run.stdout if run.returncode == 0 else ""  # not stripped: porcelain lines start with a space

    changed = [line[3:] for line in git("status", "--porcelain", "--", "python", "web/src", "web/package-lock.json",
                                        "tests/web").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "uncommitted_build_inputs": changed}


def machine_facts(executable: str) -> dict[str, Any]:
    return {
        "git": _git_state(),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tvm": importlib.metadata.version("apache-tvm"),
        "chromium": _chromium_version(executable),
        # Other work on the machine skews every number: record how busy it was.
        "load_average_at_start": os.getloadavg(),
    }


# --- the site and its server ------------------------------------------------------------


def assemble_site(root: Path, bundles: Sequence[str] = ("app.js",)) -> Path:
    """The benchmark's site at `root`: site/ as last built plus the test pages and bundles the
    benchmarks drive (chat.html's direct model handle), as `node build.mjs --test-site` makes
    them; no models (the benchmark builds its own)."""
    for bundle in bundles:
        if not (REPO / "site" / "assets" / bundle).is_file():
            raise BenchError(f"{REPO / 'site' / 'assets' / bundle} is missing: run `cd web && node build.mjs` first")
    built = subprocess.run(["node", "build.mjs", "--test-site", str(root)], cwd=REPO / "web",
                           capture_output=True, text=True)
    if built.returncode != 0:  # esbuild's report only matters when the build failed
        raise RuntimeError(f"node build.mjs --test-site failed:\n{built.stdout}{built.stderr}")
    return root


@contextmanager
def serve(root: Path, cross_origin_isolated: bool = False) -> Iterator[str]:
    """The dev server on `root` on a free loopback port (as the tests' LiveServer); yields its URL.
    `cross_origin_isolated`: COOP/COEP headers (`webkiln serve --isolate`), which pages need for
    SharedArrayBuffer and so for WebAssembly threads."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(root, cross_origin_isolated), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("dev server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class ChromiumProfile:
    """Headless Chromium with a fresh persistent profile (its Cache API and origin storage
    survive new pages, so a second page loads warm); every page's uncaught errors are collected
    in `errors`. The site is served twice: plainly, and cross-origin isolated (another port, so
    another origin with storage of its own)."""

    def __init__(self, context: Any, url: str, isolated_url: str | None = None) -> None:
        self._context, self._url, self._isolated_url = context, url, isolated_url
        self.errors: list[str] = []

    def page(self, path: str = "chat.html", isolated: bool = False, scripts: Sequence[str] = (),
             ready: str = "window.webkilnChat !== undefined") -> Page:
        """A new page on `path` (on the isolated origin if `isolated`), with the ES modules
        `scripts` (site paths) added, once `ready` holds (by default: the test bundle has set
        `window.webkilnChat`)."""
        if isolated and self._isolated_url is None:
            raise RuntimeError("this profile serves no cross-origin isolated origin: pass isolated=True to chromium()")
        page = self._context.new_page()
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.goto(f"{self._isolated_url if isolated else self._url}/{path}")
        for script in scripts:
            page.add_script_tag(url=script, type="module")
        page.wait_for_function(ready)
        return page

    def check(self) -> None:
        if self.errors:
            raise RuntimeError(f"page errors: {self.errors}")


@contextmanager
def chromium(site: Path, executable: str, prefix: str, isolated: bool = False) -> Iterator[ChromiumProfile]:
    """`site` served (and, with `isolated`, also served cross-origin isolated), and a Chromium
    profile on it (removed afterwards)."""
    # Lazy: Playwright is an optional dependency (the test extra), and `bench-image --no-browser`
    # runs on machines without it.
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with ExitStack() as stack:
            url = stack.enter_context(serve(site))
            isolated_url = stack.enter_context(serve(site, cross_origin_isolated=True)) if isolated else None
            p = stack.enter_context(sync_playwright())
            context = p.chromium.launch_persistent_context(
                str(profile), executable_path=executable, args=CHROMIUM_ARGS, headless=True)
            context.set_default_timeout(TIMEOUT_MS)
            try:
                yield ChromiumProfile(context, url, isolated_url)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# --- report ----------------------------------------------------------------------------


def fmt(value: float | bool | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"


def format_table(rows: Sequence[tuple[str, str, str]]) -> str:
    """(label, value, comment) rows as aligned text: labels left, values right."""
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {v:>{vwidth}}  {c}".rstrip() for a, v, c in rows)
