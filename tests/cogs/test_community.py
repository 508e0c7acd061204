"""Running the bot for a community: /admin, banned words, bans, channels, roles, fast time.

Each rule from both sides, through the real discord.py stack: a member is refused (privately,
and nothing is written), an admin is allowed, and what the database holds afterwards.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.discord_harness import (
    ADMIN_ROLE_ID,
    CHANNEL,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    MODERATOR_ROLE_ID,
    OTHER_CHANNEL_ID,
    ROLE,
    SUPPORTER_ROLE_ID,
    THREAD_ID,
    USER,
    drawn_png,
    form_inputs,
)
from helpers.gates import hold_jobs_at_start
from helpers.job_messages import job_of_message
from sqlalchemy import func, select

from bot.config import ModerationSettings, QuotaSettings, load_settings
from bot.rules import Asker
from cogs.describe import HIDDEN
from generation.queue import QueueCaps
from storage import repository as repo
from storage.models import AuditEntry, Guild, Job, JobState, QueueMode

MEMBER, OTHER, ADMIN, MODERATOR = 6001, 6002, 6003, 6004


async def job_count(harness) -> int:
    async with harness.bot.sessionmaker() as session:
        return await session.scalar(select(func.count(Job.id)))


async def audit(harness) -> list[tuple[str, int | None]]:
    async with harness.bot.sessionmaker() as session:
        return [(entry.action, entry.target_user_id)
                for entry in await session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def admin(harness, name: str, **options) -> str:
    """An /admin subcommand by a member with the Admin role (Manage Server), or as `user_id` with
    `roles` (string options unless typed below)."""
    types = {"member": USER, "role": ROLE, "channel": CHANNEL, "answers": 5, "queued": 4,
             "fast_minutes_per_day": 10, "fast_hours_per_month": 10}
    roles = options.pop("roles", (ADMIN_ROLE_ID,))
    permissions = MANAGE_GUILD | MANAGE_MESSAGES if ADMIN_ROLE_ID in roles else MANAGE_MESSAGES if (
        MODERATOR_ROLE_ID in roles) else 0
    return harness.command(f"admin {name}", options.pop("user_id", ADMIN), permissions=permissions, roles=roles,
                           option_types={k: types[k] for k in options if k in types}, **options)


def embed_of(record) -> dict:
    """The embed of a private answer (a callback's, or a followup's after a deferral)."""
    return ((record.json or {}).get("data") or record.json)["embeds"][0]


def moderator(harness, name: str, **options) -> str:
    return admin(harness, name, user_id=MODERATOR, roles=(MODERATOR_ROLE_ID,), **options)


# --- /admin is for admins --------------------------------------------------------------


async def test_a_member_without_the_permission_is_refused_and_nothing_changes(harness):
    token = admin(harness, "words add", text="gore", user_id=MEMBER, roles=())
    assert "Manage Server" in await harness.ephemeral_text(token)
    token = admin(harness, "ban", member=OTHER, user_id=MEMBER, roles=())
    assert "Manage Messages" in await harness.ephemeral_text(token)
    # a moderator may moderate, not change the settings
    assert "Manage Server" in await harness.ephemeral_text(moderator(harness, "modes", allowed="relax"))
    # Manage Messages given in one channel only is not the server's: Discord's interaction permissions
    # count it, the bot does not
    channel_only = harness.command("admin ban", MEMBER, permissions=MANAGE_MESSAGES, option_types={"member": USER},
                                   member=OTHER)
    assert "Manage Messages" in await harness.ephemeral_text(channel_only)
    # nor may a moderator ban the server's owner (user 1 in the test server) or another moderator
    assert await harness.ephemeral_text(moderator(harness, "ban", member=1)) == (
        "❌ moderators and the server's owner cannot be banned from the bot")
    async with harness.bot.sessionmaker() as session:
        assert await session.get(Guild, GUILD_ID) is None
    assert await audit(harness) == []
    assert harness.bot.rules.server(GUILD_ID).own_words == ()


async def test_the_admin_commands_are_hidden_from_members(harness):
    """Discord shows /admin only to members with Manage Messages (and never in DMs)."""
    admin_group = harness.bot.tree.get_command("admin")
    assert admin_group.default_permissions.manage_messages
    assert admin_group.guild_only
    assert {command.name for command in admin_group.commands} >= {
        "show", "channel", "modes", "model", "nsfw", "role", "role-clear", "words", "ban", "unban", "jobs", "audit",
        "usage"}


# --- banned words ----------------------------------------------------------------------


async def test_a_banned_word_is_refused_privately_naming_it_and_nothing_is_written(harness):
    assert (await harness.ephemeral_text(admin(harness, "words add", text="Gore"))).startswith("✅")
    for prompt in ("a red circle, (G0RE:1.3)", "a red circle --no göre", "a blue square with gooooore"):
        text = await harness.ephemeral_text(harness.command("imagine", MEMBER, prompt=prompt))
        assert text == "❌ “Gore” is not allowed on this server: take it out of your prompt.", prompt
    assert await job_count(harness) == 0
    # whole words only: a word that contains it is fine
    done = await harness.result(harness.command("imagine", MEMBER, prompt="a gorey red circle"))
    assert done.files
    assert ("words", None) in await audit(harness)


async def test_removing_a_banned_word_lets_it_through_again(harness):
    await harness.ephemeral_text(admin(harness, "words add", text="blood bath"))
    refused = await harness.ephemeral_text(harness.command("imagine", MEMBER, prompt="a blood  bath, red"))
    assert "blood bath" in refused
    duplicate = await harness.ephemeral_text(admin(harness, "words add", text="BLOOD BATH"))
    assert duplicate == "❌ “BLOOD BATH” is banned already"
    assert (await harness.ephemeral_text(admin(harness, "words remove", text="blood bath"))).startswith("✅")
    assert (await harness.result(harness.command("imagine", MEMBER, prompt="a blood bath, red"))).files


async def test_the_global_list_applies_on_every_server_and_in_remix_edits(start_bot):
    harness = await start_bot(moderation=ModerationSettings(banned_words=("skull",)))
    refused = await harness.ephemeral_text(harness.command("imagine", MEMBER, prompt="a red $kull"))
    assert refused == "❌ “skull” is not allowed on this server: take it out of your prompt."

    # a remix may not bring it in either: the form is refused, no job is made
    await harness.result(harness.command("imagine", MEMBER, prompt="a red circle"))
    async with harness.bot.sessionmaker.begin() as session:
        await repo.set_user_settings(session, user_id=MEMBER, remix=True)
    form = await harness.form(harness.press(harness.message_of_job(1), "job:r:1", MEMBER))
    (prompt_input,) = form_inputs(form)
    token = harness.submit_form(form["custom_id"], {prompt_input: "a red skull"}, MEMBER)
    assert "“skull” is not allowed" in await harness.ephemeral_text(token)
    assert await job_count(harness) == 1


async def test_describe_hides_the_suggestions_that_name_a_banned_word(harness):
    picture = drawn_png("square", "blue", "white")
    plain = harness.command("describe", MEMBER, files={"image": ("shape.png", picture)})
    answer = await harness.discord.wait_for(lambda: next(
        (r for r in harness.of(plain) if r.method == "PATCH" and "**Describe**" in (r.content or "")), None))
    lines = answer.content.splitlines()[1:]
    suggestions = [set(line.split(" ", 1)[1].replace(",", " ").split()) for line in lines]
    # a word some suggestions use and others do not: both kinds are then shown
    banned = sorted(word for word in set().union(*suggestions) if word.isalpha() and len(word) > 3
                    and 0 < sum(word in words for words in suggestions) < len(suggestions))[0]
    await harness.ephemeral_text(admin(harness, "words add", text=banned))

    token = harness.command("describe", MEMBER, files={"image": ("shape.png", picture)})
    answer = await harness.discord.wait_for(lambda: next(
        (r for r in harness.of(token) if r.method == "PATCH" and "**Describe**" in (r.content or "")), None))
    shown = answer.content.splitlines()[1:]
    kept = [number for number, words in enumerate(suggestions, start=1) if banned not in words]
    assert [f"describe:{number}" for number in kept] == answer.custom_ids()
    for number, line in enumerate(shown, start=1):
        assert banned not in line.replace(",", " ").split() and line.endswith(HIDDEN) != (number in kept)


# --- bans ---------------------------------------------------------------------------------


async def test_a_ban_refuses_commands_and_buttons_on_old_grids_until_unbanned(harness):
    grid = await harness.result(harness.command("imagine", MEMBER, prompt="a red circle"))
    async with harness.bot.sessionmaker() as session:
        (job,) = list(await session.scalars(select(Job)))

    token = moderator(harness, "ban", member=MEMBER, reason="spam")
    assert (await harness.ephemeral_text(token)).startswith("✅")
    refusal = "❌ This server's moderators have banned you from the bot (spam)."
    assert await harness.ephemeral_text(harness.command("imagine", MEMBER, prompt="a blue square")) == refusal
    assert await harness.ephemeral_text(harness.command("info", MEMBER)) == refusal
    assert await harness.ephemeral_text(harness.press(grid.message_id, f"job:v:{job.id}:1", MEMBER)) == refusal
    assert await job_count(harness) == 1
    # others are not concerned
    assert (await harness.result(harness.command("imagine", OTHER, prompt="a blue square"))).files

    token = moderator(harness, "unban", member=MEMBER)
    assert (await harness.ephemeral_text(token)).startswith("✅")
    assert (await harness.result(harness.press(grid.message_id, f"job:v:{job.id}:1", MEMBER))).files
    assert [entry for entry in await audit(harness)] == [("ban", MEMBER), ("unban", MEMBER)]

    shown = await harness.ephemeral_reply(moderator(harness, "audit"))
    lines = embed_of(shown)["description"].splitlines()
    assert f"<@{MODERATOR}> unban" in lines[0] and f"<@{MODERATOR}> ban" in lines[1]


async def test_a_ban_cancels_the_members_waiting_jobs_and_survives_a_restart(start_bot):
    harness = await start_bot()
    gate = hold_jobs_at_start(harness.bot.jobs)  # (the `gate` fixture would start a second bot on the same data)
    harness.command("imagine", MEMBER, prompt="a {red, blue, green} circle")
    await harness.discord.wait_for(lambda: harness.bot.jobs.scheduler.queued_for(MEMBER))
    await harness.ephemeral_text(moderator(harness, "ban", member=MEMBER))
    gate.set()
    async with harness.bot.sessionmaker() as session:
        jobs = list(await session.scalars(select(Job)))
    waiting = [job for job in jobs if job.state != JobState.RUNNING]
    assert waiting and all(job.state == JobState.CANCELLED for job in waiting)
    await harness.bot.close()

    restarted = await start_bot()
    assert "banned" in await restarted.ephemeral_text(restarted.command("imagine", MEMBER, prompt="a red star"))


async def grid_message(harness, user_id: int, prompt: str) -> str:
    """The id of the message with a new grid of `user_id`'s, once the bot has recorded it."""
    result = await harness.result(harness.command("imagine", user_id, prompt=prompt))
    message_id = harness.message_of_job(int(result.custom_ids()[0].split(":")[2]))
    await job_of_message(harness.bot, message_id)
    return message_id


