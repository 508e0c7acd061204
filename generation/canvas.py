"""Starting pictures for the image jobs: where the old pixels go and what the model paints.

Pure functions on PIL images, no model: each returns the canvas the pipeline starts
from, the mask of what it paints (white = paint), and the original pixels that are put
back afterwards (zoom, pan, make square and Vary (Region) promise them).

The seam. A generated picture's outermost pixels are not like its inside (the VAE decodes
the picture's frame a few grey levels off), and the model's decode of the old picture is
not the old picture: pasting the original back hard, to the pixel, left a line where it met
the painting (an outline after Zoom Out, a line after Pan, bands after Make Square). So the
original comes back exactly only `margin` pixels (half the model's alignment: whole latent
cells) away from the new area; across that margin it is blended, by a smooth ramp, into
the model's own decode, which continues into the painting without a step.

The mask the pipeline gets stays hard: diffusers binarizes it at 0.5 and scales it to the
latent grid by nearest neighbour, so feathering it would only move its edge. It is the new
area exactly, on the latent grid. Letting the model paint the margin as well was tried and is
worse on a 4-channel UNet: it paints shapes into the margin that the ramp then fades into the
old picture (ghosts).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter
from scipy.ndimage import distance_transform_cdt

Direction = Literal["left", "right", "up", "down"]
PAN_EXTENSION = 0.3  # Fooocus extends the canvas by 30 % of the picture in the panned direction
SEAM_MARGIN = 0.5  # of the model's alignment: how far into the old picture the painting is blended
HELD_BAND = 2  # margins (one alignment unit): the band of the new area along the old picture held at first


@dataclass(frozen=True)
class Canvas:
    image: Image.Image  # what the pipeline starts from, at the output size
    mask: Image.Image  # "L", 255 where the model paints (the new area, on the latent grid), else 0
    keep: Image.Image  # original pixels put back after painting...
    keep_at: tuple[int, int]  # ...with their top-left corner here
    keep_mask: Image.Image | None = None  # "L": how much of each of `keep`'s pixels goes back (None: all)
    margin: int = 0  # the old picture's pixels this close to the new area are blended, not kept exactly
    held: Image.Image | None = None  # "L", 255 on the band of the new area painted in the last steps only

    def first_mask(self) -> Image.Image:
        """The mask of the first steps: the new area without the held band."""
        if self.held is None:
            return self.mask
        return Image.fromarray(np.where(np.asarray(self.held) > 127, 0, np.asarray(self.mask)).astype(np.uint8))

    def restore(self, painted: Image.Image) -> Image.Image:
        """The painted picture with the original pixels put back: exactly where `keep_mask` is 255
        (more than `margin` pixels from the new area), blended into the painting across the margin."""
        result = painted.convert("RGB").copy()
        result.paste(self.keep, self.keep_at, self.keep_mask)
        return result


def seam_margin(unit: int) -> int:
    """The margin for a model whose sides are multiples of `unit` (VAE factor × UNet downsamplings):
    half of it, so whole latent cells (8 px on the built-in model, 32 on SD 1.5, 16 on SDXL)."""
    return max(1, round(unit * SEAM_MARGIN))


def _round_to(value: float, unit: int) -> int:
    return max(unit, round(value / unit) * unit)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _seam(new: np.ndarray, margin: int) -> tuple[Image.Image, Image.Image]:
    """For the new area `new` (bool, the whole canvas): the mask the model paints, and how much of
    the original goes back (a smooth ramp from 0 next to the new area to exactly 255 beyond `margin`)."""
    if not new.any():  # nothing new (a zoom by 1): the whole original comes back
        return Image.fromarray(np.zeros(new.shape, np.uint8)), Image.fromarray(np.full(new.shape, 255, np.uint8))
    into_old = distance_transform_cdt(~new, metric="chessboard")  # pixels from the new area
    ramp = _smoothstep(into_old / (margin + 1))
    keep = np.where(into_old > margin, 255, np.round(255 * ramp)).astype(np.uint8)
    mask = np.where(new, 255, 0).astype(np.uint8)
    return Image.fromarray(mask), Image.fromarray(keep)


def _prefill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Fill the area to paint with a blur of the known colours (a start that matches the edges)."""
    known = np.asarray(image, dtype=np.float32)
    weight = 1.0 - np.asarray(mask, dtype=np.float32)[..., None] / 255
    blur = max(image.size) // 4
    spread = np.asarray(Image.fromarray(np.uint8(known * weight)).filter(ImageFilter.BoxBlur(blur)), np.float32)
    coverage = np.asarray(Image.fromarray(np.uint8(weight[..., 0] * 255)).filter(ImageFilter.BoxBlur(blur)),
                          np.float32)[..., None] / 255
    filled = spread / np.maximum(coverage, 1e-3)
    return Image.fromarray(np.uint8(np.clip(known * weight + filled * (1 - weight), 0, 255)))


