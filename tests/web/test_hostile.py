"""What a hostile browser (or a script pretending to be one) can send the web app, and what it
gets: a clear refusal, nothing written, nothing crashed."""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from helpers.discord_harness import drawn_png
from helpers.hostile_pictures import bomb_png
from helpers.ports import free_port
from helpers.web_pages import imagine
from PIL import Image
from playwright.async_api import expect

from bot.config import ModerationSettings, WebSettings
from storage import repository as repo
from web.app import allowed_hosts
from web.identity import SECRET_ENV, public_origin, secret_key

SCRIPT = "<script>window.pwned = 1</script><img src=x onerror=window.pwned=1>"


async def session_with_token(url: str) -> tuple[aiohttp.ClientSession, str]:
    """A client that loaded Create (so it has a session cookie) and the CSRF token of its forms."""
    client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client.get(url + "/") as response:
        page = await response.text()
    return client, re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def picture_form(csrf: str | None, prompt: str, *pictures: tuple[str, bytes, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    if csrf is not None:
        form.add_field("csrf", csrf)
    form.add_field("prompt", prompt)
    for name, data, content_type in pictures:
        form.add_field("images", io.BytesIO(data), filename=name, content_type=content_type)
    return form


async def test_a_form_without_the_sessions_token_or_from_another_site_is_refused_and_writes_nothing(web):
    client, csrf = await session_with_token(web.url)
    async with client:
        async with client.post(web.url + "/imagine", data={"prompt": "a red circle"}) as response:
            assert response.status == 403
            assert "That form came from an old or another page" in await response.text()
        async with client.post(web.url + "/imagine", data={"prompt": "a red circle", "csrf": "x" * 43}) as response:
            assert response.status == 403
        async with client.post(web.url + "/imagine", data={"prompt": "a red circle", "csrf": csrf},
                               headers={"Origin": "https://evil.example"}) as response:
            assert response.status == 403
    async with aiohttp.ClientSession() as stranger, stranger.post(  # another browser: its own session and token
            web.url + "/imagine", data={"prompt": "a red circle", "csrf": csrf}) as response:
        assert response.status == 403
    assert await web.jobs() == []


async def test_oversized_and_unannounced_bodies_are_refused_before_they_are_read(web):
    client, csrf = await session_with_token(web.url)
    async with client:
        big = picture_form(csrf, "a cat", *[(f"{n}.png", b"\0" * (11 * 1024 * 1024), "image/png") for n in range(5)])
        async with client.post(web.url + "/imagine", data=big) as response:
            assert response.status == 413
            assert "at most 5 pictures of 10 MiB each" in await response.text()

        async def chunked():
            yield f"csrf={csrf}&prompt=a+cat".encode()
        async with client.post(web.url + "/imagine", data=chunked(),
                               headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 411
        long_field = {"csrf": csrf, "prompt": "a cat", "index": "0" * 70_000, "action": "v"}
        async with client.post(web.url + "/jobs/1/act", data=long_field) as response:
            assert response.status == 413
    assert await web.jobs() == []


async def test_uploads_get_the_same_checks_as_links(web):
    client, csrf = await session_with_token(web.url)
    async with client:
        cases = [
            (("notes.png", b"hello, not a picture", "image/png"),
             "❌ the picture: that is not a picture in a format this bot reads (PNG, JPEG, WEBP, GIF)"),
            (("page.html", b"<html></html>", "text/html"), "❌ the picture (page.html) is not a picture"),
            (("bomb.png", bomb_png(), "image/png"),
             "❌ the picture: the picture has too many pixels: at most 40 megapixels are accepted"),
        ]
        for upload, refusal in cases:
            async with client.post(web.url + "/imagine", data=picture_form(csrf, "a red circle", upload)) as response:
                page = await response.text()
            assert response.status == 400
            assert html.unescape(re.search(r'<p class="error" role="alert">(.*?)</p>', page).group(1)) == refusal
        good = ("circle.png", drawn_png("circle", "red"), "image/png")
        async with client.post(web.url + "/imagine", data=picture_form(csrf, "a red circle --iw 1", good),
                               allow_redirects=False) as response:
            assert response.status == 303
    (job,) = await web.jobs()
    assert len(job.request["options"]["inputs"]) == 1
    assert job.request["image_urls"] == [f"{web.url}/inputs/{job.request['options']['inputs'][0]}"]
    await web.settled(job.id)


async def test_a_prompt_with_markup_is_shown_as_text_everywhere(web, page):
    await page.goto(web.url + "/")
    await page.fill("#prompt", f"a red circle {SCRIPT}")
    await page.click("button:text-is('Imagine')")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    await expect(page.locator("h1.prompt-text")).to_have_text(f"a red circle {SCRIPT}")
    job_id = int(page.url.rsplit("/", 1)[1])
    await web.settled(job_id)
    for address in ("/me", f"/jobs/{job_id}", f"/jobs/{job_id}/0"):
        await page.goto(web.url + address)
        assert await page.evaluate("window.pwned") is None
        assert await page.locator("script:not([src])").count() == 0


async def test_made_up_ids_actions_and_regions_are_refused_in_words(web, page):
    async with aiohttp.ClientSession() as client:
        for address in ("/jobs/99999999999999999999999", "/jobs/0", "/jobs/5", "/images/123/thumb.webp",
                        "/inputs/..%2F..%2Fbot.db", "/inputs/abc.png", "/jobs/1/9"):
            async with client.get(web.url + address) as response:
                assert response.status == 404, address
    job_id = await imagine_done(web, page, "a red circle on a white background --seed 2")
    async with browser_client(page) as (client, csrf):
        for form in ({"action": "nope"}, {"action": "v", "index": "12"}, {"action": "v", "index": "-1"},
                     {"action": "v", "index": "1e9"}, {"action": "v", "index": "05"}, {"action": "v", "index": "²"}):
            async with client.post(f"{web.url}/jobs/{job_id}/act", data={"csrf": csrf, **form}) as response:
                assert response.status == 400, form
                assert "That is not something a picture can do." in await response.text()
        for box, refusal in (({"left": "0.5", "top": "0.5", "right": "0.4", "bottom": "0.9"},
                              "❌ the region must lie on the picture: draw it again"),
                             ({"left": "nan", "top": "0", "right": "1", "bottom": "1"},
                              "❌ the region must lie on the picture: draw it again"),
                             ({"left": "0.5", "top": "0.5", "right": "0.55", "bottom": "0.55"},
                              "❌ the region is too small: draw a bigger one"),
                             ({}, "❌ draw the region on the picture first")):
            async with client.post(f"{web.url}/jobs/{job_id}/act", data={"csrf": csrf, "action": "rg", "index": "0",
                                                                         "from": "picture", **box}) as response:
                assert response.url.path == f"/jobs/{job_id}/0"
                assert refusal in html.unescape(await response.text()), box
        async with client.post(f"{web.url}/jobs/{job_id}/act",
                               data={"csrf": csrf, "action": "zc", "index": "0", "factor": "inf"}) as response:
            assert "❌ the zoom factor is a number from 1 to 2, like 1.5" in await response.text()
    assert len(await web.jobs()) == 1


async def test_banned_words_are_refused_on_the_web_naming_them(start_web, page):
    web = await start_web(moderation=ModerationSettings(banned_words=("triangle",)))
    await page.goto(web.url + "/")
    await page.fill("#prompt", "a red TRIANGLE on a white background")
    await page.click("button:text-is('Imagine')")
    await expect(page.locator(".error")).to_have_text(
        "❌ “triangle” is not allowed on this server: take it out of your prompt.")
    assert await web.jobs() == []


async def imagine_done(web, page, prompt: str) -> int:
    job_id = await imagine(page, web.url, prompt)
    await web.settled(job_id)
    return job_id


@contextlib.asynccontextmanager
async def browser_client(page) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """An HTTP client with the browser page's cookies (its session) and the CSRF token of its forms."""
    cookies = {cookie["name"]: cookie["value"] for cookie in await page.context.cookies()}
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    async with aiohttp.ClientSession(cookies=cookies, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        yield client, csrf


async def test_the_thumbnails_are_small_webps_of_the_stored_pictures(web, page):
    job_id = await imagine_done(web, page, "a blue circle on a white background --ar 2:1")
    job = await web.job(job_id)
    response = await page.request.get(f"{web.url}/images/{job.images[0].id}/thumb.webp")
    thumb = Image.open(io.BytesIO(await response.body()))
    assert thumb.format == "WEBP" and max(thumb.size) <= 512
    assert abs(thumb.width / thumb.height - 2.0) < 0.1
    others = [f"{web.url}/images/{image.id}/thumb.webp" for image in job.images[1:]] * 8  # made at once, by many
    answers = await asyncio.gather(*(page.request.get(address) for address in others))
    assert [answer.status for answer in answers] == [200] * len(others)
    assert len({await answer.body() for answer in answers}) == 3


async def test_another_host_name_is_refused_so_a_rebound_dns_name_reaches_nothing(web):
    async with aiohttp.ClientSession() as client:
        async with client.get(web.url + "/", headers={"Host": "evil.example:8080"}) as response:
            assert response.status == 400
        async with client.get(web.url + "/", headers={"Host": "localhost"}) as response:
            assert response.status == 200


async def test_behind_a_proxy_a_form_from_the_public_address_is_taken(start_web):
    web = await start_web(web=WebSettings(port=free_port(), public_url="https://imagine.example.org"))
    async with aiohttp.ClientSession() as client:  # as the proxy passes it on: the browser spoke https
        async with client.get(web.url + "/") as response:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await response.text()).group(1)
            session = response.cookies["imagine_session"]
            assert session["secure"] and session["httponly"]  # sent back by the browser over https only
        cookie = {"Cookie": f"imagine_session={session.value}"}
        form = {"csrf": csrf, "prompt": "a red circle"}
        async with client.post(web.url + "/imagine", data=form, allow_redirects=False,
                               headers={"Origin": "https://imagine.example.org", **cookie}) as response:
            assert response.status == 303
        async with client.post(web.url + "/imagine", data=form, allow_redirects=False,
                               headers={"Origin": "https://elsewhere.example.org", **cookie}) as response:
            assert response.status == 403
    (job,) = await web.jobs()
    await web.settled(job.id)


async def test_absurd_ids_and_page_numbers_are_a_404_or_the_first_page_never_a_500(web):
    async with aiohttp.ClientSession() as client:
        for address in ("/jobs/" + "9" * 5000, "/images/" + "1" * 20 + "/thumb.webp", "/jobs/1/" + "7" * 30):
            async with client.get(web.url + address) as response:
                assert response.status == 404, address
        for page in ("²", "0", "-3", "9" * 5000, "1e3"):
            async with client.get(web.url + "/me", params={"page": page}) as response:
                assert response.status == 200, page


async def test_many_hearts_at_once_make_one_favourite(web, page):
    job_id = await imagine_done(web, page, "a red circle on a white background")
    async with browser_client(page) as (client, csrf):
        async def press():
            async with client.post(f"{web.url}/jobs/{job_id}/act", allow_redirects=False,
                                   data={"csrf": csrf, "action": "fav", "index": "1"}) as response:
                return response.status
        assert await asyncio.gather(*(press() for _ in range(6))) == [303] * 6
    async with web.bot.sessionmaker() as session:
        favourites = await repo.list_favourites(session, user_id=1)
    assert len(favourites) <= 1  # pressed an even or odd number of times: on or off, never twice


async def test_a_member_may_follow_a_few_jobs_live_not_a_hundred(web, page):
    web.held.clear()
    job_id = await imagine(page, web.url, "a red circle")
    await page.goto(web.url + "/")  # the job's own page (one live stream) is left
    async with browser_client(page) as (client, _):
        streams = [await client.get(f"{web.url}/jobs/{job_id}/events") for _ in range(8)]
        try:
            assert [stream.status for stream in streams] == [200] * 8
            async with client.get(f"{web.url}/jobs/{job_id}/events") as refused:
                assert refused.status == 429
                assert "You are following 8 jobs live already" in await refused.text()
        finally:
            for stream in streams:
                stream.close()
    web.held.set()
    await web.settled(job_id)


def test_a_signing_key_cut_short_is_made_again(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    (tmp_path / "web-secret").write_text("")
    key = secret_key(tmp_path)
    assert len(key) >= 32 and (tmp_path / "web-secret").read_text() == key
    assert secret_key(tmp_path) == key  # kept
    assert oct((tmp_path / "web-secret").stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(ValueError, match="too short"):
        secret_key(tmp_path)


def test_the_public_address_is_read_as_browsers_say_an_origin_and_ipv6_hosts_in_brackets():
    assert public_origin("HTTPS://Imagine.Example.org:443/") == "https://imagine.example.org"
    assert public_origin("http://example.org:8080") == "http://example.org:8080"
    assert public_origin("https://[2001:db8::1]/") == "https://[2001:db8::1]"
    assert public_origin("") is None
    assert allowed_hosts(WebSettings(bind="::1"), local=False) == ["127.0.0.1", "localhost", "[::1]", "[::1]"]
    assert allowed_hosts(WebSettings(bind="0.0.0.0", public_url="https://imagine.example.org"), local=False)[-1] == (
        "imagine.example.org")
    assert allowed_hosts(WebSettings(bind="0.0.0.0"), local=False) == ["*"]  # docs/web.md: set public_url
    assert allowed_hosts(WebSettings(bind="0.0.0.0"), local=True) == ["127.0.0.1", "localhost", "[::1]"]
