"""Waiting for the bot to record a message it posted for a job (it writes just after Discord answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from storage import repository as repo
from storage.models import Job, JobMessage


async def job_of_message(bot, message_id: str | int, timeout: float = 30.0) -> Job:
    """The job a posted message belongs to, once the bot has recorded it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with bot.sessionmaker() as session:
            if (job := await repo.get_job_by_message(session, message_id=int(message_id))) is not None:
                return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"message {message_id} was never recorded for a job")
        await asyncio.sleep(0.01)


async def messages_when(bot, job_id: int, condition: Callable[[list[JobMessage]], bool],
                        timeout: float = 30.0) -> list[JobMessage]:
    """The messages recorded for a job (oldest first), once `condition` holds for them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with bot.sessionmaker() as session:
            messages = await repo.messages_of(session, job_id=job_id)
        if condition(messages):
            return messages
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id}'s messages never got there: {[m.kind for m in messages]}")
        await asyncio.sleep(0.01)
