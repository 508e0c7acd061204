"""Fetching user-given picture links: what is refused, and why, in the user's words."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import pytest
from aiohttp import web
from PIL import Image

from bot.fetch import MIB, FetchError, FetchPolicy, decode_image, fetch_image, make_session


def png_bytes(colour=(200, 30, 30), size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A few hundred bytes that claim to be a 2.5-gigapixel picture."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
            + chunk(b"IEND", b""))


@pytest.fixture
async def server():
    async def red(request):
        return web.Response(body=png_bytes(), content_type="image/png")

    async def html_as_png(request):
        return web.Response(body=b"<html><body>not a picture</body></html>", content_type="image/png")

    async def html(request):
        return web.Response(body=b"<html></html>", content_type="text/html")

    async def huge(request):  # 20 MiB, streamed without a length
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"\x00" * MIB)
        return response

    async def bomb(request):
        return web.Response(body=bomb_png(), content_type="image/png")

    async def redirect(request):
        raise web.HTTPFound(request.query["to"])

    async def hops(request):
        left = int(request.match_info["left"])
        raise web.HTTPFound(f"/hop/{left - 1}" if left else "/red.png")

    async def slow(request):
        await asyncio.sleep(5)
        return web.Response(body=png_bytes(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/red.png", red)
    app.router.add_get("/page.png", html_as_png)
    app.router.add_get("/page", html)
    app.router.add_get("/huge.png", huge)
    app.router.add_get("/bomb.png", bomb)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hop/{left}", hops)
    app.router.add_get("/slow.png", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(url: str, policy: FetchPolicy):
    async with make_session(policy) as session:
        return await fetch_image(session, url, policy)


async def refusal(url: str, policy: FetchPolicy) -> str:
    with pytest.raises(FetchError) as error:
        await fetch(url, policy)
    return str(error.value)


async def test_a_public_picture_is_fetched_and_decoded(server):
    # the local test server stands in for a public host: trusted by host:port, nothing else private is
    fetched = await fetch(f"http://{server}/red.png", FetchPolicy(trusted_hosts=frozenset({server})))
    assert (fetched.format, fetched.image.size, fetched.image.getpixel((0, 0))) == ("PNG", (32, 32), (200, 30, 30))
    followed = await fetch(f"http://{server}/hop/2", FetchPolicy(trusted_hosts=frozenset({server})))  # 3 redirects
    assert followed.url.endswith("/red.png")


@pytest.mark.parametrize("url", ["http://127.0.0.1/x.png", "http://10.1.2.3/x.png",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/x.png",
                                 "http://localhost/x.png", "http://[::ffff:127.0.0.1]/x.png"])
async def test_private_and_local_addresses_are_refused(url):
    message = await refusal(url, FetchPolicy())
    assert "private or local address" in message


@pytest.mark.parametrize("target", ["http://127.0.0.1:1/x.png", "http://10.0.0.1/x.png",
                                    "http://169.254.169.254/latest/meta-data", "http://[::1]/x.png"])
async def test_a_redirect_to_a_private_address_is_refused(server, target):
    policy = FetchPolicy(trusted_hosts=frozenset({server}))
    message = await refusal(f"http://{server}/redirect?to={target}", policy)
    assert "private or local address" in message


async def test_each_other_refusal_says_what_was_wrong(server):
    trusted = FetchPolicy(trusted_hosts=frozenset({server}))
    assert await refusal(f"http://{server}/huge.png", trusted) == "the picture is larger than 10 MiB"
    assert await refusal(f"http://{server}/page.png", trusted) == (
        "that is not a picture in a format this bot reads (PNG, JPEG, WEBP, GIF)")
    assert await refusal(f"http://{server}/page", trusted) == "that link is not a picture (it is text/html)"
    assert await refusal(f"http://{server}/bomb.png", trusted) == (
        "the picture has too many pixels: at most 40 megapixels are accepted")
    assert await refusal(f"http://{server}/hop/3", trusted) == "the link redirects more than 3 times"
    assert await refusal(f"http://{server}/missing.png", trusted) == "the link answered with HTTP 404"
    quick = FetchPolicy(trusted_hosts=frozenset({server}), timeout_seconds=0.5)
    assert await refusal(f"http://{server}/slow.png", quick) == "the link did not answer within 0.5 seconds"
    assert await refusal("ftp://example.com/x.png", trusted) == (
        "only http:// and https:// links can be used for pictures")
    small = FetchPolicy(trusted_hosts=frozenset({server}), max_bytes=20)
    assert await refusal(f"http://{server}/red.png", small) == "the picture is larger than 20 bytes"


async def test_allowing_private_addresses_is_an_explicit_setting(server):
    fetched = await fetch(f"http://{server}/red.png", FetchPolicy(allow_private_addresses=True))
    assert fetched.image.size == (32, 32)


def test_a_picture_over_the_operators_pixel_limit_is_refused_before_decoding():
    with pytest.raises(FetchError, match=r"at most 0\.001 megapixels"):
        decode_image(png_bytes(size=(40, 40)), FetchPolicy(max_pixels=1000))


def test_decoding_refuses_formats_that_are_not_allowed():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="BMP")
    with pytest.raises(FetchError, match="not a picture in a format"):
        decode_image(buffer.getvalue(), FetchPolicy())
    assert decode_image(png_bytes(), FetchPolicy(formats=("PNG",))).format == "PNG"
