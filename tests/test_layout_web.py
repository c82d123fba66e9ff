"""The layers of web/src: each folder may import only the layers below it (and any npm
package), so the engine sits on top of storage, llm and image rather than beside them.

    base/                 nothing in the project (errors, tvmjs loading, manifest, PRNG, tokenizer)
    storage/              base
    compiled/             base, storage (the one loader of a compiled model)
    llm/, image/          base, storage, compiled (never each other)
    engine/               base, storage, compiled, llm, image
    ui/                   base (DOM pieces the app and the widget share: markdown, fit, formats)
    app/, widget/, node/, and the files directly in web/src (sw.ts, kernel_check.ts):
                          any layer above, but not each other

A folder not in the table fails too: a new layer takes its place here first. Imports are
read with TypeScript's own scanner (tests/web/list_imports.mjs)."""

from __future__ import annotations

import json
import posixpath
import subprocess

from conftest import REPO

SRC = REPO / "web" / "src"

# Each layer and the layers it may import (besides itself).
LOWER_LAYERS: dict[str, frozenset[str]] = {
    "base": frozenset(),
    "storage": frozenset({"base"}),
    "compiled": frozenset({"base", "storage"}),
    "llm": frozenset({"base", "storage", "compiled"}),
    "image": frozenset({"base", "storage", "compiled"}),
    "engine": frozenset({"base", "storage", "compiled", "llm", "image"}),
    "ui": frozenset({"base"}),
}
# Entry points: each may use every layer of LOWER_LAYERS, none may use another entry point.
ENTRY_FOLDERS = frozenset({"app", "widget", "node"})


def list_imports(sources: dict[str, str]) -> dict[str, list[str]]:
    """The module specifiers each source imports (keys are paths relative to web/src)."""
    run = subprocess.run(["node", str(REPO / "tests" / "web" / "list_imports.mjs")], input=json.dumps(sources),
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def layer_of(path: str) -> str:
    """A path relative to web/src -> its layer: the top folder, or a root file's name (sw.ts -> sw)."""
    parts = path.split("/")
    if len(parts) > 1 or parts[0] in LOWER_LAYERS or parts[0] in ENTRY_FOLDERS:  # "engine": engine/index.ts
        return parts[0]
    return parts[0].split(".")[0]


def allowed_layers(layer: str, path: str) -> frozenset[str] | None:
    """The layers `layer` may import, or None for a folder the table does not know."""
    if layer in LOWER_LAYERS:
        return LOWER_LAYERS[layer] | {layer}
    if layer in ENTRY_FOLDERS or "/" not in path:
        return frozenset(LOWER_LAYERS) | {layer}
    return None


def violations(sources: dict[str, str]) -> list[str]:
    """'file: import "specifier" (why)' for every import a layer may not make."""
    found = []
    for path, specifiers in sorted(list_imports(sources).items()):
        layer = layer_of(path)
        allowed = allowed_layers(layer, path)
        if allowed is None:
            found.append(f'{path}: folder "{layer}" is not in the layer table of tests/test_layout_web.py')
            continue
        for specifier in specifiers:
            if not specifier.startswith((".", "/")):
                continue  # an npm package (or node: builtin)
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), specifier))
            if specifier.startswith("/") or target == ".." or target.startswith("../"):
                found.append(f'{path}: import "{specifier}" (outside web/src: product code never imports tests)')
            elif layer_of(target) not in allowed:
                found.append(f'{path}: import "{specifier}" ({layer} may not import {layer_of(target)})')
    return found


def test_web_src_imports_follow_the_layers():
    sources = {p.relative_to(SRC).as_posix(): p.read_text() for p in sorted(SRC.rglob("*.ts"))}
    assert len(sources) > 30 and {"base", "storage", "llm", "image", "engine", "app"} <= {
        layer_of(p) for p in sources}
    found = violations(sources)
    assert not found, "imports against the layers of web/src:\n" + "\n".join(found)


def test_the_check_catches_violations():
    """The same check on made-up sources: each kind of violation is reported, nothing else."""
    sources = {
        "storage/cache.ts": 'import { ChatModel } from "../engine/api";\nimport { x } from "../base/errors";',
        "base/errors.ts": 'export * from "../llm/sampling";\nimport "./tvm";',
        "llm/chat.ts": 'const p = await import("../image/pipeline");\nimport type { T } from "../compiled/load";',
        "image/pipeline.ts": 'import { helper } from "../../../tests/web/helper";',
        "compiled/load.ts": 'import { Engine } from "../engine";',
        "app/main.ts": 'import "../widget/element";\nimport { createEngine } from "../engine";',
        "widget/element.ts": 'import { App } from "../app/main";',
        "sw.ts": 'import { list } from "./app/gallery";',
        "engine/chat.ts": (
            'import { ChatModel } from "../llm/chat";\nimport * as tvmjs from "@mlc-ai/web-runtime";\n'
            '// import { App } from "../app/main";\nconst s = "import(\'../app/main\')";'
        ),
        "kernel_check.ts": 'import { loadModule } from "./base/tvm";',
        "ui/markdown.ts": 'import { Engine } from "../engine/api";\nimport type { ModelInfo } from "../base/types";',
        "extras/thing.ts": 'import "../base/errors";',
    }
    assert violations(sources) == [
        'app/main.ts: import "../widget/element" (app may not import widget)',
        'base/errors.ts: import "../llm/sampling" (base may not import llm)',
        'compiled/load.ts: import "../engine" (compiled may not import engine)',
        'extras/thing.ts: folder "extras" is not in the layer table of tests/test_layout_web.py',
        'image/pipeline.ts: import "../../../tests/web/helper" (outside web/src: product code never imports tests)',
        'llm/chat.ts: import "../image/pipeline" (llm may not import image)',
        'storage/cache.ts: import "../engine/api" (storage may not import engine)',
        'sw.ts: import "./app/gallery" (sw may not import app)',
        'ui/markdown.ts: import "../engine/api" (ui may not import engine)',
        'widget/element.ts: import "../app/main" (widget may not import app)',
    ]


def test_layer_of_names_folders_and_root_files():
    assert layer_of("engine/local_engine.ts") == "engine"
    assert layer_of("engine") == "engine"  # a folder import: engine/index.ts
    assert layer_of("sw.ts") == "sw"
    assert layer_of("kernel_check") == "kernel_check"
