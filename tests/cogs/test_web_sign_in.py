"""/web and the web app beside the bot: a member signs in by the link the bot DMs them, and
the server's rules (bans, membership of its gallery) hold on the web as on Discord."""

from __future__ import annotations

import re

import pytest
from helpers.discord_harness import GUILD_ID, MANAGE_MESSAGES, MODERATOR_ROLE_ID, USER
from helpers.ports import free_port
from playwright.async_api import expect
from sqlalchemy import func, select

from bot.config import WebSettings
from storage.models import Job, WebSignIn

MEMBER, STRANGER, MODERATOR = 7001, 7002, 7004


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
    await sign_in(page, link)
    other = await (await browser.new_context()).new_page()
    await other.goto(link)
    await other.click("button:text-is('Sign in')")
    await expect(other.locator(".message")).to_have_text(
        "❌ That sign-in link was used already or has expired: type /web in Discord for a new one.")
    await other.goto(link[:-3] + ("abc" if not link.endswith("abc") else "xyz"))
    await other.click("button:text-is('Sign in')")
    await expect(other.locator(".message")).to_contain_text("used already or has expired")
    await other.goto(link.rsplit("/", 1)[0] + "/me")
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
