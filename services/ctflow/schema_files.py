"""Renders the contracts as JSON Schema files under schemas/ (and checks they are current)."""

from __future__ import annotations

import json
from pathlib import Path

from .contracts import DOCUMENTS


def rendered() -> dict[str, str]:
    out = {}
    for name, model in DOCUMENTS.items():
        schema = model.model_json_schema(by_alias=True)
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://ctflow.dev/schemas/{name}.schema.json",
            **schema,
        }
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=False) + "\n"
    return out


def write_schema_files(folder: Path) -> list[Path]:
    written = []
    for rel, text in rendered().items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def check_schema_files(folder: Path) -> list[Path]:
    """Schema files missing or different from what the contracts render."""
    stale = []
    for rel, text in rendered().items():
        path = folder / rel
        if not path.exists() or path.read_text() != text:
            stale.append(path)
    return stale
