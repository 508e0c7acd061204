"""Jobs that start from pictures, against the bare diffusers call each one wraps, side by side.

    .venv/bin/python bench/image_jobs_bench.py [--steps 20] [--rounds 3]

Prints, on the built-in model (grids of 4, the same steps, guidance and strength):
- image prompt and /blend vs `img2img(prompt, image, strength)`;
- an image prompt through an IP-Adapter (a tiny one built from a config, as in the
  tests) vs the text-to-image pipeline with that adapter kept loaded: the engine
  attaches it for the job and takes it off after;
- zoom out, pan and Vary (Region) vs `inpaint(prompt, image, mask_image, strength)`;
  each as the median of the rounds, alternating engine and bare calls, and their ratio
  (the engine adds preparing the canvas, previews every 5 steps and putting the kept
  pixels back);
- the memory the inpainting path adds: resident memory after loading the text-to-image
  pipeline, then after `from_pipe` makes the inpainting pipeline from it (shared
  weights: near zero), and whether the UNet is the same object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROMPT = "two yellow stars on a blue background"


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def median_seconds(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    from generation.builtin import LORA_DIR, MODEL_DIR
    from generation.canvas import collage, pan, region, zoom_out
    from generation.catalog import ModelCatalog, ModelVersion
    from generation.engine import (
        BLEND_STRENGTH,
        OUTPAINT_STRENGTH,
        REGION_STRENGTH,
        Blend,
        Engine,
        Imagine,
        Outpaint,
        Repaint,
        image_prompt_strength,
    )
    from generation.prompt import parse_prompt

    before = rss_mib()
    text2img = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False)
    loaded = rss_mib()
    inpaint = StableDiffusionInpaintPipeline.from_pipe(text2img)
    with_inpaint = rss_mib()
    img2img_bare = StableDiffusionImg2ImgPipeline.from_pipe(text2img)
    for pipe in (text2img, inpaint, img2img_bare):
        pipe.set_progress_bar_config(disable=True)

    catalog = ModelCatalog(versions={"builtin": ModelVersion("builtin", "builtin")}, default_version="builtin",
                           lora_dir=LORA_DIR)
    engine = Engine(catalog)
    (request,) = parse_prompt(f"{PROMPT} --steps {args.steps}")
    (image_request,) = parse_prompt(f"https://example.com/x.png {PROMPT} --iw 2 --steps {args.steps}")
    cfg = engine.model("builtin").default_cfg
    source = engine.run(Imagine(request, seed=1)).images[0]
    other = engine.run(Imagine(request, seed=2)).images[1]
    generators = lambda: [torch.Generator().manual_seed(s) for s in range(4)]  # noqa: E731
    common = {"num_inference_steps": args.steps, "guidance_scale": cfg, "negative_prompt": [""] * 4}

    def bare_img2img(image, strength):
        return lambda: img2img_bare([PROMPT] * 4, image=[image] * 4, strength=strength, generator=generators(),
                                    **common)

    def bare_inpaint(canvas, strength):
        width, height = canvas.image.size
        return lambda: inpaint([PROMPT] * 4, image=[canvas.image] * 4, mask_image=[canvas.mask] * 4,
                               strength=strength, width=width, height=height, generator=generators(), **common)

    from helpers.tiny_ip_adapter import write_tiny_ip_adapter

    adapter_dir = tempfile.TemporaryDirectory()
    weights = write_tiny_ip_adapter(Path(adapter_dir.name), text2img.unet)
    ip_catalog = replace(catalog, versions={"builtin": ModelVersion("builtin", "builtin", ip_adapter=str(weights))})
    ip_engine = Engine(ip_catalog)
    adapter_pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True, safety_checker=None,
                                                           requires_safety_checker=False)
    adapter_pipe.set_progress_bar_config(disable=True)
    adapter = ip_engine.model("builtin").ip_adapter
    adapter_pipe.register_modules(image_encoder=adapter.image_encoder, feature_extractor=adapter.feature_extractor)
    adapter_pipe.load_ip_adapter(adapter.state_dict, subfolder="", weight_name="", image_encoder_folder=None)
    adapter_pipe.set_ip_adapter_scale(1.0)

    cases = [
        ("image prompt, IP-Adapter", lambda: ip_engine.run(Imagine(image_request, seed=0, images=(source,))),
         lambda: adapter_pipe([PROMPT] * 4, ip_adapter_image=[[source]], generator=generators(), **common)),
        ("image prompt (--iw 2)", lambda: engine.run(Imagine(image_request, seed=0, images=(source,))),
         bare_img2img(source, image_prompt_strength(2))),
        ("/blend of 2", lambda: engine.run(Blend(request, (source, other), seed=0)),
         bare_img2img(collage([source, other], source.size, 0), BLEND_STRENGTH)),
        ("zoom out 2x", lambda: engine.run(Outpaint(request, source, seed=0, kind="zoom", factor=2.0)),
         bare_inpaint(zoom_out(source, 2.0, 16), OUTPAINT_STRENGTH)),
        ("pan right", lambda: engine.run(Outpaint(request, source, seed=0, kind="pan", direction="right")),
         bare_inpaint(pan(source, "right", 16), OUTPAINT_STRENGTH)),
        ("vary (region)", lambda: engine.run(Repaint(request, source, seed=0, box=(0.25, 0.25, 0.75, 0.75))),
         bare_inpaint(region(source, (0.25, 0.25, 0.75, 0.75), 4), REGION_STRENGTH)),
    ]
    print(f"built-in model, grids of 4, {args.steps} steps, median of {args.rounds}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'job':24} {'engine s':>9} {'bare s':>9} {'ratio':>7}")
    for name, engine_call, bare_call in cases:
        engine_call(), bare_call()  # warm-up
        engine_times, bare_times = [], []
        for _ in range(args.rounds):  # alternate, so both see the same machine state
            engine_times.append(median_seconds(engine_call, 1))
            bare_times.append(median_seconds(bare_call, 1))
        engine_s, bare_s = statistics.median(engine_times), statistics.median(bare_times)
        print(f"{name:24} {engine_s:9.3f} {bare_s:9.3f} {engine_s / bare_s:7.2f}")
    print(f"resident memory: {before:.0f} MiB before, {loaded:.0f} MiB with text-to-image, "
          f"{with_inpaint:.0f} MiB with inpainting too (+{with_inpaint - loaded:.1f} MiB); "
          f"same UNet object: {inpaint.unet is text2img.unet}")


if __name__ == "__main__":
    main()
