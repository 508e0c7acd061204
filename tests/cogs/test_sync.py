"""`python -m bot sync`: the slash commands are registered with Discord, to one server or globally."""

from __future__ import annotations

from pathlib import Path

from helpers.discord_harness import APPLICATION_ID, GUILD_ID

from bot.bot import sync_commands
from bot.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


async def test_sync_to_one_server_then_globally(fake_discord):
    settings = load_settings(ROOT / "config.toml")
    names = await sync_commands(settings, "fake-token", GUILD_ID)
    assert "imagine" in names
    (put,) = fake_discord.find("PUT", f"/applications/{APPLICATION_ID}/guilds/{GUILD_ID}/commands")
    imagine = next(command for command in put.json if command["name"] == "imagine")
    assert [(option["name"], option["required"]) for option in imagine["options"]] == [
        ("prompt", True), ("image", False)]
    blend = next(command for command in put.json if command["name"] == "blend")
    assert [option["name"] for option in blend["options"] if option["required"]] == ["image1", "image2"]
    assert {"imagine", "blend", "info", "cancel", "fast", "relax", "turbo", "settings", "history"} <= {
        command["name"] for command in put.json}

    assert "imagine" in await sync_commands(settings, "fake-token", None)
    assert fake_discord.find("PUT", f"/applications/{APPLICATION_ID}/commands")
