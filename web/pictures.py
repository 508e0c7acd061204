"""The pictures a page shows: WebP thumbnails made once and cached, full PNGs as stored, and
flagged pictures veiled as the server's policy says (bot/messages.py's `veil`, the same
blur Discord members see). Everything here runs in a worker thread, never on the loop."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

from PIL import Image

from bot.messages import veil
from storage.images import PARAMETERS_KEY

THUMB_SIDE = 512  # the longer side of a thumbnail: a grid cell or a gallery tile, sharp on a HiDPI screen
THUMB_QUALITY = 80


class PictureGone(Exception):
    """The stored picture was removed (retention) or never written."""


def thumbnail(source: Path, cache: Path, key: str, veiled: str | None) -> Path:
    """A WebP of `source` at most THUMB_SIDE on a side (veiled by `veiled`'s policy when set), made
    on first use and kept in `cache` under `key`; PictureGone when the source is gone."""
    if not source.exists():  # expired pictures leave no thumbnail behind to serve
        raise PictureGone
    target = cache / key[:2] / f"{key}{'-' + veiled if veiled else ''}.webp"
    if target.exists():
        return target
    try:
        with Image.open(source) as opened:
            image = opened.convert("RGB")
    except FileNotFoundError:
        raise PictureGone from None
    image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    if veiled:
        image = veil(image, veiled)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=THUMB_QUALITY, method=4)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # each writer its own file
    partial.write_bytes(buffer.getvalue())
    partial.replace(target)  # two requests for one thumbnail: both write whole files, either wins
    return target


def full_picture(source: Path, veiled: str | None) -> bytes:
    """The stored PNG as it is (its A1111 `parameters` text included), or veiled as a PNG without it."""
    try:
        if not veiled:
            return source.read_bytes()
        with Image.open(source) as opened:
            image = veil(opened.convert("RGB"), veiled)
    except FileNotFoundError:
        raise PictureGone from None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def parameters_text(source: Path) -> str:
    """The A1111 `parameters` text the stored PNG carries ('' if none or gone)."""
    try:
        with Image.open(source) as opened:
            return str(opened.info.get(PARAMETERS_KEY, ""))
    except (FileNotFoundError, OSError):
        return ""


def encode_preview(image: Image.Image) -> bytes:
    """A progress preview for the job page (already at most 256 px): a small WebP."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="WEBP", quality=70)
    return buffer.getvalue()
