"""Screenshots of every page of the web app, for docs/web/ (look at them after a change to a page).

    .venv/bin/python scripts/web_screenshots.py [--out docs/web]

The real bot with its web app, on the fake Discord of tests/helpers (so that a member can
sign in by a /web link and see their server's gallery), the built-in model on this machine,
Debian's chromium through Playwright (scripts/test.sh installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from fake_bot import bot_on_fake_discord  # noqa: E402
from helpers.discord_harness import GUILD_ID  # noqa: E402
from helpers.gates import hold_jobs_at_start  # noqa: E402
from helpers.ports import free_port  # noqa: E402
from helpers.web_pages import imagine  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402

from bot.config import WebSettings  # noqa: E402

MEMBER = 9001
PROMPTS = ("a red circle on a blue background --ar 3:2", "a yellow star on a black background",
           "a green square on a white background --ar 2:3")


async def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        bot, fake = await bot_on_fake_discord(folder, web=WebSettings(port=free_port()))
        held = hold_jobs_at_start(bot.jobs)
        try:
            fake.add_member(MEMBER)
            url = bot.web.url
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=shutil.which("chromium"))
                page = await browser.new_page(viewport={"width": 1100, "height": 760})

                async def shot(name: str, full_page: bool = True) -> None:
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=out / f"{name}.png", full_page=full_page)

                await page.goto(await bot.web.sign_in_link(MEMBER, GUILD_ID))
                await shot("sign-in")
                await page.click("button:text-is('Sign in')")
                await page.wait_for_url(re.compile(r"/me$"))
                held.set()
                for prompt in PROMPTS[1:]:
                    await imagine(page, url, prompt)
                    await page.locator(".grid img").first.wait_for(timeout=120_000)

                held.clear()  # the next job waits at its start, then runs while the page watches
                await page.goto(url + "/")
                await page.fill("#prompt", PROMPTS[0])
                await shot("create")
                job_id = await imagine(page, url, PROMPTS[0])
                await page.wait_for_timeout(500)
                held.set()
                await page.wait_for_function(
                    "document.getElementById('preview') && !document.getElementById('preview').hidden")
                await shot("job-progress")
                await page.locator(".grid img").first.wait_for(timeout=120_000)
                await shot("job-grid")

                await page.goto(f"{url}/jobs/{job_id}/1")
                box = await page.locator("#picture").bounding_box()
                await page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.25)
                await page.mouse.down()
                await page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.75, steps=8)
                await page.mouse.up()
                await shot("picture-region")
                await page.click("button:text-is('❤️ Favourite')")

                await page.goto(url + "/me")
                await shot("my-pictures")
                await page.fill("input[name=q]", "star")
                await page.click("button:text-is('Search')")
                await shot("my-pictures-search")
                await page.goto(url + "/me/favourites")
                await shot("favourites")
                await page.goto(f"{url}/gallery/{GUILD_ID}")
                await shot("gallery")
                await page.goto(url + "/")
                await page.fill("#prompt", "a cat --ar 99:1")
                await page.click("button:text-is('Imagine')")
                await shot("create-mistake")
                await browser.close()
        finally:
            held.set()
            await bot.close()
            await fake.close()
    print(f"screenshots in {out}: {', '.join(sorted(path.name for path in out.glob('*.png')))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web")
    asyncio.run(run(parser.parse_args().out))


if __name__ == "__main__":
    main()
