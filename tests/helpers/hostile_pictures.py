"""Pictures a hostile member might send: tiny files that claim huge canvases, and big honest ones.

Built by hand where Pillow would have to hold the whole canvas to write them. Used by the
fetch tests and by bench/hostile_input.py.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

from PIL import Image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A few hundred bytes that claim to be a 2.5-gigapixel picture."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
            + png_chunk(b"IEND", b""))


def flat_png(width: int, height: int) -> bytes:
    """A real, complete single-colour PNG, compressed row by row (Pillow would hold the whole canvas)."""
    row, packer = b"\x00" + bytes((200, 30, 30)) * width, zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b""))


def animated_webp(width: int, height: int, frames: int = 2) -> bytes:
    """An animated WebP of 1x1 frames on a width x height canvas, built by hand: a few dozen bytes a frame."""
    still = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 30, 30)).save(still, format="WEBP", lossless=True)
    vp8l = still.getvalue()[12:]  # after the RIFF header: the VP8L chunk, as it is
    assert vp8l.startswith(b"VP8L")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) % 2)

    def u24(number: int) -> bytes:
        return number.to_bytes(3, "little")

    body = (b"WEBP" + chunk(b"VP8X", b"\x02\x00\x00\x00" + u24(width - 1) + u24(height - 1))  # 2: animated
            + chunk(b"ANIM", bytes(6)) + chunk(b"ANMF", u24(0) * 4 + u24(100) + b"\x00" + vp8l) * frames)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_with_a_huge_second_frame() -> bytes:
    """A 1x1 GIF whose second frame claims 8000x8000 pixels (Pillow reads only the first when opening)."""
    pixel = b"\x02\x02\x44\x01\x00"  # LZW code size 2, one sub-block: clear, colour 0, end; the terminator
    return (b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\xff\xff\xff\x00\x00\x00"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + pixel
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 8000, 8000, 0) + pixel + b"\x3b")


def noise(size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def progressive_jpeg_with_many_scans(scans: int, side: int = 2000) -> bytes:
    """A real progressive JPEG whose last scan is repeated `scans` times: tiny, and each scan is
    another pass over the whole picture when decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, format="JPEG", progressive=True, quality=50)
    data = buffer.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    return data[:-2] + data[last_scan:-2] * scans + b"\xff\xd9"
