"""Switching model versions: resident models against loading on every switch, in one run.

    .venv/bin/python bench/model_switch_bench.py [--jobs 10] [--steps 4]

Two versions on the built-in weights (each loaded from disk on its own, as two
checkpoints would be). Prints the seconds for `--jobs` grids alternating between the
two versions with `max_resident_gib` 0 (one model at a time: every switch loads) and
with room for both, against the same jobs all on one version; the goal is that
alternating between resident versions costs nothing measurable (ratio ≈ 1.00). Then
the queue side: four users alternating two versions, the model switches a one-model
engine makes with and without the scheduler's preference for the loaded model.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace


def catalog(max_resident_gib: float):
    from generation.builtin import LORA_DIR
    from generation.catalog import ModelCatalog, ModelVersion
    from generation.memory import MemorySettings

    versions = {name: ModelVersion(name, "builtin") for name in ("v6", "niji")}
    return ModelCatalog(versions=versions, default_version="v6", lora_dir=LORA_DIR,
                        memory=MemorySettings(max_resident_gib=max_resident_gib))


def seconds_for(engine, versions: list[str], steps: int) -> float:
    from generation.engine import Imagine
    from generation.prompt import parse_prompt

    (request,) = parse_prompt(f"a red circle on a white background --steps {steps}")
    started = time.perf_counter()
    for number, version in enumerate(versions):
        engine.run(Imagine(replace(request, params=replace(request.params, version=version)), seed=number))
    return time.perf_counter() - started


def queue_switches() -> tuple[int, int]:
    from generation.queue import FairScheduler, QueueCaps

    def run(prefer: bool) -> int:
        scheduler = FairScheduler(QueueCaps(running={"turbo": 99, "fast": 99, "relax": 99},
                                            queued={"turbo": 99, "fast": 99, "relax": 99}))
        for round_ in range(4):
            for user in range(4):
                scheduler.add(10 * user + round_, user, "fast", model="v6" if user % 2 else "niji")
        loaded, switches = None, 0
        while (job := scheduler.take_next((loaded,) if prefer and loaded else ())) is not None:
            switches += loaded is not None and job.model != loaded
            loaded = job.model
            scheduler.finish(job.job_id)
        return switches
    return run(False), run(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    from generation.library_logs import route_library_logs

    route_library_logs()  # before diffusers is imported
    from generation.engine import Engine

    alternating = ["v6", "niji"] * (args.jobs // 2)
    one_version = ["v6"] * len(alternating)
    roomy = Engine(catalog(max_resident_gib=64))
    roomy.model("v6"), roomy.model("niji")  # both loaded before the clock starts, as after the first switch
    single = Engine(catalog(max_resident_gib=0))
    single.model("v6")
    seconds_for(roomy, ["v6"], args.steps)  # warm-up
    same = seconds_for(roomy, one_version, args.steps)
    resident = seconds_for(roomy, alternating, args.steps)
    reloading = seconds_for(single, alternating, args.steps)
    size = roomy.model("v6").weight_bytes / 2**20
    print(f"{len(alternating)} grids at {args.steps} steps, built-in model ({size:.0f} MiB of weights per version)")
    print(f"  one version:                       {same:6.2f} s")
    print(f"  alternating, both resident:        {resident:6.2f} s  ({resident / same:.2f}x)")
    print(f"  alternating, one model at a time:  {reloading:6.2f} s  ({reloading / same:.2f}x)")
    plain, preferred = queue_switches()
    print(f"4 users alternating two versions, 16 jobs: {plain} model switches in strict turns, "
          f"{preferred} preferring the loaded model")


if __name__ == "__main__":
    main()
