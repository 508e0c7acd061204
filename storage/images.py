"""The image store: PNG files on disk, addressed by job id and index, written atomically.

Each PNG carries the generation parameters in the A1111-compatible `parameters` text
chunk, so a picture saved from Discord or the store can be read back by the WebUI and
by us. The database keeps the path and the hash, never the bytes. These functions
block (disk I/O): call them from a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

PARAMETERS_KEY = "parameters"
TEMP_SUFFIX = ".tmp"
FILE_MODE = 0o644


@dataclass(frozen=True)
class StoredFile:
    path: Path
    sha256: str
    width: int
    height: int


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, job_id: int, index: int) -> Path:
        # a thousand jobs per folder keeps directories small on long-running servers
        return self.root / f"{job_id // 1000:05d}" / str(job_id) / f"{index}.png"

    def input_path(self, name: str) -> Path:
        """Where a picture a user gave (image prompt, /blend) is kept; `name` comes from `save_input`."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"not an input picture name: {name!r}")
        return self.root / "inputs" / name[:2] / name

    def save_input(self, image: Image.Image, original: tuple[bytes, str] | None = None) -> str:
        """Keep a user's picture before its job is queued, named by its content (the same picture
        is kept once), so a job run again after a restart finds it without fetching it again.

        `original` is the bytes as sent and their format, when they decode to exactly `image`
        (bot/fetch.py says so): they are kept as they are, since a photo re-encoded as PNG
        grows many times over. Otherwise the picture is kept as PNG."""
        if original is not None and original[1].upper() in INPUT_SUFFIXES:
            data, suffix = original[0], INPUT_SUFFIXES[original[1].upper()]
        else:
            data, suffix = encode_png(image.convert("RGB"), ""), ".png"
        name = hashlib.sha256(data).hexdigest() + suffix
        path = self.input_path(name)
        if path.exists():
            os.utime(path)  # used again: its retention starts over
        else:
            self._write(path, data)
        return name

    def expire_inputs(self, before: float) -> int:
        """Remove users' pictures last used before `before` (a Unix time); how many went."""
        return _remove_older(self.root / "inputs", "*/*", before)

    def expire_results(self, before: float) -> int:
        """Remove the pictures of jobs written before `before` (the rows stay, for /history)."""
        return _remove_older(self.root, "[0-9]*/[0-9]*/*.png", before)

    def save(self, job_id: int, index: int, image: Image.Image, parameters: str) -> StoredFile:
        """Write the PNG (temp file + rename, so a crash never leaves half a file)."""
        data = encode_png(image, parameters)
        target = self.path_for(job_id, index)
        self._write(target, data)
        return StoredFile(target, hashlib.sha256(data).hexdigest(), image.width, image.height)

    @staticmethod
    def _write(target: Path, data: bytes) -> None:
        """A temp file beside the target, then a rename; the file is readable by others (0644), as a
        web server or a backup job expects. Temp names are unique (two requests may keep the same
        picture at once) and end in `.tmp`, so `reconcile` finds what a kill left."""
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
        temp = Path(name)
        try:
            with os.fdopen(handle, "wb") as file:
                os.fchmod(file.fileno(), FILE_MODE)  # mkstemp makes 0600
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def reconcile(self, recorded: set[tuple[int, int]], kept_inputs: set[str]) -> tuple[int, int]:
        """Make the store hold exactly what the database records (run at start-up, before any job):
        temp files of writes cut short, pictures of jobs that never recorded them (a kill between
        the write and the record, a job given up) and users' pictures no job names (a kill between
        keeping a picture and writing its job). Returns (temp files, orphans) removed.

        Results are matched by (job id, index), read from where `path_for` puts them, so a store
        moved to another folder still matches. When most of the files would go, the database is
        more likely the wrong one than the files orphans: `StoreMismatch`, and nothing is removed."""
        temps: list[Path] = []
        orphans: list[Path] = []
        results = 0
        for path in self.root.glob("[0-9]*/[0-9]*/*"):
            if path.name.endswith(TEMP_SUFFIX):
                temps.append(path)
                continue
            results += 1
            if not (path.parent.name.isdigit() and path.stem.isdigit()
                    and (int(path.parent.name), int(path.stem)) in recorded):
                orphans.append(path)
        inputs = 0
        for path in self.root.glob("inputs/*/*"):
            if path.name.endswith(TEMP_SUFFIX):
                temps.append(path)
            else:
                inputs += 1
                if path.name not in kept_inputs:
                    orphans.append(path)
        if len(orphans) > MISMATCH_FLOOR and len(orphans) > (results + inputs) / 2:
            raise StoreMismatch(f"{len(orphans)} of the {results + inputs} files in {self.root} are not in the "
                                "database: is `database_url` the one this store belongs to? Nothing was removed.")
        return sum(map(_unlink, temps)), sum(map(_unlink, orphans))

    def open(self, path: str | Path) -> Image.Image:
        with Image.open(path) as image:
            image.load()
            return image


INPUT_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
MISMATCH_FLOOR = 20  # up to this many orphans are always removed (a few kills' worth)


class StoreMismatch(RuntimeError):
    """The image store and the database do not belong together; the message says what to check."""


def _unlink(path: Path) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


def _remove_older(folder: Path, pattern: str, before: float) -> int:
    removed = 0
    for path in folder.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and path.stat().st_mtime < before:
                path.unlink()
                removed += 1
    return removed


def encode_png(image: Image.Image, parameters: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_parameters(path: str | Path) -> str | None:
    with Image.open(path) as image:
        return image.info.get(PARAMETERS_KEY)
