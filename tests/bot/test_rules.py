"""The rules a server sets (bot/rules.py), read from the database as /admin stores them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from bot.config import ModerationSettings, QuotaSettings, load_settings
from bot.rules import Asker, CommunityRules, Refused
from storage import repository as repo
from storage.models import Job, JobKind, QueueMode
from storage.repository import NewJob

GUILD, OTHER_GUILD, CHANNEL, THREAD, ELSEWHERE = 10, 11, 20, 21, 22
MEMBER, SUPPORTER, PATRON = 100, 200, 300


@pytest.fixture
def settings():
    from pathlib import Path

    base = load_settings(Path(__file__).resolve().parents[2] / "config.toml")
    return replace(base, quotas=QuotaSettings(fast_seconds_per_day=600, fast_seconds_per_month=6000),
                   moderation=ModerationSettings(banned_words=("skull",)))


async def rules_for(settings, sessionmaker) -> CommunityRules:
    rules = CommunityRules(settings, sessionmaker)
    await rules.load()
    return rules


async def finished(sessionmaker, user_id: int, mode: QueueMode, seconds: float, when: datetime) -> None:
    async with sessionmaker.begin() as session:
        job = await repo.enqueue_job(session, kind=JobKind.IMAGINE, user_id=user_id, request={}, mode=mode)
        await repo.record_images(session, job_id=job.id, images=[], gpu_seconds=seconds)
        await session.execute(update(Job).where(Job.id == job.id).values(finished_at=when))


async def test_roles_add_modes_and_a_channel_narrows_them(settings, sessionmaker):
    async with sessionmaker.begin() as session:
        await repo.set_guild_settings(session, guild_id=GUILD, allowed_modes=["fast", "relax"])
        await repo.set_role_rule(session, guild_id=GUILD, role_id=SUPPORTER, modes=["turbo"],
                                 fast_seconds_per_day=None, fast_seconds_per_month=None, queued=None)
        await repo.set_channel(session, guild_id=GUILD, channel_id=ELSEWHERE, allowed_modes=["relax", "turbo"])
    rules = await rules_for(settings, sessionmaker)
    assert rules.modes_for(Asker(MEMBER, GUILD, CHANNEL)) == ("fast", "relax")
    assert rules.modes_for(Asker(MEMBER, GUILD, CHANNEL, role_ids=frozenset({SUPPORTER}))) == ("turbo", "fast", "relax")
    assert rules.modes_for(Asker(MEMBER, GUILD, ELSEWHERE, role_ids=frozenset({SUPPORTER}))) == ("turbo", "relax")
    assert rules.modes_for(Asker(MEMBER, GUILD, ELSEWHERE)) == ("relax",)
    assert set(rules.modes_for(Asker(MEMBER, OTHER_GUILD, CHANNEL))) == set(settings.queue.allowed_modes)
    with pytest.raises(Refused, match="Turbo mode is not available to you here: use --fast or --relax"):
        await rules.admit(Asker(MEMBER, GUILD, CHANNEL), QueueMode.TURBO, [NewJob(JobKind.IMAGINE, {}, "a cat")])


async def test_bans_hold_on_their_server_only_and_threads_follow_their_channel(settings, sessionmaker):
    async with sessionmaker.begin() as session:
        await repo.ban_member(session, guild_id=GUILD, user_id=MEMBER, moderator_id=1, reason="spam")
        assert not await repo.ban_member(session, guild_id=GUILD, user_id=MEMBER, moderator_id=2, reason="again")
        await repo.set_channel(session, guild_id=GUILD, channel_id=CHANNEL, answers=True)
    rules = await rules_for(settings, sessionmaker)
    with pytest.raises(Refused, match=r"banned you from the bot \(spam\)"):
        rules.check_access(Asker(MEMBER, GUILD, CHANNEL))
    rules.check_access(Asker(MEMBER, OTHER_GUILD, CHANNEL))  # a ban is one server's: no server decides for another
    rules.check_access(Asker(MEMBER, None, 5))  # nor for DMs: there only the operator's allow_dms decides
    closed = await rules_for(replace(settings, moderation=replace(settings.moderation, allow_dms=False)),
                             sessionmaker)
    with pytest.raises(Refused, match="on servers only"):
        closed.check_access(Asker(SUPPORTER, None, 5))
    rules.check_access(Asker(SUPPORTER, GUILD, THREAD, parent_id=CHANNEL))
    with pytest.raises(Refused, match=f"only in <#{CHANNEL}>"):
        rules.check_access(Asker(SUPPORTER, GUILD, ELSEWHERE))

    async with sessionmaker.begin() as session:
        assert await repo.unban_member(session, guild_id=GUILD, user_id=MEMBER)
    await rules.load(GUILD)  # one server read again, as /admin does
    rules.check_access(Asker(MEMBER, GUILD, CHANNEL))


async def test_banned_words_are_the_global_list_and_the_servers_own(settings, sessionmaker):
    async with sessionmaker.begin() as session:
        await repo.set_guild_settings(session, guild_id=GUILD, banned_words=["gore"])
    rules = await rules_for(settings, sessionmaker)
    with pytest.raises(Refused, match="“skull”"):
        rules.check_words(Asker(MEMBER, OTHER_GUILD), ["a SKULL"])
    with pytest.raises(Refused, match="“gore”"):
        rules.check_words(Asker(MEMBER, GUILD), ["a cat --no g0re"])
    rules.check_words(Asker(MEMBER, OTHER_GUILD), ["a cat --no gore"])  # not banned there
    assert rules.allowed_words(Asker(MEMBER, GUILD), ["a cat", "a skull", "gore"]) == [True, False, False]


async def test_fast_time_counts_turbo_double_by_day_and_month_and_roles_give_more(settings, sessionmaker):
    now = datetime.now(UTC)
    await finished(sessionmaker, MEMBER, QueueMode.FAST, 200, now)
    await finished(sessionmaker, MEMBER, QueueMode.TURBO, 150, now)  # counts 300
    await finished(sessionmaker, MEMBER, QueueMode.RELAX, 5000, now)  # free
    await finished(sessionmaker, MEMBER, QueueMode.FAST, 999, now - timedelta(days=40))  # another month
    async with sessionmaker.begin() as session:
        await repo.set_role_rule(session, guild_id=GUILD, role_id=SUPPORTER, modes=[], fast_seconds_per_day=1200,
                                 fast_seconds_per_month=None, queued=20)
        await repo.set_role_rule(session, guild_id=GUILD, role_id=PATRON, modes=[], fast_seconds_per_day=0,
                                 fast_seconds_per_month=0, queued=None)
    rules = await rules_for(settings, sessionmaker)
    member = Asker(MEMBER, GUILD, CHANNEL)
    fast = await rules.fast_time(member)
    assert (fast.used_today, fast.per_day, fast.per_month, fast.spent) == (500, 600, 6000, None)
    await finished(sessionmaker, MEMBER, QueueMode.FAST, 100, now)
    admission = await rules.admit(member, QueueMode.FAST, [NewJob(JobKind.IMAGINE, {}, "a cat")])
    assert admission.mode == QueueMode.RELAX and admission.notice.startswith("⏳ Your fast time for today (10 min)")
    assert (await rules.admit(member, QueueMode.RELAX, [])).notice is None  # relax needs no fast time

    supporter = replace(member, role_ids=frozenset({SUPPORTER}))
    assert rules.fast_limits(supporter) == (1200, 6000)
    assert (await rules.admit(supporter, QueueMode.FAST, [])).mode == QueueMode.FAST
    assert rules.queued_caps(supporter) == {"turbo": 20, "fast": 20, "relax": 20}
    assert rules.fast_limits(replace(member, role_ids=frozenset({SUPPORTER, PATRON}))) == (0, 0)  # unlimited wins
    assert rules.queued_caps(member) is None


async def test_a_server_default_version_the_config_no_longer_has_is_ignored(settings, sessionmaker):
    async with sessionmaker.begin() as session:
        await repo.set_guild_settings(session, guild_id=GUILD, default_version="gone", default_mode=QueueMode.RELAX)
        await repo.set_guild_settings(session, guild_id=OTHER_GUILD, default_version="builtin")
    rules = await rules_for(settings, sessionmaker)
    assert rules.default_version(Asker(MEMBER, GUILD)) is None
    assert rules.default_version(Asker(MEMBER, OTHER_GUILD)) == "builtin"
    async with sessionmaker.begin() as session:
        user = await repo.ensure_user(session, user_id=MEMBER)
    assert rules.default_mode(Asker(MEMBER, GUILD), user) == QueueMode.RELAX
    assert rules.default_mode(Asker(MEMBER, OTHER_GUILD), user) == QueueMode(settings.queue.default_mode)


async def test_the_burst_allowance_refuses_past_its_rate_per_member(settings, sessionmaker):
    rules = await rules_for(replace(settings, queue=replace(settings.queue, burst="2 per 30 seconds")), sessionmaker)
    member = Asker(MEMBER, GUILD)
    rules.check_burst(member)
    rules.check_burst(member)
    with pytest.raises(Refused, match=r"wait (30|29|[12]?\d) s"):
        rules.check_burst(member)
    rules.check_burst(Asker(SUPPORTER, GUILD))  # another member's allowance is their own


async def test_usage_report_and_audit_are_per_server(settings, sessionmaker):
    now = datetime.now(UTC)
    for user_id, seconds in ((MEMBER, 30), (SUPPORTER, 90), (SUPPORTER, 10)):
        async with sessionmaker.begin() as session:
            job = await repo.enqueue_job(session, kind=JobKind.IMAGINE, user_id=user_id, request={},
                                         mode=QueueMode.FAST, guild_id=GUILD)
            await repo.record_images(session, job_id=job.id, images=[], gpu_seconds=seconds)
        async with sessionmaker.begin() as session:
            await repo.record_audit(session, guild_id=GUILD if user_id == MEMBER else OTHER_GUILD, moderator_id=1,
                                    action="ban", target_user_id=user_id)
    async with sessionmaker() as session:
        report = await repo.usage_report(session, guild_id=GUILD, since=now - timedelta(hours=1))
        assert [(row.user_id, row.jobs, row.gpu_seconds) for row in report] == [(SUPPORTER, 2, 100), (MEMBER, 1, 30)]
        assert [entry.target_user_id for entry in await repo.list_audit(session, guild_id=GUILD)] == [MEMBER]
