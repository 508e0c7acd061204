"""Fetching user-given picture links: what is refused, and why, in the user's words."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Awaitable
from urllib.parse import quote

import pytest
from aiohttp import web
from helpers.hostile_pictures import (
    animated_webp,
    bomb_png,
    flat_png,
    gif_with_a_huge_second_frame,
    noise,
    progressive_jpeg_with_many_scans,
)
from PIL import ExifTags, Image, ImageFile, WebPImagePlugin

from bot.fetch import (
    MIB,
    FetchError,
    FetchLimiter,
    FetchPolicy,
    check_url,
    decode_image,
    fetch_image,
    is_public,
    make_session,
)


def png_bytes(colour=(200, 30, 30), size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def animation(image_format: str, frames: int, size=(2, 2)) -> bytes:
    """Frames of alternating colours (identical frames would be merged by Pillow)."""
    colours = [Image.new("RGB", size, (200, 30, 30) if i % 2 else (30, 30, 200)) for i in range(frames)]
    buffer = io.BytesIO()
    colours[0].save(buffer, format=image_format, save_all=True, append_images=colours[1:], duration=100)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, orientation: int | None = None, quality: int = 95) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


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

    async def redirect(request):  # the Location exactly as given, even a malformed one
        return web.Response(status=302, headers={"Location": request.query["to"]})

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
    async with serving(app) as host:
        yield host


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoded fails the test: the refusal must come from the declared sizes alone."""
    def decoded(self, *args, **kwargs):
        raise AssertionError("a pixel was decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", decoded)


async def fetch(url: str, policy: FetchPolicy):
    async with make_session(policy) as session:
        return await fetch_image(session, url, policy)


async def refusal(url: str, policy: FetchPolicy) -> str:
    with pytest.raises(FetchError) as error:
        await fetch(url, policy)
    return str(error.value)


def redirect_to(server: str, target: str) -> str:
    return f"http://{server}/redirect?to={quote(target, safe='')}"


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


# Not globally routable, though `is_private` (and on older Pythons `is_global`) lets each through
NOT_GLOBAL = ["http://100.100.100.200/x.png",  # shared address space (carrier-grade NAT, cloud metadata)
              "http://192.0.0.8/x.png",  # IETF protocol assignments
              "http://[fec0::1]/x.png",  # IPv6 site-local
              "http://[2002:7f00:1::]/x.png",  # 6to4 around 127.0.0.1
              "http://[2002:a9fe:a9fe::]/x.png",  # 6to4 around 169.254.169.254
              "http://[64:ff9b::7f00:1]/x.png",  # NAT64 around 127.0.0.1
              "http://[64:ff9b:1::808:808]/x.png",  # NAT64 local-use prefix
              "http://[2001:0:808:808::80ff:fffe]/x.png",  # Teredo: server 8.8.8.8, client 127.0.0.1
              "http://[2001:0:808:808::f5ff:fffe]/x.png",  # Teredo: server 8.8.8.8, client 10.0.0.1
              "http://[::ffff:10.0.0.1]/x.png"]  # IPv4-mapped


@pytest.mark.parametrize("url", NOT_GLOBAL)
async def test_addresses_that_are_not_globally_routable_are_refused(url):
    assert "private or local address" in await refusal(url, FetchPolicy())


@pytest.mark.parametrize("target", NOT_GLOBAL)
async def test_a_redirect_to_an_address_that_is_not_globally_routable_is_refused(server, target):
    message = await refusal(redirect_to(server, target), FetchPolicy(trusted_hosts=frozenset({server})))
    assert "private or local address" in message


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2606:4700::1111", True),
    ("2002:808:808::", True),  # 6to4 around 8.8.8.8
    ("64:ff9b::808:808", True),  # NAT64 around 8.8.8.8
    ("2001:0:808:808::fefe:fefe", True),  # Teredo: server 8.8.8.8, client 1.1.1.1
    ("224.0.1.1", False), ("ff0e::1", False),  # multicast, which is_global calls global
    ("3fff::1", False), ("5f00::1", False),  # documentation, segment routing: global to Python 3.11
    ("::8.8.8.8", False),  # deprecated IPv4-compatible form, outside global unicast
])
def test_the_address_check_follows_global_routability(address, public):
    assert is_public(address) is public


