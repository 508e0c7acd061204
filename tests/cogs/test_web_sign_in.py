"""/web and the web app beside the bot: a member signs in by the link the bot DMs them, and
the server's rules (bans, membership of its gallery) hold on the web as on Discord."""

from __future__ import annotations

import re
import socket

import pytest
from helpers.discord_harness import (
    ADMIN_ROLE_ID,
    CHANNEL,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    MODERATOR_ROLE_ID,
    NSFW_CHANNEL_ID,
    USER,
)
from helpers.ports import free_port
from playwright.async_api import expect
from sqlalchemy import func, select

from bot.config import WebSettings
from storage.models import Job, WebSignIn

MEMBER, STRANGER, OTHER_MEMBER, ADMIN, MODERATOR = 7001, 7002, 7003, 7005, 7004


@pytest.fixture
async def beside(start_bot):
    """The bot with its web app on a free port of 127.0.0.1."""
    return await start_bot(web=WebSettings(port=free_port()))


async def sign_in_link(harness, user_id: int) -> str:
    """Type /web as `user_id`; the link the bot DMs them."""
    token = harness.command("web", user_id)
    assert (await harness.ephemeral_text(token)).startswith("📬 I sent you a sign-in link in DMs.")
    dm_channel = harness.discord.dm_channels[str(user_id)]
    dm = await harness.discord.wait_for(lambda: next(
        (r for r in harness.discord.requests if r.method == "POST" and r.accepted
         and r.path == f"/channels/{dm_channel}/messages" and "sign-in link" in r.json["content"]), None))
    assert dm.json["flags"] & 4  # SUPPRESS_EMBEDS: Discord's unfurler must not open it
    (link,) = re.findall(r"http://127\.0\.0\.1:\d+/signin/\S+", dm.json["content"])
    return link


async def sign_in(page, link: str) -> None:
    await page.goto(link)
    await page.click("button:text-is('Sign in')")
    await page.wait_for_url(re.compile(r"/me$"))


async def test_a_member_signs_in_by_the_link_and_sees_their_discord_jobs_and_the_web_ones_show_in_history(
        beside, page):
    await beside.result(beside.command("imagine", MEMBER, prompt="a red circle on a white background"))
    link = await sign_in_link(beside, MEMBER)
    await page.goto(link)
    await page.goto(link)  # opening it (as a link preview does) uses nothing up
    await page.click("button:text-is('Sign in')")
    await page.wait_for_url(re.compile(r"/me$"))
    await expect(page.locator(".history li .prompt-text")).to_have_text(["a red circle on a white background"])
    await expect(page.locator("nav a:text-is('Server gallery')")).to_be_visible()

    await page.goto(page.url.replace("/me", "/"))
    await page.fill("#prompt", "a blue square on a black background")
    await page.click("button:text-is('Imagine')")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    await expect(page.locator(".grid img")).to_have_count(4, timeout=120_000)
    async with beside.bot.sessionmaker() as session:
        web_job = await session.get(Job, int(page.url.rsplit("/", 1)[1]))
    assert (web_job.user_id, web_job.guild_id, web_job.channel_id) == (MEMBER, GUILD_ID, None)
    await beside.job_when(web_job.id, lambda job: job.delivery.value == "delivered")
    assert not any("a blue square" in str(r.json) for r in beside.discord.requests)  # the web's stays on the web
    history = await beside.ephemeral_reply(beside.command("history", MEMBER))
    fields = [field["name"] for field in ((history.json or {}).get("data") or history.json)["embeds"][0]["fields"]]
    assert fields[0].startswith(f"`{web_job.id}` imagine") and len(fields) == 2


async def test_a_link_works_once_and_a_forged_one_not_at_all(beside, page, browser):
    link = await sign_in_link(beside, MEMBER)
    await page.goto(link)
    await expect(page.locator(".message")).to_contain_text("signs you in as Discord member 7001, for Test server")
    other = await (await browser.new_context()).new_page()
    await other.goto(link)  # opened twice before it is used: two buttons, one sign-in
    await page.click("button:text-is('Sign in')")
    await page.wait_for_url(re.compile(r"/me$"))
    await other.click("button:text-is('Sign in')")
    used = "❌ That sign-in link was used already or has expired: type /web in Discord for a new one."
    await expect(other.locator(".message")).to_have_text(used)
    await other.goto(link)
    await expect(other.locator(".message")).to_have_text(used)
    forged = link[:-3] + ("abc" if not link.endswith("abc") else "xyz")
    assert (await other.goto(forged)).status == 400
    await expect(other.locator(".message")).to_have_text(used)
    assert (await other.goto(link.rsplit("/signin", 1)[0] + "/me")).status == 401
    async with beside.bot.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(WebSignIn)) == 0


async def test_an_expired_link_is_refused(start_bot, page):
    harness = await start_bot(web=WebSettings(port=free_port(), sign_in_minutes=0.02))  # 1.2 s
    link = await sign_in_link(harness, MEMBER)
    await page.goto(link)
    await page.wait_for_timeout(1500)
    await page.click("button:text-is('Sign in')")
    await expect(page.locator(".message")).to_contain_text("used already or has expired")


