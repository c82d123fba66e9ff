"""The site a user deploys holds no test code: site/ as the product build leaves it (`node
build.mjs --release`, what scripts/setup.sh runs before scripts/serve.sh serves site/) has
no test page, no test bundle and no bundle made from tests/. Test pages and bundles live in
tests/site/ and tests/web/ and reach the browser only through the test site root
(conftest.py's test_site, `node build.mjs --test-site`)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, LiveServer, node_build

SITE = REPO / "site"
# What the user's own builds add to site/ (model folders), which is not the product's to judge.
MODEL_FOLDERS = ("models",)
# The test pages and bundles (tests/site/*.html, the entry points of tests/web/).
TEST_PAGES = sorted(p.name for p in (REPO / "tests" / "site").glob("*.html"))
TEST_BUNDLES = ["chat.js", "test-entry.js", "test-image.js", "test-image-pipeline.js", "test-storage.js"]


def site_files(root: Path) -> list[str]:
    """Every file under `root` (relative, POSIX), model folders left out."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).parts[0] not in MODEL_FOLDERS)


def find_test_code(root: Path) -> list[str]:
    """The files of `root` that are test code, each with the reason."""
    found = []
    for name in site_files(root):
        base = name.rsplit("/", 1)[-1]
        if base.startswith("test") or base in ("chat.html", "chat.js", "chat.js.map") or base.endswith(".ts"):
            found.append(f"{name} (a test page, test bundle or source file)")
        elif base.endswith(".map"):
            sources = json.loads((root / name).read_text()).get("sources", [])
            from_tests = [s for s in sources if re.search(r"(^|/)tests/", s)]
            if from_tests:
                found.append(f"{name} (bundled from {from_tests[0]})")
        elif base.endswith(".html"):
            for script in re.findall(r'<script[^>]*\bsrc="([^"]+)"', (root / name).read_text()):
                if script.rsplit("/", 1)[-1] in TEST_BUNDLES or not (root / script).is_file():
                    found.append(f"{name} (loads {script}, a test bundle or a missing file)")
    return found


@pytest.fixture(scope="module")
def release_site() -> Iterator[Path]:
    """site/ after the release build; afterwards the plain build again, as web_bundle leaves it."""
    node_build("--release")
    yield SITE
    node_build()


def test_deployed_site_holds_no_test_code(release_site):
    files = site_files(release_site)
    # The listing is real: the app, its worker, the service worker and the diagnostic page are there.
    assert {"index.html", "assets/app.js", "assets/engine-worker.js", "sw.js", "kernel-check.html"} <= set(files)
    assert TEST_PAGES == ["chat.html", "test-image-pipeline.html", "test-image.html", "test-storage.html",
                          "test-threads.html", "test.html"]
    assert find_test_code(release_site) == []


def test_served_site_has_no_test_pages(release_site):
    """What `webkiln serve` (scripts/serve.sh) serves from site/: the app, and no test page or bundle."""
    with LiveServer(release_site) as server:
        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(f"{server.url}/{path}") as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        assert status("index.html") == 200
        assert status("assets/app.js") == 200
        for path in TEST_PAGES + [f"assets/{b}" for b in TEST_BUNDLES]:
            assert status(path) == 404, path


def test_the_check_finds_test_code_in_the_test_site(test_site):
    """The same check on the test site root (site/ plus the test pages and bundles) finds each of them."""
    found = find_test_code(test_site)
    for page in TEST_PAGES:
        assert f"{page} (a test page, test bundle or source file)" in found
    for bundle in TEST_BUNDLES:
        assert f"assets/{bundle} (a test page, test bundle or source file)" in found
    assert not [f for f in found if f.startswith(("index.html", "assets/app.js", "sw.js", "kernel-check"))]