def zoom_out(source: Image.Image, factor: float, unit: int) -> Canvas:
    """Zoom Out: the picture shrinks by `factor` (1–2) into the centre of a canvas of the same size."""
    if not 1.0 <= factor <= 2.0:
        raise ValueError("the zoom factor must be between 1 and 2")
    width, height = source.size
    # Half the alignment (whole latent cells, like the seam margin) keeps the picture's shape:
    # on the whole alignment an 80×48 picture shrank to 32×32, a square drawn tall and narrow.
    step = seam_margin(unit)
    inner = (min(_round_to(width / factor, step), width), min(_round_to(height / factor, step), height))
    small = source.convert("RGB").resize(inner, Image.Resampling.LANCZOS)
    at = ((width - inner[0]) // 2, (height - inner[1]) // 2)
    return _outpaint(small, (width, height), at, seam_margin(unit))


def pan(source: Image.Image, direction: Direction, unit: int) -> Canvas:
    """Pan: the canvas grows by 30 % on one side; the picture keeps every pixel."""
    width, height = source.size
    if direction in ("left", "right"):
        size, grow = (width + _round_to(width * PAN_EXTENSION, unit), height), _round_to(width * PAN_EXTENSION, unit)
        at = (grow, 0) if direction == "left" else (0, 0)
    else:
        size, grow = (width, height + _round_to(height * PAN_EXTENSION, unit)), _round_to(height * PAN_EXTENSION, unit)
        at = (0, grow) if direction == "up" else (0, 0)
    return _outpaint(source.convert("RGB"), size, at, seam_margin(unit))


def make_square(source: Image.Image, unit: int) -> Canvas:
    """Make Square: the short side grows on both ends until the picture is square."""
    width, height = source.size
    side = max(width, height)
    at = ((side - width) // 2, (side - height) // 2)
    return _outpaint(source.convert("RGB"), (side, side), at, seam_margin(unit))


def _outpaint(picture: Image.Image, size: tuple[int, int], at: tuple[int, int], margin: int) -> Canvas:
    new = np.ones(size[::-1], dtype=bool)
    new[at[1]:at[1] + picture.height, at[0]:at[0] + picture.width] = False
    mask, keep = _seam(new, margin)
    canvas = Image.new("RGB", size)
    canvas.paste(picture, at)
    keep_mask = keep.crop((at[0], at[1], at[0] + picture.width, at[1] + picture.height))
    into_new = distance_transform_cdt(new, metric="chessboard")  # pixels from the old picture
    held = Image.fromarray(np.where(new & (into_new <= HELD_BAND * margin), 255, 0).astype(np.uint8))
    return Canvas(_prefill(canvas, mask), mask, picture, at, keep_mask, margin, held)


def region(source: Image.Image, box: tuple[float, float, float, float], unit: int) -> Canvas:
    """Vary (Region): repaint the rectangle `box` (fractions left, top, right, bottom); the rest is kept.

    The box is widened to the model's latent grid (`unit` pixels), so that what is painted
    is exactly what the model could change; like the outpaints, the picture comes back exactly
    beyond the margin around it and blended across the margin."""
    left, top, right, bottom = box
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise ValueError("the region must be a rectangle inside the picture (fractions from 0 to 1)")
    width, height = source.size
    pixels = (int(left * width) // unit * unit, int(top * height) // unit * unit,
              min(width, -(-int(np.ceil(right * width)) // unit) * unit),
              min(height, -(-int(np.ceil(bottom * height)) // unit) * unit))
    new = np.zeros((height, width), dtype=bool)
    new[pixels[1]:pixels[3], pixels[0]:pixels[2]] = True
    margin = seam_margin(unit)
    mask, keep = _seam(new, margin)
    picture = source.convert("RGB")
    return Canvas(picture, mask, picture, (0, 0), keep, margin)


def center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The largest centred crop with the aspect of `size`, resized to it."""
    width, height = image.size
    target = size[0] / size[1]
    if width / height > target:
        new_width = round(height * target)
        box = ((width - new_width) // 2, 0, (width - new_width) // 2 + new_width, height)
    else:
        new_height = round(width / target)
        box = (0, (height - new_height) // 2, width, (height - new_height) // 2 + new_height)
    return image.convert("RGB").crop(box).resize(size, Image.Resampling.LANCZOS)


def collage(sources: list[Image.Image], size: tuple[int, int], seed: int) -> Image.Image:
    """/blend's starting picture: the sources side by side (2–3), or in two rows (4–5), in an
    order picked by `seed`, so each picture of the grid starts from another arrangement."""
    order = list(sources)
    random.Random(seed).shuffle(order)
    width, height = size
    rows = [order] if len(order) <= 3 else [order[: len(order) // 2], order[len(order) // 2:]]
    horizontal = width >= height or len(rows) > 1
    canvas = Image.new("RGB", size)
    for row_number, row in enumerate(rows):
        for number, picture in enumerate(row):
            if horizontal:
                cell_height = height // len(rows)
                left, right = width * number // len(row), width * (number + 1) // len(row)
                box = (left, row_number * cell_height, right, (row_number + 1) * cell_height)
            else:  # a portrait blend stacks the pictures
                top, bottom = height * number // len(row), height * (number + 1) // len(row)
                box = (0, top, width, bottom)
            canvas.paste(center_crop(picture, (box[2] - box[0], box[3] - box[1])), box[:2])
    return canvas


def mean_picture(sources: list[Image.Image], size: tuple[int, int]) -> Image.Image:
    """Several image prompts as one start: the average of the pictures, cropped to the output's shape."""
    arrays = [np.asarray(center_crop(source, size), dtype=np.float32) for source in sources]
    return Image.fromarray(np.uint8(np.clip(np.mean(arrays, axis=0), 0, 255)))