async def test_a_moderators_delete_of_someone_elses_result_is_audited(harness):
    grid = await grid_message(harness, MEMBER, "a red circle")
    harness.react(grid, "❌", MODERATOR, moderator=True)
    await harness.discord.wait_for(lambda: grid in harness.discord.deleted)
    for _ in range(100):  # the audit is written just after the delete
        if await audit(harness):
            break
        await asyncio.sleep(0.02)
    assert await audit(harness) == [("delete", MEMBER)]
    # the owner's own delete is theirs to make: not audited
    mine = await grid_message(harness, OTHER, "a blue square")
    harness.react(mine, "❌", OTHER)
    await harness.discord.wait_for(lambda: mine in harness.discord.deleted)
    await asyncio.sleep(0.1)
    assert await audit(harness) == [("delete", MEMBER)]


# --- channels ---------------------------------------------------------------------------


async def test_once_a_channel_answers_the_bot_answers_only_there_and_in_its_threads(start_bot):
    harness = await start_bot(thread=True)
    token = admin(harness, "channel", channel=CHANNEL_ID, answers=True)
    assert (await harness.ephemeral_text(token)).startswith("✅")
    elsewhere = await harness.ephemeral_text(harness.command("imagine", MEMBER, prompt="a red circle",
                                                             channel_id=OTHER_CHANNEL_ID))
    assert elsewhere == f"❌ The bot answers only in <#{CHANNEL_ID}> on this server."
    assert await job_count(harness) == 0
    assert (await harness.result(harness.command("imagine", MEMBER, prompt="a red circle"))).files
    assert (await harness.result(harness.command("imagine", MEMBER, prompt="a red circle",
                                                 channel_id=THREAD_ID))).files
    # admins can still change the rules from anywhere
    token = admin(harness, "channel", channel=CHANNEL_ID, answers=False, channel_id=OTHER_CHANNEL_ID)
    assert (await harness.ephemeral_text(token)).startswith("✅")
    assert (await harness.result(harness.command("imagine", MEMBER, prompt="a red circle",
                                                 channel_id=OTHER_CHANNEL_ID))).files


