"""Comparing pictures in tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def same_pixels(one: Image.Image, other: Image.Image) -> bool:
    """Same size and the same RGB values, to the bit."""
    return one.size == other.size and np.array_equal(np.asarray(one.convert("RGB")), np.asarray(other.convert("RGB")))
