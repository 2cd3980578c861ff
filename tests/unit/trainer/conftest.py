"""Make the trainer importable from a source checkout (pyproject does not package it yet)."""

import sys
from pathlib import Path

_TRAINER = Path(__file__).resolve().parents[3] / "trainer_image"
if str(_TRAINER) not in sys.path:
    sys.path.insert(0, str(_TRAINER))