# --- modes and roles ---------------------------------------------------------------------


async def test_turbo_for_a_role_that_may_and_not_for_one_that_may_not(harness):
    await harness.ephemeral_text(admin(harness, "modes", allowed="fast relax", default="fast"))
    token = admin(harness, "role", role=SUPPORTER_ROLE_ID, modes="turbo")
    assert (await harness.ephemeral_text(token)).startswith("✅")

    refused = await harness.ephemeral_text(harness.command("imagine", MEMBER, prompt="a red circle --turbo",
                                                           roles=(MODERATOR_ROLE_ID,)))  # a role with no turbo
    assert refused == ("❌ Turbo mode is not available to you here: use --fast or --relax; /settings changes your "
                       "default.")
    assert await harness.ephemeral_text(harness.command("turbo", MEMBER)) == (
        "❌ Turbo mode is not available to you here: use /fast, /relax.")
    assert await job_count(harness) == 0

    done = await harness.result(harness.command("imagine", OTHER, prompt="a red circle --turbo",
                                                roles=(SUPPORTER_ROLE_ID,)))
    assert done.content.endswith("(turbo)")
    async with harness.bot.sessionmaker() as session:
        (job,) = list(await session.scalars(select(Job)))
    assert (job.user_id, job.mode) == (OTHER, QueueMode.TURBO)


