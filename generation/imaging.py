"""Picture helpers shared by the CLI and the Discord surface."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image


def make_grid(images: Sequence[Image.Image], columns: int = 2) -> Image.Image:
    """Midjourney's 2×2 grid: the images at full size, left to right, top to bottom (U1–U4 order)."""
    if not images:
        raise ValueError("a grid needs at least one image")
    width, height = images[0].size
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (width * min(columns, len(images)), height * rows))
    for index, image in enumerate(images):
        position = ((index % columns) * width, (index // columns) * height)
        grid.paste(image.convert("RGB").resize((width, height)), position)
    return grid
