"""The local executor: work runs in its thread, progress comes back on the loop, cancel stops it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from generation.executor import JobCancelled, LocalExecutor, Progress


def stepping_work(steps: int, seconds_per_step: float, seen_threads: list[str] | None = None):
    def work(report, token):
        if seen_threads is not None:
            seen_threads.append(threading.current_thread().name)
        for step in range(1, steps + 1):
            if token.cancelled:
                return f"stopped at {step}"
            time.sleep(seconds_per_step)  # stands in for a denoising step (blocking, off the loop)
            report(Progress(step, steps))
        return "done"
    return work


async def test_progress_then_result_off_the_loop():
    executor = LocalExecutor()
    threads: list[str] = []
    try:
        handle = executor.submit(1, stepping_work(5, 0.01, threads))
        assert executor.free_slots == 0
        events = [(e.step, e.percent) async for e in handle.events()]
        assert events == [(1, 20), (2, 40), (3, 60), (4, 80), (5, 100)]
        assert await handle.result() == "done"
        assert threads == ["generation"] and threading.current_thread().name != "generation"
        assert executor.free_slots == 1
    finally:
        await executor.close()


async def test_the_loop_keeps_running_while_work_blocks():
    executor = LocalExecutor()
    try:
        handle = executor.submit(1, stepping_work(20, 0.02))
        lags = []
        while not handle._result.done():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)
        assert max(lags) < 0.1
    finally:
        await executor.close()


async def test_cancel_while_running_stops_at_the_next_step():
    executor = LocalExecutor()
    try:
        handle = executor.submit(1, stepping_work(1000, 0.005))
        async for event in handle.events():
            if event.step == 3:
                handle.cancel()
        with pytest.raises(JobCancelled):
            await handle.result()
        assert executor.free_slots == 1
    finally:
        await executor.close()


async def test_cancel_before_start_never_runs_it():
    executor = LocalExecutor()
    ran = []
    try:
        first = executor.submit(1, stepping_work(3, 0.02))
        second = executor.submit(2, lambda report, token: ran.append("second"))
        second.cancel()
        assert await first.result() == "done"
        with pytest.raises(JobCancelled, match="before it started"):
            await second.result()
        assert ran == []
    finally:
        await executor.close()


async def test_an_error_in_the_work_reaches_the_caller_and_the_thread_goes_on():
    executor = LocalExecutor()
    try:
        def broken(report, token):
            raise RuntimeError("CUDA out of memory")
        with pytest.raises(RuntimeError, match="out of memory"):
            await executor.submit(1, broken).result()
        assert await executor.submit(2, stepping_work(1, 0)).result() == "done"
    finally:
        await executor.close()