async def test_the_servers_default_mode_applies_to_members_who_chose_none(harness):
    await harness.ephemeral_text(admin(harness, "modes", allowed="fast relax", default="relax"))
    done = await harness.result(harness.command("imagine", MEMBER, prompt="a red circle"))
    assert done.content.endswith("(relaxed)")


async def test_unknown_modes_and_versions_are_refused_with_what_exists(harness):
    assert await harness.ephemeral_text(admin(harness, "modes", allowed="fast ludicrous")) == (
        "❌ modes are turbo, fast, relax (separated by spaces), not “fast ludicrous”")
    assert await harness.ephemeral_text(admin(harness, "model", version="v9")) == (
        "❌ there is no version “v9”: choose one of builtin, or `default`")
    assert (await harness.ephemeral_text(admin(harness, "model", version="builtin"))).startswith("✅")
    assert harness.bot.rules.default_version(_asker()) == "builtin"


def _asker():
    return Asker(MEMBER, GUILD_ID, CHANNEL_ID)


# --- fast time -------------------------------------------------------------------------


@pytest.mark.parametrize(("quotas", "spent", "back"), [
    (QuotaSettings(fast_seconds_per_day=1), "today", "at 00:00 UTC"),
    (QuotaSettings(fast_seconds_per_month=1), "this month", "on the 1st, 00:00 UTC"),
])
async def test_fast_time_spent_in_the_middle_of_a_burst_sends_the_rest_to_relax(start_bot, quotas, spent, back):
    harness = await start_bot(quotas=quotas)
    modes = []
    for number in range(12):
        used = await harness.bot.rules.fast_time(_asker())
        so_far = used.used_today if spent == "today" else used.used_this_month
        token = harness.command("imagine", MEMBER, prompt=f"a red circle --seed {number}")
        done = await harness.result(token)
        modes.append(done.content.rsplit("(", 1)[1].rstrip(")"))
        if modes[-1] == "relaxed":
            assert so_far >= 1  # relaxed only once the second was used
            notice = await harness.ephemeral_text(token)
            assert notice.startswith(f"⏳ Your fast time for {spent} (1 s) is used up: this runs in relax mode.")
            break
        assert so_far < 1
    assert modes[0] == "fast" and modes[-1] == "relaxed", modes
    info = await harness.ephemeral_reply(harness.command("info", MEMBER))
    fields = {field["name"]: field["value"] for field in info.json["data"]["embeds"][0]["fields"]}
    assert f"{spent}: " in fields["Fast time"] and f"0 s left (relax until it comes back {back})" in fields["Fast time"]

    # a role with unlimited fast time keeps its holders in fast mode
    unlimited = {"fast_minutes_per_day" if spent == "today" else "fast_hours_per_month": 0}
    assert (await harness.ephemeral_text(admin(harness, "role", role=SUPPORTER_ROLE_ID, **unlimited))).startswith("✅")
    done = await harness.result(harness.command("imagine", MEMBER, prompt="a red circle",
                                                roles=(SUPPORTER_ROLE_ID,)))
    assert done.content.endswith("(fast)")


