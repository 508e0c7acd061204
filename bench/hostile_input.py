"""Hostile input benchmark: fuzzed prompts, the slowest parse, and the event loop under bad pictures.

    .venv/bin/python bench/hostile_input.py [--prompts 10000] [--seed 1]

Printed:
1. Fuzzing the prompt parser with `--prompts` prompts from a seeded generator (tokens of the
   prompt language, long numbers, deep brackets, random text) and as many again from
   hypothesis: crashes (any exception but PromptError; goal 0) and prompts whose shown form
   (`to_prompt`) does not parse back to the same request (goal 0).
2. The slowest parse of any prompt, fuzzed or built to be slow (deep nesting, the most
   permutations, long numbers), within the limits (goal < 50 ms).
3. The real bot on the fake Discord of tests/helpers (the built-in model, as `run` builds
   it): the longest event-loop stall while it refuses the 5,999-character nested-brace
   prompt and handles a /blend of five hostile pictures (four honest 24-megapixel JPEGs, then
   a 144-byte WebP that claims 40 megapixels), and the growth of the process's peak memory
   (goal: stall < 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fake_bot import bot_on_fake_discord  # noqa: E402
from helpers.discord_harness import (  # noqa: E402
    attachment_payload,
    command_payload,
    with_attachments,
)
from helpers.hostile_pictures import animated_webp  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from bot.fetch import FetchPolicy  # noqa: E402
from generation.prompt import PromptError, PromptLimits, parse_prompt  # noqa: E402

TOKENS = ["cat", "a red circle", "::", "::0", "::2", "::-1", "::-0.5", "::1.23456", ":", ",", "\\", "\\,", "\\{",
          "\\}", "\\\\", "{", "}", "{a, b}", "{x, {y, z}}", "(", ")", "[", "]", "(red:1.3)", "(a:1.2.3)", "BREAK",
          "—", "–", "-", "--no", "--ar", "2:3", "16:9", "--iw", "1.5", "--seed", "9", "--tile", "--q", ".25",
          "--repeat", "3", "--steps", "12", "--sampler", "euler a", "<lora:pixel:0.5>", "<lora:x>", "<hypernet:y>",
          "https://a.example/x.png", "https://a.example/page", "<@123>", "@everyone", " ", "  ", "\n", "é", "🙂"]


def seeded_prompt(rng: random.Random) -> str:
    """One prompt from the generator: language tokens, with now and then something extreme."""
    words = [rng.choice(TOKENS) for _ in range(rng.randint(0, 24))]
    roll = rng.random()
    if roll < 0.05:
        words.insert(rng.randrange(len(words) + 1), "9" * rng.choice((20, 400, 4301)))
    elif roll < 0.10:
        depth = rng.randint(5, 40)
        words.insert(rng.randrange(len(words) + 1), rng.choice("({[") * depth + "x" + rng.choice(")}]") * depth)
    elif roll < 0.15:
        words.append("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 200))))
    return rng.choice(("", " ")).join(words)


class FuzzTally:
    def __init__(self) -> None:
        self.tried = self.accepted = 0
        self.crashes: list[tuple[str, str]] = []
        self.round_trip_failures: list[str] = []
        self.slowest = (0.0, "")

    def parse(self, prompt: str) -> None:
        self.tried += 1
        started = time.perf_counter()
        try:
            requests = parse_prompt(prompt)
        except PromptError:
            requests = None
        except Exception as error:  # what the bench counts: anything a user's text could raise
            self.crashes.append((prompt[:80], f"{type(error).__name__}: {error}"[:120]))
            requests = None
        elapsed = time.perf_counter() - started
        self.slowest = max(self.slowest, (elapsed, prompt[:60]))
        if requests is None:
            return
        self.accepted += 1
        for request in requests:
            try:
                same = parse_prompt(request.to_prompt()) == [request]
            except PromptError:
                same = False
            if not same:
                self.round_trip_failures.append(prompt[:80])


def slow_prompts(limits: PromptLimits) -> dict[str, str]:
    """Prompts built to be as slow as the limits allow."""
    room = limits.max_input_length
    return {
        "nested braces, 5,999 characters": "{" * 2999 + "a" + "}" * 2999,
        "braces 10 deep, repeated to the length limit": ("{" * 10 + "a" + "}" * 10) * (room // 21),
        "10 permutations of 10 deep groups": "{a," + "{" * 9 + "b" + "}" * 9 + "}" + " x" * 100,
        "emphasis 10 deep, repeated": ("(" * 10 + "cat" + ")" * 10) * (room // 23),
        "700 nested (": "(" * 700 + "cat" + ")" * 700,
        "1,300 segments": "a::" * 1300,
        "10 permutations x 49 bracketed --no items": "{a,b,c,d,e,f,g,h,i,j} --no " + ", ".join(["((x:1.2) [y])"] * 49),
        "10 permutations x 49 weighted segments": "{a,b,c,d,e,f,g,h,i,j} " + " ".join(["(x:1.2) [y]::2"] * 49),
        "emphasis with 3,990-digit weight": "(a:" + "9" * (room - 10) + ")",
        "--no with 1,300 items": "cat --no " + "a," * 1300,
        "many escapes": "\\{" * (room // 2),
        "a 4,000-character word": "x" * room,
    }


def fuzz(count: int, seed: int) -> FuzzTally:
    tally = FuzzTally()
    rng = random.Random(seed)
    for _ in range(count):
        tally.parse(seeded_prompt(rng))

    @settings(max_examples=count, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(TOKENS), max_size=24).map("".join) | st.text(max_size=300))
    def from_hypothesis(prompt: str) -> None:
        tally.parse(prompt)

    from_hypothesis()
    return tally


# ---------------------------------------------------------------------------
# the bot under hostile pictures


def honest_photo(width: int = 6000, height: int = 4000) -> bytes:
    """A 24-megapixel JPEG that decodes in full: under every limit, and heavy to decode."""
    small = Image.effect_noise((width // 8, height // 8), 40).convert("RGB")
    buffer = io.BytesIO()
    small.resize((width, height)).save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


async def loop_stalls(stop: asyncio.Event, every: float = 0.005) -> float:
    """The longest time the loop was late waking a 5 ms sleep, in seconds."""
    worst = 0.0
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(every)
        worst = max(worst, time.perf_counter() - before - every)
    return worst


async def bot_under_hostile_input() -> None:
    with tempfile.TemporaryDirectory() as folder:
        bot, server = await bot_on_fake_discord(
            folder, images=FetchPolicy(allow_private_addresses=True))  # the fake CDN is on 127.0.0.1
        pictures = {f"photo{n}.jpg": honest_photo() for n in range(4)} | {"bomb.webp": animated_webp(6320, 6320)}

        stop = asyncio.Event()
        probe = asyncio.create_task(loop_stalls(stop))
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()

        braces = command_payload("imagine", {"prompt": "{" * 2999 + "a" + "}" * 2999}, 1)
        bot._connection.parsers["INTERACTION_CREATE"](braces)
        blend = command_payload("blend", {}, 2)
        with_attachments(blend, {f"image{n + 1}": attachment_payload(server, name, data)
                                 for n, (name, data) in enumerate(pictures.items())})
        bot._connection.parsers["INTERACTION_CREATE"](blend)

        def answer(token: str) -> str | None:
            for record in server.requests:
                body = record.json.get("data", record.json) if isinstance(record.json, dict) else {}
                if f"/{token}" in record.path and (body or {}).get("content", "").startswith("❌"):
                    return body["content"]
            return None

        refusals = await server.wait_for(lambda: (answer(braces["token"]), answer(blend["token"]))
                                         if answer(braces["token"]) and answer(blend["token"]) else None, 120)
        handled = time.perf_counter() - started
        stop.set()
        stall = await probe
        peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
        await bot.close()
        await server.close()

    print(f"bot: both refused in {handled:.2f} s; longest event-loop stall {stall * 1000:.1f} ms (goal < 100 ms); "
          f"peak memory grew {peak_growth / 1024:.0f} MiB")
    for label, text in zip(("nested braces", "blend of five"), refusals, strict=True):
        print(f"  {label}: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=10_000, help="prompts from the seeded generator "
                        "(and as many from hypothesis)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    started = time.perf_counter()
    tally = fuzz(args.prompts, args.seed)
    print(f"fuzz: {tally.tried} prompts ({tally.accepted} accepted) in {time.perf_counter() - started:.1f} s: "
          f"{len(tally.crashes)} crashes, {len(tally.round_trip_failures)} shown prompts that read back differently")
    for prompt, error in tally.crashes[:5]:
        print(f"  crash: {prompt!r}: {error}")
    for prompt in tally.round_trip_failures[:5]:
        print(f"  round trip: {prompt!r}")

    limits = PromptLimits()
    built = []
    for label, prompt in slow_prompts(limits).items():
        started = time.perf_counter()
        for _ in range(5):
            with contextlib.suppress(PromptError):
                parse_prompt(prompt, limits)
        built.append(((time.perf_counter() - started) / 5, label))
    worst, label = max(built)
    print(f"slowest parse: {max(worst, tally.slowest[0]) * 1000:.2f} ms (goal < 50 ms); built prompts: "
          f"{label} {worst * 1000:.2f} ms; fuzzed: {tally.slowest[0] * 1000:.2f} ms on {tally.slowest[1]!r}")
    for seconds, name in sorted(built, reverse=True):
        print(f"  {name:48s} {seconds * 1000:7.2f} ms")

    asyncio.run(bot_under_hostile_input())


if __name__ == "__main__":
    main()
