"""models/index.json: every built model of a models folder, read by the app to list what it
can load without fetching each manifest."""

from __future__ import annotations

import json
from pathlib import Path

from .manifest import MANIFEST_FORMAT, ModelIndex, ModelIndexEntry, parse_manifest


def write_index(out_root: Path) -> Path:
    models = []
    for manifest_path in sorted(out_root.glob("*/manifest.json")):
        if manifest_path.parent.name.startswith("."):  # a staging or replaced folder
            continue
        manifest = parse_manifest(json.loads(manifest_path.read_text()), str(manifest_path))
        models.append(ModelIndexEntry.of(manifest, f"{manifest_path.parent.name}/manifest.json"))
    index = out_root / "index.json"
    tmp = index.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(ModelIndex(MANIFEST_FORMAT, models).to_json(), indent=1))
    tmp.replace(index)
    return index