MALFORMED = [("http://" + "a" * 64 + ".com/x.png", "a part of the host name is longer than 63 characters"),
             ("http://" + ".".join(["a" * 60] * 5) + "/x.png", "the host name is longer than 253 characters"),
             ("http://a..b/x.png", "the host name has an empty part"),
             ("http://a.b:99999/x.png", "port 99999 is out of range"),
             ("http://a.b:0/x.png", "port 0 is out of range"),
             ("http://a.b:abc/x.png", "the port 'abc' is not a number"),
             ("http://\ue000.com/x.png", "\ue000.com is not a valid international domain name"),
             ("http://ex ample.com/x.png", "the host name has characters a web address cannot have"),
             ("http://[v1.x]/x.png", "the address in brackets is not an IPv6 address"),
             ("http://[::1/x.png", "its host name cannot be read")]


@pytest.mark.parametrize(("url", "reason"), MALFORMED)
async def test_a_malformed_link_is_refused_with_the_reason(url, reason):
    assert await refusal(url, FetchPolicy()) == f"that link is not a valid web address ({reason})"


@pytest.mark.parametrize(("target", "reason"), MALFORMED)
async def test_a_redirect_to_a_malformed_link_is_refused_with_the_reason(server, target, reason):
    message = await refusal(redirect_to(server, target), FetchPolicy(trusted_hosts=frozenset({server})))
    assert message == f"that link redirects to an invalid web address ({reason})"


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


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding(no_decoding):
    bomb = progressive_jpeg_with_many_scans(5000)
    assert len(bomb) < 100_000
    with pytest.raises(FetchError, match="more than 100 JPEG scans: refused as a decompression bomb"):
        decode_image(bomb, FetchPolicy())


def test_an_ordinary_progressive_jpeg_is_accepted():
    assert decode_image(progressive_jpeg_with_many_scans(0, side=64), FetchPolicy()).image.size == (64, 64)


async def test_a_refusal_never_quotes_a_huge_link():
    with pytest.raises(FetchError) as refused:
        await check_url("http://x:" + "a" * 3000 + "/p.png", FetchPolicy())
    assert len(str(refused.value)) <= FetchError.MESSAGE_LIMIT


def test_decoding_refuses_formats_that_are_not_allowed():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="BMP")
    with pytest.raises(FetchError, match="not a picture in a format"):
        decode_image(buffer.getvalue(), FetchPolicy())
    assert decode_image(png_bytes(), FetchPolicy(formats=("PNG",))).format == "PNG"


def test_a_tiny_animated_webp_with_a_huge_canvas_is_refused_before_decoding(no_decoding):
    # the reproduction: decoding its first frame stalled the loop for seconds and took 609 MiB
    data = animated_webp(6320, 6320)
    with pytest.raises(FetchError) as error:
        decode_image(data, FetchPolicy())
    assert str(error.value) == (f"the picture claims 39.9 megapixels but is only {len(data)} bytes: "
                                "refused as a decompression bomb")


def test_a_small_png_claiming_a_huge_canvas_is_refused_before_decoding(no_decoding):
    data = flat_png(6320, 6320)  # a real, complete picture of about 130 KB, like the 155 KB one
    with pytest.raises(FetchError, match=r"^the picture claims 39\.9 megapixels but is only [\d.]+ KiB: refused as"):
        decode_image(data, FetchPolicy())


def test_the_pixels_per_byte_check_leaves_real_and_small_pictures_alone():
    assert decode_image(flat_png(2000, 2000), FetchPolicy()).image.size == (2000, 2000)  # 4 MP: never checked
    photo = jpeg_bytes(noise((3000, 2000)), quality=75)  # 6 MP in about 3 MiB: 2 pixels per byte
    assert decode_image(photo, FetchPolicy()).image.size == (3000, 2000)
    with pytest.raises(FetchError, match="decompression bomb"):  # the same flat 4 MP, under a stricter operator
        decode_image(flat_png(2000, 2000), FetchPolicy(ratio_check_above_pixels=1_000_000))


@pytest.mark.parametrize("image_format", ["GIF", "WEBP", "PNG"])
def test_too_many_frames_are_refused_before_decoding(image_format):
    policy = FetchPolicy(max_frames=3)
    assert decode_image(animation(image_format, 3), policy).image.size == (2, 2)
    with pytest.raises(FetchError, match=r"^the picture has more than 3 frames$"):
        decode_image(animation(image_format, 4), policy)
    assert FetchPolicy().max_frames == 100


def test_a_gif_frame_past_the_pixel_limit_is_refused_though_only_the_first_is_decoded(no_decoding):
    with pytest.raises(FetchError, match=r"^a frame of the picture has too many pixels: at most 40 megapixels"):
        decode_image(gif_with_a_huge_second_frame(), FetchPolicy())


