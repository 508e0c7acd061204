"""Persistent buttons: the custom_id carries the action, the job and the picture.

`job:<action>:<job id>[:<index>]` (well under Discord's 100 characters). Nothing else
is kept in memory: the job comes from the database when the button is pressed, so a
button on a week-old message still works after a restart.

What a press does is the Imagine cog's business: it registers itself as the bot's
`job_buttons` handler when it loads. A press while no handler is loaded (the cog is
being reloaded) gets a private "try again".
"""

from __future__ import annotations

import enum
import re
from typing import Protocol

import discord

from bot.replies import report_failure, tell_privately
from bot.rules import let_in


class Action(enum.StrEnum):
    PICK = "u"  # U1–U4: post one picture of the grid with its own buttons
    VARY = "v"  # V1–V4: variations of one picture, with the presser's variability setting
    REROLL = "r"  # 🔄
    UPSCALE_SUBTLE = "us"
    UPSCALE_CREATIVE = "uc"
    VARY_SUBTLE = "vs"
    VARY_STRONG = "vx"
    VARY_REGION = "rg"
    ZOOM_2 = "z2"
    ZOOM_15 = "z15"
    ZOOM_CUSTOM = "zc"
    PAN_LEFT = "pl"
    PAN_RIGHT = "pr"
    PAN_UP = "pu"
    PAN_DOWN = "pd"
    SQUARE = "sq"
    FAVOURITE = "fav"


ACTIONS = "|".join(sorted((a.value for a in Action), key=len, reverse=True))


class JobButtonHandler(Protocol):
    async def on_job_button(self, interaction: discord.Interaction, action: Action, job_id: int,
                            index: int | None) -> None: ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button],
                template=rf"job:(?P<action>{ACTIONS}):(?P<job_id>[0-9]+)(?::(?P<index>[0-9]))?$"):
    def __init__(self, action: Action, job_id: int, index: int | None = None, *, label: str | None = None,
                 emoji: str | None = None, style: discord.ButtonStyle = discord.ButtonStyle.secondary,
                 row: int | None = None) -> None:
        custom_id = f"job:{action.value}:{job_id}" + (f":{index}" if index is not None else "")
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id, row=row))
        self.action, self.job_id, self.index = action, job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> JobButton:
        index = int(match["index"]) if match["index"] is not None else None
        return cls(Action(match["action"]), int(match["job_id"]), index)

    async def callback(self, interaction: discord.Interaction) -> None:
        if not await let_in(interaction):  # a banned member, or a channel the bot no longer answers in
            return
        handler: JobButtonHandler | None = getattr(interaction.client, "job_buttons", None)
        if handler is None:
            await tell_privately(interaction, "❌ The buttons are being reloaded: press it again in a moment.")
            return
        try:
            await handler.on_job_button(interaction, self.action, self.job_id, self.index)
        except Exception as error:
            await report_failure(interaction, error, f"button {self.action.value} on job {self.job_id}", self.job_id)


def grid_view(job_id: int, count: int = 4) -> discord.ui.View:
    """Under a grid: U1–U4 and 🔄 on the first row, V1–V4 on the second."""
    view = discord.ui.View(timeout=None)
    for index in range(count):
        view.add_item(JobButton(Action.PICK, job_id, index, label=f"U{index + 1}", row=0))
    view.add_item(JobButton(Action.REROLL, job_id, emoji="🔄", row=0))
    for index in range(count):
        view.add_item(JobButton(Action.VARY, job_id, index, label=f"V{index + 1}", row=1))
    return view


def single_view(job_id: int, index: int, *, square: bool = True) -> discord.ui.View:
    """Under one picture: upscales, variations, zooms, pans (and Make Square when it is not
    square), and ❤️."""
    view = discord.ui.View(timeout=None)
    rows: list[list[tuple[Action, str | None, str | None]]] = [
        [(Action.UPSCALE_SUBTLE, "Upscale (Subtle)", "⬆️"), (Action.UPSCALE_CREATIVE, "Upscale (Creative)", "⬆️"),
         (Action.VARY_SUBTLE, "Vary (Subtle)", "🪄"), (Action.VARY_STRONG, "Vary (Strong)", "🪄"),
         (Action.VARY_REGION, "Vary (Region)", "🖌️")],
        [(Action.ZOOM_2, "Zoom Out 2x", "🔍"), (Action.ZOOM_15, "Zoom Out 1.5x", "🔍"),
         (Action.ZOOM_CUSTOM, "Custom Zoom", "🔍")] + ([] if square else [(Action.SQUARE, "Make Square", "↔️")]),
        [(Action.PAN_LEFT, None, "⬅️"), (Action.PAN_RIGHT, None, "➡️"), (Action.PAN_UP, None, "⬆️"),
         (Action.PAN_DOWN, None, "⬇️"), (Action.FAVOURITE, None, "❤️")],
    ]
    for row_number, row in enumerate(rows):
        for action, label, emoji in row:
            view.add_item(JobButton(action, job_id, index, label=label, emoji=emoji, row=row_number))
    return view
