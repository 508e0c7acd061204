"""Fetching pictures users point at (image prompts, /blend, /describe), safely.

A user-given URL is someone else's choice of where this machine connects, so:
- http and https only, and the link must be a well-formed web address (host name labels of 1 to 63
  characters, a port from 1 to 65535, a valid international domain name): anything else is refused
  with the reason, never an exception from deep inside the HTTP client;
- every address the host resolves to must be globally routable: loopback, private, shared
  (100.64.0.0/10), link-local (cloud metadata at 169.254.169.254), site-local, multicast,
  documentation, reserved and unspecified addresses are refused, and so are IPv6 forms that carry
  a non-global IPv4 address inside (IPv4-mapped, 6to4, Teredo, NAT64). This is checked again on
  every redirect (at most 3), and once more by the connection's own resolver when it connects
  (a name that changes its answer between the check and the connection is caught there);
- the body is streamed with a byte cap (10 MiB by default) under a timeout;
- the bytes must decode as a picture of an allowed format, and its declared sizes are checked
  before any pixel is decoded (decompression bombs: the canvas, every frame, the number of frames,
  and pixels out of proportion to the bytes); decoding runs in a worker thread, off the event loop;
- one user's fetches are limited (`FetchLimiter`), and so are one host's connections.
Each refusal is a `FetchError` whose message can be shown to the user as it is.
Private addresses can be allowed by the operator (`[images]` in config.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import re
import socket
import struct
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

MIB = 1024 * 1024
REDIRECTS = (301, 302, 303, 307, 308)
CONNECTIONS = 16  # the shared pool for all users' fetches
CONNECTIONS_PER_HOST = 8  # so one slow host (or one user's tarpit) cannot hold the whole pool


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 10 * MIB
    timeout_seconds: float = 20.0
    max_redirects: int = 3
    max_pixels: int = 40_000_000  # 40 megapixels: far beyond any prompt image, far below a bomb
    # Above `ratio_check_above_pixels`, a picture may claim at most `max_pixels_per_byte` pixels per byte
    # of its file. Measured with Pillow: photos and drawings with any content give 2 to 30 pixels per byte;
    # only near-blank pictures go past 100 (single-colour PNG about 200-300, lossy WebP and GIF 500-1,200,
    # lossless WebP 20,000). A bomb claims far more: a 138-byte WebP or a 155 KB PNG claiming 40 megapixels
    # (290,000 and 260 per byte) cost half a second to seconds and 300-600 MiB to decode. Below 4 megapixels
    # decoding is cheap (about 16 MiB), so small flat pictures (icons, solid swatches) are never refused.
    max_pixels_per_byte: int = 100
    ratio_check_above_pixels: int = 4_000_000
    max_frames: int = 100  # only the first frame is used; more frames than this is not a prompt picture
    # A progressive JPEG is decoded scan by scan, each a pass over the whole picture: encoders write about
    # 10 scans, while a hand-made file can repeat a 12-byte scan thousands of times (20,000 cost 2.3 s of
    # CPU on 4 megapixels, and a 10 MiB file could hold 800,000).
    max_jpeg_scans: int = 100
    max_fetches_per_user: int = 3  # for `FetchLimiter`: one user's slow links cannot hold the whole pool
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")
    allow_private_addresses: bool = False
    trusted_hosts: frozenset[str] = field(default_factory=frozenset)  # "host:port" allowed even when private


@dataclass(frozen=True)
class FetchedImage:
    url: str  # where the bytes finally came from (after redirects)
    data: bytes
    format: str
    image: Image.Image  # decoded, RGB, upright (EXIF orientation applied), the first frame
    # True when `data` decoded as it is gives exactly `image` (PNG, JPEG or WebP; one frame; RGB without
    # transparency; no EXIF rotation), so the original bytes can be stored instead of a re-encoding
    original_is_faithful: bool = False


class FetchError(Exception):
    """A picture that was not fetched; the message says why, in words a user understands (and short:
    whatever it quotes of a link, it is cut at `MESSAGE_LIMIT` characters)."""

    MESSAGE_LIMIT = 300

    def __init__(self, message: str) -> None:
        super().__init__(message if len(message) <= self.MESSAGE_LIMIT else message[:self.MESSAGE_LIMIT - 1] + "…")


class AddressRefused(OSError):
    """Raised by the guarded resolver: aiohttp reports it as a connection error."""


def readable_size(count: int) -> str:
    if count >= MIB:
        return f"{count / MIB:g} MiB"
    return f"{count / 1024:g} KiB" if count >= 1024 else f"{count} bytes"


# Not globally reachable per the IANA special-purpose address registries. Listed here, not left to
# `is_global` alone, because Python before 3.11.10/3.12.4 (gh-113171) calls 192.0.0.8, fec0::1, 3fff::1
# and 5f00::1 global. A few anycast services inside these blocks (192.0.0.9, 2001:3::/32) are refused too.
_NOT_GLOBAL_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "240.0.0.0/4"))
_NOT_GLOBAL_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "64:ff9b:1::/48", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16"))
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")  # everything else in IPv6 is special or unallocated
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are the IPv4 address


def is_public(address: str) -> bool:
    """Whether an address is globally routable; an IPv6 address that carries an IPv4 one (IPv4-mapped,
    6to4, Teredo server and client, NAT64) is judged by the IPv4 addresses inside."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _is_global(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return _is_global(ip.sixtofour)
        if ip.teredo is not None:
            return all(_is_global(inner) for inner in ip.teredo)
        if ip in _NAT64:
            return _is_global(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
        return (ip in _GLOBAL_UNICAST_V6 and ip.is_global and not ip.is_multicast
                and not any(ip in network for network in _NOT_GLOBAL_V6))
    return _is_global(ip)


def _is_global(ip: ipaddress.IPv4Address) -> bool:
    # is_global is true for some multicast (224.0.1.0/24 and more): those are refused too
    return ip.is_global and not ip.is_multicast and not any(ip in network for network in _NOT_GLOBAL_V4)


_HOST_LABEL = re.compile(r"[a-z0-9_-]+", re.ASCII)  # after IDNA: letters, digits, hyphens (and underscores)


def _malformed(reason: str, redirected: bool = False) -> FetchError:
    lead = "that link redirects to an invalid web address" if redirected else "that link is not a valid web address"
    return FetchError(f"{lead} ({reason})")


def _web_address(url: str, redirected: bool = False) -> tuple[str, int]:
    """The host (ASCII, as the connection will use it) and port of a link; FetchError saying what is malformed."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed [ in the host, for one
        raise _malformed("its host name cannot be read", redirected) from None
    if parts.scheme not in ("http", "https"):
        raise FetchError("only http:// and https:// links can be used for pictures")
    netloc = parts.netloc.rpartition("@")[2]
    bracketed = netloc.startswith("[")
    port_text = (netloc.rpartition("]")[2] if bracketed else netloc).partition(":")[2]
    if port_text and not (port_text.isascii() and port_text.isdigit()):
        raise _malformed(f"the port {port_text!r} is not a number", redirected)
    port = int(port_text) if port_text else (443 if parts.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise _malformed(f"port {port_text} is out of range", redirected)
    if not parts.hostname:
        raise FetchError("that link has no host name")
    try:  # the host as aiohttp will connect to it: yarl lowercases it and applies IDNA (the idna package)
        host = yarl.URL(url).raw_host or ""
    except ValueError:  # UnicodeError included
        if parts.hostname.isascii():
            raise _malformed("the host name has characters a web address cannot have", redirected) from None
        raise _malformed(f"{parts.hostname} is not a valid international domain name", redirected) from None
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _malformed("the address in brackets is not an IPv6 address", redirected) from None
        return host, port
    labels = host.removesuffix(".").split(".")
    if not all(labels):
        raise _malformed("the host name has an empty part", redirected)
    if any(len(label) > 63 for label in labels):
        raise _malformed("a part of the host name is longer than 63 characters", redirected)
    if len(host.removesuffix(".")) > 253:
        raise _malformed("the host name is longer than 253 characters", redirected)
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _malformed("the host name has characters a web address cannot have", redirected)
    return host, port


class GuardedResolver(AbstractResolver):
    """The connection's resolver: refuses non-public answers unless the policy allows them."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._resolver = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = await self._resolver.resolve(host, port, family)
        if not self._allowed(host, port) and not all(is_public(a["host"]) for a in answers):
            raise AddressRefused(f"{host} resolves to a non-public address")
        return answers

    def _allowed(self, host: str, port: int) -> bool:
        return self.policy.allow_private_addresses or f"{host}:{port}" in self.policy.trusted_hosts

    async def close(self) -> None:
        await self._resolver.close()


def make_session(policy: FetchPolicy) -> aiohttp.ClientSession:
    """The HTTP session for user-given URLs: guarded resolver, a pool one host cannot fill, no cookies kept,
    a plain user agent."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), limit=CONNECTIONS,
                                     limit_per_host=CONNECTIONS_PER_HOST)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 headers={"User-Agent": "imagine-bot image fetcher"})


@dataclass
class _UserSlots:
    semaphore: asyncio.Semaphore
    users: int = 0  # fetches running or waiting


class FetchLimiter:
    """At most `per_user` fetches at once for each user, so one user's slow links cannot hold every
    connection: `async with limiter.slot(user_id): await fetch_image(...)`. A user's entry exists only
    while they have a fetch running or waiting, so the table does not grow with every user ever seen."""

    def __init__(self, per_user: int = 3) -> None:
        self.per_user = per_user
        self._slots: dict[Hashable, _UserSlots] = {}

    def __len__(self) -> int:
        return len(self._slots)

    @contextlib.asynccontextmanager
    async def slot(self, user: Hashable) -> AsyncIterator[None]:
        slots = self._slots.get(user)
        if slots is None:
            slots = self._slots[user] = _UserSlots(asyncio.Semaphore(self.per_user))
        slots.users += 1
        try:
            async with slots.semaphore:
                yield
        finally:
            slots.users -= 1
            if not slots.users:
                del self._slots[user]


async def check_url(url: str, policy: FetchPolicy, *, redirected: bool = False) -> None:
    """Scheme, form and addresses of one hop; FetchError when it must not be fetched."""
    host, port = _web_address(url, redirected)
    if policy.allow_private_addresses or f"{host}:{port}" in policy.trusted_hosts:
        return
    try:
        addresses = [ipaddress.ip_address(host).compressed]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise FetchError(f"the host {host} does not exist") from None
        addresses = [info[4][0] for info in infos]
    if not all(is_public(address) for address in addresses):
        raise FetchError(f"{host} is a private or local address: only public links can be fetched")


async def fetch_image(session: aiohttp.ClientSession, url: str, policy: FetchPolicy) -> FetchedImage:
    """Download and decode one picture under `policy`, following at most `max_redirects` redirects.
    Decoding runs in a worker thread: a big picture never stalls the event loop."""
    url, data = await _download(session, url, policy)
    return await asyncio.to_thread(decode_image, data, policy, url)


async def _download(session: aiohttp.ClientSession, url: str, policy: FetchPolicy) -> tuple[str, bytes]:
    timeout = aiohttp.ClientTimeout(total=policy.timeout_seconds)
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            for hop in range(policy.max_redirects + 1):
                await check_url(url, policy, redirected=hop > 0)
                try:
                    response = await session.get(url, allow_redirects=False, timeout=timeout)
                except ValueError:  # the last guard (aiohttp's InvalidURL is one): what check_url let through
                    raise FetchError("that link is not a valid web address") from None
                async with response:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        try:
                            url = urljoin(url, response.headers["Location"])
                        except ValueError:
                            raise _malformed("its host name cannot be read", redirected=True) from None
                        continue
                    if response.status != 200:
                        raise FetchError(f"the link answered with HTTP {response.status}")
                    return url, await _read_capped(response, policy.max_bytes)
            raise FetchError(f"the link redirects more than {policy.max_redirects} times")
    except TimeoutError:
        raise FetchError(f"the link did not answer within {policy.timeout_seconds:g} seconds") from None
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, AddressRefused):
            raise FetchError("that link leads to a private or local address: only public links can be fetched") \
                from None
        raise FetchError("could not connect to that link's server") from None
    except aiohttp.ClientError as error:
        raise FetchError(f"could not download that link ({type(error).__name__})") from None


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    too_big = FetchError(f"the picture is larger than {readable_size(max_bytes)}")
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_big
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type and not (content_type.startswith("image/") or content_type == "application/octet-stream"):
        raise FetchError(f"that link is not a picture (it is {content_type})")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


_FAITHFUL_FORMATS = ("PNG", "JPEG", "WEBP")  # what can be stored as it came, in place of a PNG re-encoding


def decode_image(data: bytes, policy: FetchPolicy, source: str = "the picture") -> FetchedImage:
    """Bytes to an upright RGB picture (the first frame): an allowed format, and the declared sizes checked
    against the limits before any pixel is decoded. CPU-bound: `fetch_image` runs it in a worker thread."""
    if len(data) > policy.max_bytes:
        raise FetchError(f"the picture is larger than {readable_size(policy.max_bytes)}")
    # No warnings.catch_warnings here (it is not thread-safe): over Pillow's own limit (89 megapixels) it
    # warns, and that is more than max_pixels allows anyway; at twice that it raises, caught below.
    try:
        opened = Image.open(io.BytesIO(data), formats=list(policy.formats))  # reads the header only
        frames = _refuse_bombs(opened, data, policy)
        image = opened.convert("RGB")  # decodes the first frame only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(policy) from None
    except UnidentifiedImageError:
        raise FetchError(f"that is not a picture in a format this bot reads ({', '.join(policy.formats)})") \
            from None
    except (OSError, SyntaxError, ValueError):
        raise FetchError("the picture is damaged and cannot be read") from None
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)  # convert() kept the EXIF
    except Exception:  # damaged EXIF: the picture is used as it is stored
        orientation = 1
    rotated = orientation in range(2, 9)
    if rotated:
        ImageOps.exif_transpose(image, in_place=True)
    image_format = opened.format or "?"
    faithful = (image_format in _FAITHFUL_FORMATS and frames == 1 and not rotated and opened.mode == "RGB"
                and "transparency" not in opened.info)
    return FetchedImage(source, data, image_format, image, faithful)


def _too_many_pixels(policy: FetchPolicy) -> FetchError:
    return FetchError(f"the picture has too many pixels: at most {policy.max_pixels / 1e6:g} megapixels are accepted")


def _refuse_bombs(opened: Image.Image, data: bytes, policy: FetchPolicy) -> int:
    """The declared canvas, frames and pixels per byte against the limits; the number of frames."""
    pixels = opened.width * opened.height
    if pixels > policy.max_pixels:
        raise _too_many_pixels(policy)
    if pixels > policy.ratio_check_above_pixels and pixels > len(data) * policy.max_pixels_per_byte:
        raise FetchError(f"the picture claims {pixels / 1e6:.3g} megapixels but is only {readable_size(len(data))}: "
                         "refused as a decompression bomb")
    # WebP and APNG frames must lie inside the canvas (libwebp and Pillow check); a GIF frame need not
    frames = _gif_frames(data, policy) if opened.format == "GIF" else getattr(opened, "n_frames", 1)
    if frames > policy.max_frames:
        raise FetchError(f"the picture has more than {policy.max_frames} frames")
    # each scan starts with an SOS marker; entropy-coded data never holds FF DA (FF is stuffed as FF 00)
    if opened.format == "JPEG" and data.count(b"\xff\xda") > policy.max_jpeg_scans:
        raise FetchError(f"the picture has more than {policy.max_jpeg_scans} JPEG scans: refused as a "
                         "decompression bomb")
    return frames


def _gif_frames(data: bytes, policy: FetchPolicy) -> int:
    """A GIF's frames, counted without decoding any (up to one past max_frames); FetchError for a frame
    that reaches past the pixel limit. What is not a well-formed block ends the count: Pillow judges it."""
    frames, position = 0, 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # screen, palette
    try:
        while position < len(data) and frames <= policy.max_frames:
            block = data[position]
            if block == 0x21:  # an extension: introducer, label, then sub-blocks
                position += 2
            elif block == 0x2C:  # an image: descriptor, local palette, LZW code size, then sub-blocks
                left, top, width, height, flags = struct.unpack_from("<HHHHB", data, position + 1)
                if (left + width) * (top + height) > policy.max_pixels:
                    raise FetchError(f"a frame of the picture has too many pixels: at most "
                                     f"{policy.max_pixels / 1e6:g} megapixels are accepted")
                frames += 1
                position += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            else:  # the trailer, or not a GIF block
                break
            while data[position]:
                position += data[position] + 1
            position += 1
    except (IndexError, struct.error):  # truncated
        pass
    return max(frames, 1)
