"""JSON read as RFC 8259 defines it (stdlib only: the trainer image imports it through ctflow.manifest).

Python's json module also reads NaN, Infinity and numbers too large for a double, which
PostgreSQL's json type (and most consumers) refuse. Accepted, such a value would fail
its ledger transaction on every redelivery instead of being dead-lettered.
"""

from __future__ import annotations

import json
import math
from typing import Any


class InvalidJson(ValueError):
    """Not JSON, or JSON with a value RFC 8259 has no place for; the text says which and where."""


def parse_json(raw: bytes | str, what: str) -> Any:
    """The document in `raw`; InvalidJson naming `what` otherwise."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidJson(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # Python's decoder gives up on deep nesting with no ValueError
        raise InvalidJson(f"{what} is nested too deeply to read") from None


def require_finite(value: Any, what: str) -> None:
    """For JSON another library decoded leniently: refuse the values `parse_json` refuses."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidJson(f"{what} is not valid JSON: it holds {value}, which JSON has no value for")
    if isinstance(value, dict):
        for item in value.values():
            require_finite(item, what)
    elif isinstance(value, list):
        for item in value:
            require_finite(item, what)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is beyond what JSON numbers can hold here")
    return value
