"""Comparing pictures in tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def same_pixels(one: Image.Image, other: Image.Image) -> bool:
    """Same size and the same RGB values, to the bit."""
    return one.size == other.size and np.array_equal(np.asarray(one.convert("RGB")), np.asarray(other.convert("RGB")))


def detail(image: Image.Image) -> float:
    """The sharpest edges of a picture: the strongest 1 % of the steps from one pixel to the next
    (a shape's outline; a blur past recognition leaves none)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    steps = np.concatenate([np.abs(np.diff(pixels, axis=1)).ravel(), np.abs(np.diff(pixels, axis=0)).ravel()])
    return float(np.percentile(steps, 99))
