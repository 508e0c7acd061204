"""Reading the bot's /metrics as a test sees it."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Figures:
    """Every sample, by (name, sorted labels); the answer checked to be Prometheus' text format."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}