async def test_a_member_banned_after_signing_in_is_refused_on_the_web_as_on_discord(beside, page):
    await sign_in(page, await sign_in_link(beside, MEMBER))
    ban = beside.command("admin ban", MODERATOR, permissions=MANAGE_MESSAGES, roles=(MODERATOR_ROLE_ID,),
                         option_types={"member": USER}, member=MEMBER, reason="spam")
    assert (await beside.ephemeral_text(ban)).startswith("✅")
    await page.goto(page.url.replace("/me", "/"))
    await page.fill("#prompt", "a red circle")
    await page.click("button:text-is('Imagine')")
    banned = "❌ This server's moderators have banned you from the bot (spam)."
    await expect(page.locator(".error")).to_have_text(banned)
    async with beside.bot.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
    assert await beside.ephemeral_text(beside.command("web", MEMBER)) == banned


async def test_the_gallery_is_for_the_servers_members_only(beside, page, browser):
    await beside.result(beside.command("imagine", MEMBER, prompt="a green triangle on a white background"))
    await sign_in(page, await sign_in_link(beside, MEMBER))
    await page.click("nav a:text-is('Server gallery')")
    await expect(page.locator(".gallery img")).to_have_count(4)
    picture_page = page.url.split("/gallery")[0] + (await page.locator(".gallery a").first.get_attribute("href"))

    # someone who is no member of the server (any more): refused its gallery and its pictures
    stranger = await (await browser.new_context()).new_page()
    link = await sign_in_link(beside, STRANGER)
    beside.discord.remove_member(STRANGER)
    await sign_in(stranger, link)
    answer = await stranger.goto(page.url)
    assert answer.status == 403
    await expect(stranger.locator(".message")).to_have_text(
        "❌ That server's gallery is for its members: you are not one.")
    assert (await stranger.goto(picture_page)).status == 404


async def test_an_age_restricted_channels_pictures_stay_out_of_the_gallery_and_a_member_who_left_is_refused(
        beside, page, browser):
    await beside.result(beside.command("imagine", MEMBER, prompt="a red circle on a white background"))
    await beside.result(beside.command("imagine", MEMBER, prompt="a blue square on a black background",
                                       channel_id=NSFW_CHANNEL_ID))
    async with beside.bot.sessionmaker() as session:
        jobs = {job.prompt: job for job in await session.scalars(select(Job))}
    viewer = await (await browser.new_context()).new_page()
    await sign_in(viewer, await sign_in_link(beside, OTHER_MEMBER))
    await viewer.goto(viewer.url.replace("/me", f"/gallery/{GUILD_ID}"))
    await expect(viewer.locator(".gallery img")).to_have_count(4)  # the age-restricted channel's are not shown
    titles = {await link.get_attribute("title") for link in await viewer.locator(".gallery a").all()}
    assert titles == {"a red circle on a white background"}
    base = viewer.url.split("/gallery")[0]
    assert (await viewer.goto(f"{base}/jobs/{jobs['a blue square on a black background'].id}")).status == 404
    assert (await viewer.goto(f"{base}/jobs/{jobs['a red circle on a white background'].id}")).status == 200

    await sign_in(page, await sign_in_link(beside, MEMBER))  # the owner sees their own, wherever it was made
    assert (await page.goto(f"{base}/jobs/{jobs['a blue square on a black background'].id}")).status == 200

    beside.discord.remove_member(OTHER_MEMBER)
    beside.bot.membership.forget(GUILD_ID, OTHER_MEMBER)
    await viewer.goto(base + "/")
    await viewer.fill("#prompt", "a green star")
    await viewer.click("button:text-is('Imagine')")
    await expect(viewer.locator(".message")).to_have_text(
        "❌ You are not a member of that server (any more): type /web in a server you are in.")


async def test_the_web_is_not_a_channel_a_server_may_close(beside, page):
    token = beside.command("admin channel", ADMIN, permissions=MANAGE_GUILD | MANAGE_MESSAGES, roles=(ADMIN_ROLE_ID,),
                           option_types={"channel": CHANNEL, "answers": 5}, channel=CHANNEL_ID, answers=True)
    assert (await beside.ephemeral_text(token)).startswith("✅")
    await sign_in(page, await sign_in_link(beside, MEMBER))
    await page.goto(page.url.replace("/me", "/"))
    await page.fill("#prompt", "a red circle")
    await page.click("button:text-is('Imagine')")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    await beside.job_when(int(page.url.rsplit("/", 1)[1]), lambda job: job.delivery.value == "delivered")


async def test_with_its_port_taken_the_bot_serves_discord_without_its_web_app(start_bot, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        harness = await start_bot(web=WebSettings(port=taken.getsockname()[1]))
        assert harness.bot.web is None
        assert any("the Discord bot runs without its web app" in record.getMessage() for record in caplog.records)
        assert (await harness.result(harness.command("imagine", MEMBER, prompt="a red circle"))).files
        assert await harness.ephemeral_text(harness.command("web", MEMBER)) == (
            "❌ This bot runs without its web app (the operator's log says why).")
