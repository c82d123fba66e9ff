"""The manifest schema (python/webkiln/package/manifest.py) is the one contract between the
build and the browser:

- the browser's types (web/src/base/manifest_types.ts) are generated from it and checked in:
  the check fails when the file drifts from the schema;
- what the builders write is exactly the schema: a built chat and image manifest and the
  models/index.json read back into the dataclasses and give back the same JSON byte for byte,
  and a key added to (or missing from) the file that the schema lacks (or has) is refused.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from conftest_tiny import tiny_llama  # noqa: F401  (session fixture)
from webkiln.package import manifest_ts
from webkiln.package.image.schedulers import default_scheduler
from webkiln.package.manifest import (
    MANIFEST_FORMAT,
    SCHEDULER_CLASSES,
    ChatManifest,
    ImageManifest,
    ManifestError,
    ModelIndex,
    ModelSchedulerConfig,
    parse_manifest,
)
from webkiln.toolchain.link import LinkMode


def test_checked_in_typescript_is_generated_from_the_schema(tmp_path):
    out = tmp_path / "manifest_types.ts"
    assert manifest_ts.main(["--out", str(out)]) == 0
    checked_in = manifest_ts.TS_FILE.read_text() if manifest_ts.TS_FILE.exists() else ""
    assert checked_in == out.read_text(), (
        f"{manifest_ts.TS_FILE} differs from python/webkiln/package/manifest.py; "
        f"run `{manifest_ts.REGENERATE}` and commit the result")
    assert manifest_ts.main(["--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "manifest_types.ts"
    stale.write_text(manifest_ts.render().replace("  nbytes: number;\n", "", 1))
    assert manifest_ts.main(["--check", "--out", str(stale)]) == 1
    captured = capsys.readouterr()
    assert "+  nbytes: number;" in captured.out and manifest_ts.REGENERATE in captured.err


def test_typescript_has_the_names_the_browser_imports():
    text = manifest_ts.render()
    for name in ("TensorPiece", "TensorRecord", "BackendEntry", "ChatManifest", "ImageBackendEntry",
                 "ImageTensorRecord", "ImageManifest", "ManifestFile", "ModelIndexEntry", "ModelIndex"):
        assert f"export interface {name} " in text, name
    assert 'export type ImageComponentName = "text_encoder" | "unet" | "vae";' in text
    assert 'export type SchedulerName = "euler" | "euler_a" | "dpmpp_2m";' in text
    assert f"export const MANIFEST_FORMAT = {MANIFEST_FORMAT};" in text
    assert "export interface ImageTensorRecord extends TensorRecord {" in text
    assert "  split?: TensorSplit;" in text  # optional: absent unless the tensor is split
    assert "  class: string | null;" in text  # renamed from a Python keyword


def test_scheduler_table_is_the_api_vocabulary():
    assert SCHEDULER_CLASSES == {"EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler_a",
                                 "DPMSolverMultistepScheduler": "dpmpp_2m"}
    assert default_scheduler(ModelSchedulerConfig("EulerAncestralDiscreteScheduler")) == "euler_a"
    assert default_scheduler(ModelSchedulerConfig("PNDMScheduler")) == "euler"  # built, sampled with Euler


# --- what the builders write ------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_site(tmp_path_factory, tiny_llama) -> Path:  # noqa: F811
    """A models folder with a tiny chat model and a tiny image model (fast links; the user's
    compile cache, so libraries built by other tests are reused). The image side needs torch
    and diffusers (to make the tiny pipeline), hence the imports after the skips."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from test_diffusion_native import make_tiny_pipeline
    from webkiln.package.chat_build import build_chat_model
    from webkiln.package.image.build import build_image_model
    from webkiln.sources import load_source

    out = tmp_path_factory.mktemp("site") / "models"
    build_chat_model(load_source(tiny_llama.folder), out, "q0f16", link_mode=LinkMode.FAST, log=lambda _: None)
    _, folder = make_tiny_pipeline(tmp_path_factory.mktemp("diffusion"))
    build_image_model(load_source(folder), out, "f16", model_id="tiny-sd", link_mode=LinkMode.FAST,
                      log=lambda _: None)
    return out


@pytest.mark.parametrize("task", ["chat", "image"])
def test_built_manifest_is_exactly_the_schema(built_site, task):
    [path] = [p for p in built_site.glob("*/manifest.json") if json.loads(p.read_text())["task"] == task]
    text = path.read_text()
    data = json.loads(text)
    manifest = parse_manifest(data, str(path))
    assert isinstance(manifest, ChatManifest if task == "chat" else ImageManifest)
    assert json.dumps(manifest.to_json(), indent=1) == text  # same keys, values and order

    added = copy.deepcopy(data)
    added["backends"][next(iter(added["backends"]))]["note"] = "a key the schema lacks"
    with pytest.raises(ManifestError, match="'note' are not in the schema"):
        parse_manifest(added)
    missing = copy.deepcopy(data)
    del missing["memory"]["total_bytes"]
    with pytest.raises(ManifestError, match="missing key 'total_bytes'"):
        parse_manifest(missing)


def test_built_index_is_exactly_the_schema(built_site):
    text = (built_site / "index.json").read_text()
    index = ModelIndex.from_json(json.loads(text))
    assert json.dumps(index.to_json(), indent=1) == text
    assert sorted(e.task for e in index.models) == ["chat", "image"]
    for entry in index.models:
        assert parse_manifest(json.loads((built_site / entry.manifest).read_text())).id == entry.id


def test_a_manifest_of_another_format_is_refused_naming_both_versions(built_site):
    path = built_site / "tiny-sd" / "manifest.json"
    data = json.loads(path.read_text())
    data["format"] = MANIFEST_FORMAT + 1
    with pytest.raises(ManifestError) as error:
        parse_manifest(data, str(path))
    assert f"format {MANIFEST_FORMAT + 1}" in str(error.value) and f"format {MANIFEST_FORMAT}" in str(error.value)