async def test_reactions_pass_the_same_rules_and_a_public_refusal_never_names_the_banned_word(harness):
    """🔄 on a grid whose prompt was banned since: refused in the channel without the word, nothing
    queued; a banned member's 🔄 ✉️ ❤️ do nothing at all; ❌ by the owner still deletes."""
    result = await harness.result(harness.command("imagine", MEMBER, prompt="a bloody red circle"))
    grid = harness.message_of_job(int(result.custom_ids()[0].split(":")[2]))
    await job_of_message(harness.bot, grid)
    await harness.ephemeral_text(admin(harness, "words add", text="bloody"))
    harness.react(grid, "🔄", OTHER)
    said = await harness.discord.wait_for(lambda: [r for r in harness.discord.accepted(
        "POST", f"/channels/{CHANNEL_ID}/messages") if f"<@{OTHER}>" in (r.content or "")])
    assert said[0].content == (f"<@{OTHER}> ❌ That prompt has a word this server does not allow (/imagine it to "
                               "see which, privately).")
    assert "bloody" not in said[0].content.lower()
    assert await job_count(harness) == 1

    await harness.ephemeral_text(moderator(harness, "ban", member=OTHER))
    posts_before = len(harness.discord.find("POST", "/channels/"))
    for emoji in ("🔄", "✉️", "❤️"):
        harness.react(grid, emoji, OTHER)
    harness.react(grid, "❌", MEMBER)  # handled after the others, in order
    await harness.discord.wait_for(lambda: grid in harness.discord.deleted)
    assert len(harness.discord.find("POST", "/channels/")) == posts_before  # no DM, no message, no job
    assert await job_count(harness) == 1
    async with harness.bot.sessionmaker() as session:
        assert await repo.list_favourites(session, user_id=OTHER) == []


async def test_a_burst_sent_at_once_is_counted_as_it_is_queued_not_once_it_has_run(start_bot):
    """Six /imagine sent together, with fast time left for about two more jobs: the first ones
    run fast, the rest relaxed (each told so), not all six fast because none had finished."""
    harness = await start_bot()
    await harness.result(harness.command("imagine", MEMBER, prompt="a red circle"))  # what a job costs here
    async with harness.bot.sessionmaker() as session:
        spent = await session.scalar(select(Job.gpu_seconds))
    assert spent and spent > 0
    harness.bot.rules = type(harness.bot.rules)(replace(harness.bot.settings, quotas=replace(
        harness.bot.settings.quotas, fast_seconds_per_day=max(1, round(3.5 * spent)))), harness.bot.sessionmaker)
    await harness.bot.rules.load()
    tokens = [harness.command("imagine", MEMBER, prompt=f"a blue square --seed {number}") for number in range(6)]
    modes = [(await harness.result(token)).content.rsplit("(", 1)[1].rstrip(")") for token in tokens]
    # about 2.5 jobs' time was left (requests sent together are admitted in no set order)
    assert set(modes) == {"fast", "relaxed"} and 1 <= modes.count("fast") <= 4, modes
    for token, mode in zip(tokens, modes, strict=True):
        if mode == "relaxed":
            assert (await harness.ephemeral_text(token)).startswith("⏳ Your fast time for today")
    async with harness.bot.sessionmaker() as session:  # what ran fast stayed near the limit
        fast_seconds = await session.scalar(select(func.sum(Job.gpu_seconds)).where(Job.mode == QueueMode.FAST))
    assert fast_seconds <= 3.5 * spent + 2 * spent * 2, (fast_seconds, spent)


