"""How the bot answers people: the rules every reply and message follows (who it may ping,
Discord's content limit, private refusals, failures that are logged and not shown)."""

from __future__ import annotations

import contextlib
import logging

import discord

log = logging.getLogger(__name__)

CONTENT_LIMIT = 2000  # Discord refuses longer message content (400, code 50035)
FAILURE_TEXT = "❌ Something went wrong on our side{where}; it has been logged. Try again in a moment."


def duration(seconds: float) -> str:
    """`1 h 5 min`, `10 min`, `2 min 5 s`, `40 s`: how long, as /info and /admin say it."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    return f"{seconds} s"


def mention_only(user_id: int) -> discord.AllowedMentions:
    """The one person a message may ping: whoever it is for. A prompt that carries `<@someone>`,
    `<@&role>` or `@everyone` pings nobody else (the client's default is no mentions at all)."""
    return discord.AllowedMentions(users=[discord.Object(user_id)], roles=False, everyone=False, replied_user=False)


def fit_content(text: str) -> str:
    """Content cut to Discord's limit with an ellipsis: the last guard before a request."""
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT - 1] + "…"


PUBLIC_PLACEHOLDER = "public_placeholder"  # interaction.extras: a public "thinking…" nothing has filled yet


async def defer_thinking(interaction: discord.Interaction) -> None:
    """Answer with Discord's public "thinking…" placeholder, and remember its message id so the
    job message can still be edited through the channel once the interaction token expires.

    Discord makes the first followup after it replace the placeholder, public whatever the
    followup asks; so a private answer must take the placeholder away first (`refuse`), and
    whoever fills it (a job's progress, a U1–U4 post) calls `placeholder_filled`."""
    response = await interaction.response.defer(thinking=True)
    interaction.extras["original_message_id"] = response.message_id if response is not None else None
    interaction.extras[PUBLIC_PLACEHOLDER] = True


def placeholder_filled(interaction: discord.Interaction) -> None:
    interaction.extras.pop(PUBLIC_PLACEHOLDER, None)


async def refuse(interaction: discord.Interaction, text: str) -> None:
    """A private refusal, whether or not the interaction was already answered or deferred (a
    public "thinking…" placeholder is taken away first, else the refusal would replace it for
    everyone to see)."""
    text = fit_content(text)
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True)
        return
    if interaction.extras.pop(PUBLIC_PLACEHOLDER, False):
        with contextlib.suppress(discord.NotFound):
            await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True)


async def tell_privately(interaction: discord.Interaction, text: str) -> None:
    """`refuse`, for the last word to the user: a Discord error is logged, not raised."""
    try:
        await refuse(interaction, text)
    except discord.HTTPException as error:
        log.warning("could not answer user %s: %s", interaction.user.id, error)


async def report_failure(interaction: discord.Interaction, error: BaseException, what: str,
                         job_id: int | None = None) -> None:
    """Log `error` with its traceback; tell the user only that it failed (and the job, if any)."""
    log.error("%s failed for user %s", what, interaction.user.id, exc_info=error)
    await tell_privately(interaction, FAILURE_TEXT.format(where=f" (job {job_id})" if job_id is not None else ""))
