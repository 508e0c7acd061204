"""The pictures a page shows: WebP thumbnails made once and cached, full PNGs as stored, and
flagged pictures veiled as the server's policy says (bot/messages.py's `veil`, the same
blur Discord members see). Decoding and encoding run in a worker thread, never on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot.messages import veil
from storage.images import PARAMETERS_KEY

THUMB_SIDE = 512  # the longer side of a thumbnail: a grid cell or a gallery tile, sharp on a HiDPI screen
THUMB_QUALITY = 80


class PictureGone(Exception):
    """The stored picture was removed (retention) or never written."""


def thumbnail(source: Path, cache: Path, key: str, veiled: str | None) -> bytes:
    """A WebP of `source` at most THUMB_SIDE on a side (veiled by `veiled`'s policy when set), made
    on first use and kept in `cache` under `key`; PictureGone when the source is gone."""
    if not source.exists():  # expired pictures leave no thumbnail behind to serve
        raise PictureGone
    target = cache / key[:2] / f"{key}{'-' + veiled if veiled else ''}.webp"
    try:
        return target.read_bytes()
    except FileNotFoundError:
        pass
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
    return buffer.getvalue()


@dataclass(frozen=True)
class Shown:
    """What serving a picture needs to know of it, kept in memory (a picture's row never changes)."""

    image_id: int
    path: Path
    sha256: str
    flagged: bool
    owner_id: int
    guild_id: int | None
    channel_id: int | None


class PictureCache:
    """Thumbnails in memory (least recently used out past `max_bytes`), on disk under `folder`, and
    the rows behind them, so that a gallery's fifty thumbnails cost no database read and no thread
    hop once seen. A thumbnail kept in memory is checked against its source again after
    `recheck_seconds` (pictures past the server's retention are removed)."""

    def __init__(self, folder: Path, max_bytes: int = 64 * 1024 * 1024, recheck_seconds: float = 60.0,
                 max_rows: int = 20_000) -> None:
        self.folder = folder
        self.max_bytes, self.recheck_seconds, self.max_rows = max_bytes, recheck_seconds, max_rows
        self._thumbs: OrderedDict[tuple[int, str | None], tuple[float, bytes]] = OrderedDict()
        self._rows: OrderedDict[int, Shown] = OrderedDict()
        self._bytes = 0

    def row(self, image_id: int) -> Shown | None:
        shown = self._rows.get(image_id)
        if shown is not None:
            self._rows.move_to_end(image_id)
        return shown

    def remember(self, shown: Shown) -> None:
        self._rows[shown.image_id] = shown
        while len(self._rows) > self.max_rows:
            self._rows.popitem(last=False)

    def expire(self, before: float) -> int:
        """Remove the thumbnails on disk written before `before` (a Unix time); how many went. (Those in
        memory are checked against their source within `recheck_seconds`.) Blocking: call it in a thread."""
        removed = 0
        for path in self.folder.glob("*/*"):  # .webp, and .tmp left by a write cut short
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < before:
                    path.unlink()
                    removed += 1
        return removed

    async def thumbnail(self, shown: Shown, veiled: str | None) -> bytes:
        key = (shown.image_id, veiled)
        kept = self._thumbs.get(key)
        if kept is not None and time.monotonic() - kept[0] < self.recheck_seconds:
            self._thumbs.move_to_end(key)
            return kept[1]
        data = await asyncio.to_thread(thumbnail, shown.path, self.folder, f"{shown.sha256[:16]}-{shown.image_id}",
                                       veiled)
        old = self._thumbs.pop(key, None)  # as it is now: another request may have replaced or dropped it
        if old is not None:
            self._bytes -= len(old[1])
        self._thumbs[key] = (time.monotonic(), data)
        self._thumbs.move_to_end(key)
        self._bytes += len(data)
        while self._bytes > self.max_bytes and self._thumbs:
            _, (_, dropped) = self._thumbs.popitem(last=False)
            self._bytes -= len(dropped)
        return data


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