async def longest_stall(work: Awaitable) -> tuple[object, float]:
    """Runs `work` while a task sleeps 5 ms at a time: the longest the loop kept it waiting beyond that."""
    done, longest = False, 0.0

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            longest, last = max(longest, now - last - 0.005), now

    ticker = asyncio.create_task(tick())
    try:
        return await work, longest
    finally:
        done = True
        await ticker


async def test_decoding_happens_off_the_event_loop():
    data = jpeg_bytes(noise((4000, 4000)), quality=90)  # 16 MP of noise: about 13 MiB, slow to decode
    policy_bytes = 32 * MIB
    started = time.perf_counter()
    decode_image(data, FetchPolicy(max_bytes=policy_bytes))
    decoding = time.perf_counter() - started

    async def picture(request):
        return web.Response(body=data, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/noise.jpg", picture)
    async with serving(app) as host:
        policy = FetchPolicy(trusted_hosts=frozenset({host}), max_bytes=policy_bytes)
        fetched, stall = await longest_stall(fetch(f"http://{host}/noise.jpg", policy))
    assert fetched.image.size == (4000, 4000)
    assert stall < 0.5 * decoding, f"the loop stalled {stall:.3f} s; decoding takes {decoding:.3f} s"


def test_the_exif_orientation_is_applied():
    stored = Image.new("RGB", (40, 20), (30, 30, 200))
    stored.paste((200, 30, 30), (0, 0, 20, 20))  # the left half red
    # 6: the camera was turned a quarter clockwise, so the picture is shown turned 90 degrees clockwise:
    # the stored left side comes to the top
    fetched = decode_image(jpeg_bytes(stored, orientation=6), FetchPolicy())
    assert fetched.image.size == (20, 40)
    top, bottom = fetched.image.getpixel((10, 5)), fetched.image.getpixel((10, 35))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]
    assert not fetched.original_is_faithful
    upright = decode_image(jpeg_bytes(stored, orientation=1), FetchPolicy())
    assert upright.image.size == (40, 20) and upright.original_is_faithful


def test_the_original_bytes_are_faithful_only_when_they_decode_to_the_same_picture():
    assert decode_image(png_bytes(), FetchPolicy()).original_is_faithful
    assert decode_image(jpeg_bytes(Image.new("RGB", (8, 8))), FetchPolicy()).original_is_faithful
    still_webp = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(still_webp, format="WEBP")
    assert decode_image(still_webp.getvalue(), FetchPolicy()).original_is_faithful
    transparent = io.BytesIO()
    Image.new("RGBA", (8, 8), (200, 30, 30, 100)).save(transparent, format="PNG")
    assert not decode_image(transparent.getvalue(), FetchPolicy()).original_is_faithful  # RGB drops the alpha
    for animated in (animation("GIF", 2), animation("WEBP", 2), animation("PNG", 2)):
        assert not decode_image(animated, FetchPolicy()).original_is_faithful  # only the first frame is kept
    assert not decode_image(animation("GIF", 1), FetchPolicy()).original_is_faithful  # GIF: not a stored format


async def test_one_users_fetches_are_limited_and_do_not_hold_up_another_user():
    running, most, served = {"A": 0, "B": 0}, {"A": 0, "B": 0}, {"A": 0, "B": 0}
    a_served_when_b_arrived = []

    async def slow(request):
        user = request.query["user"]
        if user == "B":
            a_served_when_b_arrived.append(served["A"])
        running[user] += 1
        most[user] = max(most[user], running[user])
        await asyncio.sleep(0.2)
        running[user] -= 1
        served[user] += 1
        return web.Response(body=png_bytes(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/slow.png", slow)
    async with serving(app) as host:
        policy = FetchPolicy(trusted_hosts=frozenset({host}), max_fetches_per_user=2)
        limiter = FetchLimiter(policy.max_fetches_per_user)
        async with make_session(policy) as session:
            async def fetch_as(user: str):
                async with limiter.slot(user):
                    return await fetch_image(session, f"http://{host}/slow.png?user={user}", policy)

            fetched = await asyncio.gather(*[fetch_as("A") for _ in range(5)], fetch_as("B"))
    assert len(fetched) == 6 and served == {"A": 5, "B": 1}
    assert most == {"A": 2, "B": 1}  # two of A's at a time, never more
    assert a_served_when_b_arrived == [0]  # B did not wait for any of A's
    assert len(limiter) == 0  # nobody fetching: nothing kept


async def test_one_host_cannot_take_every_connection():
    async with make_session(FetchPolicy()) as session:
        assert 0 < session.connector.limit_per_host < session.connector.limit
