"""Sweep expansion: the cartesian product of each key's values, one training request per point."""

from __future__ import annotations

import itertools
import math
from typing import Any


class SweepTooLarge(ValueError):
    pass


def expand(sweep: dict[str, list[Any]], cap: int) -> list[dict[str, Any]]:
    """Points in a stable order (keys sorted); refuses more than `cap` points before building them."""
    if not sweep:
        return [{}]
    keys = sorted(sweep)
    size = math.prod(len(sweep[k]) for k in keys)
    if size > cap:
        raise SweepTooLarge(f"sweep has {size} points, over the cap of {cap}")
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(sweep[k] for k in keys))]
