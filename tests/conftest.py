"""Shared fixtures: a built site with the test pages in a temporary folder, the real dev
server on a free port, and Debian's Chromium with WebGPU (SwiftShader here) through Playwright."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import uvicorn

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


class LiveServer:
    def __init__(self, root: Path, cross_origin_isolated: bool = False, cors_origins: Iterable[str] = ()) -> None:
        from webkiln.server import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(root, cross_origin_isolated, cors_origins), log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("dev server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def node_build(*args: str) -> None:
    """Runs web/build.mjs with `args`; a failure shows esbuild's messages."""
    run = subprocess.run(["node", "build.mjs", *args], cwd=REPO / "web", capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"node build.mjs {' '.join(args)} failed:\n{run.stdout}{run.stderr}")


@pytest.fixture(scope="session")
def web_bundle() -> Path:
    """Bundles web/ into site/assets (esbuild: well under a second): the product only."""
    node_build()
    return REPO / "site" / "assets"


@pytest.fixture(scope="session")
def test_site(tmp_path_factory, web_bundle) -> Path:
    """A test site root: site/ as just built (without models/ and kernel-check/), the test
    pages of tests/site/ and, in assets/, the test bundles of tests/web/ (`node build.mjs
    --test-site`). Test code lives only here, never in the site/ a user deploys. Tests copy
    it before adding models: `shutil.copytree(test_site, root)`."""
    root = tmp_path_factory.mktemp("test-site") / "site"
    node_build("--test-site", str(root))
    return root


@pytest.fixture(scope="session")
def site_root(tmp_path_factory, test_site) -> Path:
    """A copy of the test site root with freshly built kernel-check modules (fast link)."""
    from webkiln.package.kernel_check import build_kernel_check

    root = tmp_path_factory.mktemp("site")
    shutil.copytree(test_site, root, dirs_exist_ok=True)
    build_kernel_check(root / "kernel-check")
    return root


@pytest.fixture(scope="session")
def live_server(site_root) -> Iterator[LiveServer]:
    with LiveServer(site_root) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--enable-unsafe-webgpu", "--disable-quic"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()
