"""Reading pictures of the synthetic world back: colours, background, shape, style.

This is how the tests and the fidelity script check what a prompt *meant* on the
built-in model (does `--no red` remove red? is the star a star?) by pixel analysis
alone, with no learned judge.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from PIL import Image

from .world import PALETTE, PIXEL_BLOCK, SHAPE_COLOURS, pastel

_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[name] for name in _NAMES], dtype=np.float32)
MATCH_DISTANCE = 80.0  # a pixel farther than this from every palette colour is "no colour"


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def colour_map(image: Image.Image) -> np.ndarray:
    """Per pixel, the index of the nearest palette colour, or -1 when none is near."""
    pixels = _pixels(image)
    distances = np.linalg.norm(pixels[:, :, None, :] - _RGB[None, None, :, :], axis=-1)
    nearest = distances.argmin(axis=-1)
    nearest[distances.min(axis=-1) > MATCH_DISTANCE] = -1
    return nearest


def colour_share(image: Image.Image, colour: str) -> float:
    """Fraction of the picture that is `colour`."""
    return float((colour_map(image) == _NAMES.index(colour)).mean())


def background_colour(image: Image.Image) -> str | None:
    """The colour of most of the border: where the world puts no shape centre."""
    labels = colour_map(image)
    border = np.concatenate([labels[:3].ravel(), labels[-3:].ravel(), labels[:, :3].ravel(), labels[:, -3:].ravel()])
    border = border[border >= 0]
    if border.size == 0:
        return None
    return _NAMES[int(np.bincount(border, minlength=len(_NAMES)).argmax())]


def colour_shares(image: Image.Image) -> dict[str, float]:
    labels = colour_map(image)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(_NAMES)) / labels.size
    return {name: float(counts[i]) for i, name in enumerate(_NAMES)}


def dominant_colour(image: Image.Image, *, min_share: float = 0.01) -> str | None:
    """The most common colour that is not the background (None when nothing stands out)."""
    background = background_colour(image)
    shares = {name: share for name, share in colour_shares(image).items() if name != background}
    name, share = max(shares.items(), key=lambda item: item[1])
    return name if share >= min_share else None


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """The 4-connected blobs of a boolean mask, largest first."""
    seen = np.zeros_like(mask, dtype=bool)
    blobs: list[list[tuple[int, int]]] = []
    height, width = mask.shape
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        blob, queue = [], deque([(y, x)])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            blob.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        blobs.append(blob)
    return sorted(blobs, key=len, reverse=True)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    result = np.zeros_like(mask, dtype=bool)
    blobs = _components(mask)
    if blobs:
        ys, xs = zip(*blobs[0], strict=True)
        result[list(ys), list(xs)] = True
    return result


def blobs_of(image: Image.Image, colour: str, *, min_pixels: int = 12) -> list[tuple[float, float]]:
    """Centres (x, y as fractions of the picture) of each patch of `colour`, largest first."""
    labels = colour_map(image)
    height, width = labels.shape
    found = []
    for blob in _components(labels == _NAMES.index(colour)):
        if len(blob) >= min_pixels:
            ys, xs = zip(*blob, strict=True)
            found.append((float(np.mean(xs) + 0.5) / width, float(np.mean(ys) + 0.5) / height))
    return found


def shape_features(mask: np.ndarray) -> tuple[float, float]:
    """(fill: area / bounding box, taper: width of the top third / width of the bottom third)."""
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = mask[top:bottom, left:right]
    fill = float(box.mean())
    third = max(1, box.shape[0] // 3)
    top_width = box[:third].sum(axis=1).mean()
    bottom_width = box[-third:].sum(axis=1).mean()
    return fill, float(top_width / max(bottom_width, 1e-6))


def classify_shape(image: Image.Image, colour: str | None = None) -> str | None:
    """circle / square / triangle / star for the largest blob of `colour` (default: the dominant one)."""
    colour = colour or dominant_colour(image)
    if colour is None:
        return None
    mask = _largest_component(colour_map(image) == _NAMES.index(colour))
    if mask.sum() < 12:
        return None
    fill, taper = shape_features(mask)
    if fill > 0.88:
        return "square"
    if taper < 0.3 and fill > 0.45:
        return "triangle"
    if fill > 0.66:
        return "circle"
    return "star"


_FILLS = [(name, np.array(rgb, dtype=np.float32)) for name, plain in SHAPE_COLOURS.items()
          for rgb in (plain, pastel(plain))]


def fill_colour(image: Image.Image) -> str | None:
    """The colour word for the largest shape's fill, in plain or niji (pastel) style.

    Outlines (near-black) and the background are left out, so a niji picture reads as the
    colour it was asked for only when its pastel fill keeps that colour's hue. Black shapes
    read as outline: None.
    """
    pixels = _pixels(image)
    background = background_colour(image)
    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    mask = luma >= 70
    if background is not None:
        mask &= np.linalg.norm(pixels - np.array(PALETTE[background], dtype=np.float32), axis=-1) > 40
    shape = _largest_component(mask)
    if shape.sum() < 12:
        return None
    median = np.median(pixels[shape], axis=0)
    return min(_FILLS, key=lambda fill: float(np.linalg.norm(fill[1] - median)))[0]


def outline_darkness(image: Image.Image) -> float:
    """Share of pixels that are near-black: the niji style's dark outlines (on non-black pictures)."""
    pixels = _pixels(image)
    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float((luma < 70).mean())


def blockiness(image: Image.Image, block: int = PIXEL_BLOCK) -> float:
    """How much of the picture's change happens on a `block`-pixel grid (pixel-art style).

    1.0 for pictures with no grid structure; large when neighbouring pixels inside a
    block are equal and changes happen only between blocks.
    """
    pixels = _pixels(image)
    dx = np.abs(np.diff(pixels, axis=1)).sum(axis=-1)
    dy = np.abs(np.diff(pixels, axis=0)).sum(axis=-1)
    on_grid_x = (np.arange(dx.shape[1]) % block) == block - 1
    on_grid_y = (np.arange(dy.shape[0]) % block) == block - 1
    across = dx[:, on_grid_x].mean() + dy[on_grid_y].mean()
    inside = dx[:, ~on_grid_x].mean() + dy[~on_grid_y].mean()
    return float((across + 1.0) / (inside + 1.0))
