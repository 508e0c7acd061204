"""What a person does in the web app's pages, for the browser tests and scripts/web_screenshots.py."""

from __future__ import annotations

import re

from playwright.async_api import Page


async def imagine(page: Page, url: str, prompt: str) -> int:
    """Type a prompt on Create and send it; the id of the job whose page the browser lands on."""
    await page.goto(url + "/")
    await page.fill("#prompt", prompt)
    await page.click("button:text-is('Imagine')")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    return int(page.url.rsplit("/", 1)[1])
