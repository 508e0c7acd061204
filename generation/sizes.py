"""Output sizes: `--ar W:H` as the model's native pixel budget at that ratio."""

from __future__ import annotations

import math

SIDE_UNIT = 64  # the contract: sides are multiples of 64 ...
SMALL_MODEL_NATIVE = 512  # ... on models whose native side is at least this


def size_unit(native_side: int, alignment: int) -> int:
    """What sides are rounded to: 64 on real models; the model's own alignment on smaller ones.

    `alignment` is what the model cannot go below (VAE factor x UNet downsamplings:
    64 for SD 1.5, 32 for SDXL, 16 for the built-in model).
    """
    return max(alignment, SIDE_UNIT) if native_side >= SMALL_MODEL_NATIVE else alignment


def output_size(aspect: tuple[int, int], native_side: int, unit: int) -> tuple[int, int]:
    """(width, height) with about native_side² pixels at the ratio W:H, each side a multiple of `unit`.

    16:9 on SD 1.5 (512², unit 64) gives 704×384; on the built-in model (64², unit 16) 80×48.
    """
    ratio_w, ratio_h = aspect
    budget = native_side * native_side
    width = math.sqrt(budget * ratio_w / ratio_h)
    height = budget / width
    return max(unit, round(width / unit) * unit), max(unit, round(height / unit) * unit)