async def test_waiting_caps_per_member_and_per_server_and_a_role_that_allows_more(start_bot):
    """config.toml's caps through the whole bot: six jobs at once (a permutation) are over a
    member's 3 waiting; a role that allows 8 lets them in; the server's 8 then refuses the next 6."""
    settings = load_settings(Path(__file__).resolve().parents[2] / "config.toml")
    caps = QueueCaps(queued={"turbo": 3, "fast": 3, "relax": 3}, guild_queued=8)
    harness = await start_bot(queue=replace(settings.queue, caps=caps))
    prompt = "a {red, blue, green, yellow, pink, white} circle --steps 30"
    refused = await harness.ephemeral_text(harness.command("imagine", MEMBER, prompt=prompt))
    assert refused == ("❌ this would put 6 of your fast jobs in the queue (the limit is 3): wait for some to "
                       "finish, or ask for fewer")
    assert await job_count(harness) == 0
    await harness.ephemeral_text(admin(harness, "role", role=SUPPORTER_ROLE_ID, queued=8))
    accepted = harness.command("imagine", MEMBER, prompt=prompt, roles=(SUPPORTER_ROLE_ID,))
    assert (await harness.result(accepted)).files  # the first of them done
    assert await job_count(harness) == 6
    refused = await harness.ephemeral_text(harness.command("imagine", OTHER, prompt=prompt,
                                                           roles=(SUPPORTER_ROLE_ID,)))
    assert refused.startswith("❌ this would give this server ")  # 6 + the first's unfinished over 8
    assert refused.endswith("jobs waiting or running (the limit is 8): ask for fewer, or try again when some "
                            "have finished")
    assert await job_count(harness) == 6


async def test_a_burst_past_the_cooldown_is_refused_and_writes_nothing(start_bot):
    harness = await start_bot()
    harness.bot.rules = type(harness.bot.rules)(replace(harness.bot.settings, queue=replace(
        harness.bot.settings.queue, burst="3/minute")), harness.bot.sessionmaker)
    await harness.bot.rules.load()
    assert (await harness.result(harness.command("imagine", MEMBER, prompt="a red circle"))).files
    assert (await harness.result(harness.press(harness.message_of_job(1), "job:u:1:0", MEMBER))).files
    # a press that opens a form and the form sent are one request: the third
    single = next(i for i, m in harness.discord.messages.items() if "job:zc:1:0" in str(m["components"]))
    form = await harness.form(harness.press(single, "job:zc:1:0", MEMBER))
    (factor_input,) = form_inputs(form)
    zoomed = await harness.result(harness.submit_form(form["custom_id"], {factor_input: "1.5"}, MEMBER))
    assert "Zoom Out" in zoomed.content and zoomed.files
    refused = await harness.ephemeral_text(harness.command("imagine", MEMBER, prompt="a red circle"))
    assert refused.startswith("❌ You are sending requests too fast: wait ")
    assert await job_count(harness) == 2
    assert (await harness.result(harness.command("imagine", OTHER, prompt="a red circle"))).files


# --- reports -------------------------------------------------------------------------------


async def test_usage_and_a_members_jobs_for_moderators(harness):
    await harness.result(harness.command("imagine", MEMBER, prompt="a red circle"))
    await harness.result(harness.command("imagine", MEMBER, prompt="a blue square"))
    await harness.result(harness.command("imagine", OTHER, prompt="a green star"))
    usage = await harness.ephemeral_reply(moderator(harness, "usage"))
    lines = embed_of(usage)["description"].splitlines()
    assert lines[0].startswith(f"<@{MEMBER}>: 2 jobs") and lines[1].startswith(f"<@{OTHER}>: 1 jobs")
    jobs = await harness.ephemeral_reply(moderator(harness, "jobs", member=MEMBER))
    listed = embed_of(jobs)["description"].splitlines()
    assert [line.split(" · ")[1] for line in listed] == ["a blue square", "a red circle"]
