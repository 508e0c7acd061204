"""Fetching pictures users point at (image prompts, /blend, /describe), safely.

A user-given URL is someone else's choice of where this machine connects, so:
- http and https only;
- every address the host resolves to must be public: loopback, private, link-local
  (cloud metadata at 169.254.169.254), multicast, reserved and unspecified addresses
  are refused, checked again on every redirect (at most 3), and once more by the
  connection's own resolver when it connects (a name that changes its answer between
  the check and the connection is caught there);
- the body is streamed with a byte cap (10 MiB by default) under a timeout;
- the bytes must decode as a picture of an allowed format, and its declared size is
  checked before any pixel is decoded (decompression bombs).
Each refusal is a `FetchError` whose message can be shown to the user as it is.
Private addresses can be allowed by the operator (`[images]` in config.toml).
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import warnings
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from PIL import Image, UnidentifiedImageError

MIB = 1024 * 1024
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 10 * MIB
    timeout_seconds: float = 20.0
    max_redirects: int = 3
    max_pixels: int = 40_000_000  # 40 megapixels: far beyond any prompt image, far below a bomb
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")
    allow_private_addresses: bool = False
    trusted_hosts: frozenset[str] = field(default_factory=frozenset)  # "host:port" allowed even when private


@dataclass(frozen=True)
class FetchedImage:
    url: str  # where the bytes finally came from (after redirects)
    data: bytes
    format: str
    image: Image.Image  # decoded, RGB


class FetchError(Exception):
    """A picture that was not fetched; the message says why, in words a user understands."""


class AddressRefused(OSError):
    """Raised by the guarded resolver: aiohttp reports it as a connection error."""


def readable_size(count: int) -> str:
    if count >= MIB:
        return f"{count / MIB:g} MiB"
    return f"{count / 1024:g} KiB" if count >= 1024 else f"{count} bytes"


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


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
    """The HTTP session for user-given URLs: guarded resolver, no cookies kept, a plain user agent."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), limit=16)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 headers={"User-Agent": "imagine-bot image fetcher"})


async def check_url(url: str, policy: FetchPolicy) -> None:
    """Scheme and addresses of one hop; FetchError when it must not be fetched."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError("only http:// and https:// links can be used for pictures")
    host, port = _host_port(url)
    if not host:
        raise FetchError("that link has no host name")
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
    """Download and decode one picture under `policy`, following at most `max_redirects` redirects."""
    timeout = aiohttp.ClientTimeout(total=policy.timeout_seconds)
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            for _ in range(policy.max_redirects + 1):
                await check_url(url, policy)
                async with session.get(url, allow_redirects=False, timeout=timeout) as response:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if response.status != 200:
                        raise FetchError(f"the link answered with HTTP {response.status}")
                    data = await _read_capped(response, policy.max_bytes)
                    return decode_image(data, policy, url)
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


def decode_image(data: bytes, policy: FetchPolicy, source: str = "the picture") -> FetchedImage:
    """Bytes to a picture: an allowed format, not too many pixels (checked before decoding)."""
    if len(data) > policy.max_bytes:
        raise FetchError(f"the picture is larger than {readable_size(policy.max_bytes)}")
    too_many = FetchError(f"the picture has too many pixels: at most {policy.max_pixels / 1e6:g} megapixels "
                          "are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=list(policy.formats))  # reads the header only
            if opened.width * opened.height > policy.max_pixels:
                raise too_many
            image_format = opened.format or "?"
            image = opened.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own, larger limit
        raise too_many from None
    except UnidentifiedImageError:
        raise FetchError(f"that is not a picture in a format this bot reads ({', '.join(policy.formats)})") \
            from None
    except (OSError, SyntaxError, ValueError):
        raise FetchError("the picture is damaged and cannot be read") from None
    return FetchedImage(source, data, image_format, image)
