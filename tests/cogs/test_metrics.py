"""/metrics and /health for operators (bot/metrics.py), scraped while the bot works."""

from __future__ import annotations

import aiohttp
from helpers.metrics import scrape
from helpers.ports import free_port

from bot.config import MetricsSettings

MEMBER = 8001



async def test_metrics_count_jobs_per_state_and_model_and_health_answers(start_bot):
    port = free_port()
    harness = await start_bot(metrics=MetricsSettings(port=port))
    before = await scrape(port)
    assert before[("imagine_jobs_started_total", ())] == 0
    assert before[("imagine_queue_depth", (("mode", "fast"),))] == 0
    assert before[("imagine_undelivered_results", ())] == 0

    await harness.result(harness.command("imagine", MEMBER, prompt="a red circle --steps 3"))
    token = harness.command("imagine", MEMBER, prompt="a blue square --steps 3")
    await harness.result(token)
    figures = await scrape(port)
    assert figures[("imagine_jobs_started_total", ())] == 2
    assert figures[("imagine_jobs_finished_total", (("state", "done"),))] == 2
    assert figures[("imagine_job_seconds_count", (("model", "builtin"),))] == 2
    assert figures[("imagine_job_seconds_sum", (("model", "builtin"),))] > 0
    assert 0 < figures[("imagine_worker_busy_ratio", (("worker", "local"),))] <= 1
    assert figures[("imagine_worker_last_heartbeat_seconds", (("worker", "local"),))] > 1.7e9
    assert figures[("imagine_jobs_running", ())] == 0

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/health") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"
    await harness.bot.jobs.close()  # the queue stops: a supervisor is told
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/health") as response:
        assert response.status == 503
        assert (await response.json())["problems"] == ["the job queue is not running"]


async def test_metrics_are_off_unless_a_port_is_set(harness):
    assert harness.bot.metrics is None
