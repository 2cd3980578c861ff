"""docs/configuration.md lists every setting, and nothing that is not one, with the code's defaults."""

from __future__ import annotations

import re

from ctflow.settings import REPO_ROOT, Settings

ROW = re.compile(r"^\| `CTFLOW_([A-Z_]+)` \| ([^|]+) \|", re.MULTILINE)


def _documented() -> dict[str, str]:
    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    return {name.lower(): default.strip() for name, default in ROW.findall(text)}


def test_every_setting_is_documented_and_every_documented_variable_is_a_setting():
    assert set(_documented()) == set(Settings.model_fields)


def test_documented_numeric_defaults_are_the_codes():
    for name, default in _documented().items():
        value = Settings.model_fields[name].default
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert float(default) == value, f"CTFLOW_{name.upper()}: the page says {default}, the code {value}"
