"""Fidelity of the built-in model, measured on pictures from a plain diffusers pipeline.

    python -m generation.builtin.fidelity [--steps 20] [--sheet contact-sheet.png]

Prints, over a fixed set of prompts and seeds: colour accuracy, shape accuracy (by the
geometric test of analysis.py, and by the /describe captioner, a classifier trained on
the world's drawings), background accuracy, how much a negative prompt naming a colour
cuts that colour, each LoRA's style measure at weight 0 and 1, and whether each LoRA
keeps the fill colour asked for. The figures go in
MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import LORA_DIR, MODEL_DIR
from .analysis import (
    background_colour,
    blockiness,
    classify_shape,
    colour_share,
    dominant_colour,
    fill_colour,
    outline_darkness,
)
from .captioner import Captioner
from .world import SHAPE_COLOURS, SHAPES

GUIDANCE = 6.0
BACKGROUNDS = ("white", "black", "gray", "blue", "yellow", "pink")


@dataclass(frozen=True)
class Case:
    prompt: str
    colour: str | None = None
    shape: str | None = None
    background: str | None = None


def load_pipeline(model_dir: Path = MODEL_DIR):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts: list[str], seeds: list[int], *, steps: int, negative: list[str] | None = None,
             guidance: float = GUIDANCE, batch: int = 16, **kwargs) -> list[Image.Image]:
    """One picture per (prompt, seed), in batches, each seeded on its own."""
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch):
        chunk = slice(start, start + batch)
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[chunk]]
        out = pipe(prompts[chunk], negative_prompt=negative[chunk] if negative else None,
                   num_inference_steps=steps, guidance_scale=guidance, generator=generators, **kwargs)
        images.extend(out.images)
    return images


def cases() -> list[Case]:
    """Every shape colour with every shape once, on rotating backgrounds (36 prompts)."""
    result = []
    backgrounds = itertools.cycle(BACKGROUNDS)
    for colour, shape in itertools.product(SHAPE_COLOURS, SHAPES):
        background = next(b for b in backgrounds if b != colour)
        result.append(Case(f"a {colour} {shape} on a {background} background", colour, shape, background))
    return result


def measure(pipe, *, steps: int, seeds_per_case: int = 2) -> tuple[dict[str, float], list[tuple[str, Image.Image]]]:
    figures: dict[str, float] = {}
    samples: list[tuple[str, Image.Image]] = []
    all_cases = cases()
    prompts = [c.prompt for c in all_cases for _ in range(seeds_per_case)]
    seeds = [1000 + i for i in range(len(prompts))]
    images = generate(pipe, prompts, seeds, steps=steps)
    expected = [c for c in all_cases for _ in range(seeds_per_case)]
    figures["colour accuracy"] = float(np.mean([dominant_colour(i) == c.colour for i, c in zip(images, expected,
                                                                                                strict=True)]))
    figures["shape accuracy"] = float(np.mean([classify_shape(i, c.colour) == c.shape for i, c in zip(
        images, expected, strict=True)]))
    readings = [Captioner().read(image) for image in images]  # a learned shape classifier, beside the geometric one
    figures["shape accuracy (captioner)"] = float(np.mean([bool(r.shapes) and r.shapes[0].shape == c.shape
                                                           for r, c in zip(readings, expected, strict=True)]))
    for shape in SHAPES:
        figures[f"  {shape}s read as {shape}s (captioner)"] = float(np.mean([
            bool(r.shapes) and r.shapes[0].shape == shape for r, c in zip(readings, expected, strict=True)
            if c.shape == shape]))
    figures["background accuracy"] = float(np.mean([background_colour(i) == c.background for i, c in zip(
        images, expected, strict=True)]))
    samples += list(zip(prompts, images, strict=True))[::seeds_per_case]

    # a negative prompt naming a colour, against the same seeds without it
    for colour in ("red", "blue"):
        neutral = [f"a {shape}" for shape in SHAPES for _ in range(8)]
        seeds = list(range(2000, 2000 + len(neutral)))
        plain = generate(pipe, neutral, seeds, steps=steps)
        negative = generate(pipe, neutral, seeds, steps=steps, negative=[colour] * len(neutral))
        before = float(np.mean([colour_share(i, colour) for i in plain]))
        after = float(np.mean([colour_share(i, colour) for i in negative]))
        figures[f"{colour} share without / with negative '{colour}'"] = (before, after)  # type: ignore[assignment]
        samples += [(f"{neutral[0]} (no neg)", plain[0]), (f"{neutral[0]} --no {colour}", negative[0])]

    # LoRA styles at weight 0 and 1, on pictures with no black in them
    style_prompts = [f"a {c} {s} on a white background" for c in ("yellow", "cyan", "pink", "green") for s in SHAPES]
    style_seeds = list(range(3000, 3000 + len(style_prompts)))
    measures = {"niji": ("outline darkness", outline_darkness), "pixel": ("blockiness", blockiness)}
    fill_cases = [(c, s) for c in SHAPE_COLOURS if c not in ("white", "black") for s in SHAPES]
    fill_colours = [c for c, _ in fill_cases]
    fill_prompts = [f"a {c} {s} on a white background" for c, s in fill_cases]
    fill_seeds = list(range(4000, 4000 + len(fill_prompts)))
    for name, (label, metric) in measures.items():
        path = LORA_DIR / f"{name}.safetensors"
        if not path.exists():
            continue
        pipe.load_lora_weights(LORA_DIR, weight_name=path.name, adapter_name=name)
        for weight in (0.0, 1.0):
            pipe.set_adapters([name], adapter_weights=[weight])
            images = generate(pipe, style_prompts, style_seeds, steps=steps)
            figures[f"{name} LoRA {label} at weight {weight:g}"] = float(np.mean([metric(i) for i in images]))
            samples += [(f"<lora:{name}:{weight:g}> {style_prompts[k]}", images[k]) for k in (0, 5)]
        # the style must keep the colour asked for (a niji green square is pastel green)
        images = generate(pipe, fill_prompts, fill_seeds, steps=steps)
        figures[f"{name} LoRA fill colour accuracy at weight 1"] = float(np.mean([
            fill_colour(image) == colour for image, colour in zip(images, fill_colours, strict=True)]))
        samples += [(f"<lora:{name}:1> {fill_prompts[k]}", images[k]) for k in (4, 8)]
        pipe.delete_adapters([name])
    return figures, samples


def contact_sheet(samples: list[tuple[str, Image.Image]], columns: int = 8, scale: int = 2) -> Image.Image:
    """Samples enlarged, each with its prompt underneath."""
    cell_w, text_h = 64 * scale + 8, 30
    rows = (len(samples) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * (64 * scale + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (caption, image) in enumerate(samples):
        x, y = (index % columns) * cell_w, (index // columns) * (64 * scale + text_h)
        sheet.paste(image.resize((64 * scale, 64 * scale), Image.Resampling.NEAREST), (x + 4, y))
        words, lines = caption.split(), [""]
        for word in words:
            if len(lines[-1]) + len(word) > 22:
                lines.append("")
            lines[-1] = (lines[-1] + " " + word).strip()
        draw.multiline_text((x + 4, y + 64 * scale + 1), "\n".join(lines[:2]), fill="black", spacing=1)
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sheet", type=Path, help="write a contact sheet of samples here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pipe = load_pipeline(args.model)
    figures, samples = measure(pipe, steps=args.steps)
    for name, value in figures.items():
        if isinstance(value, tuple):
            before, after = value
            print(f"{name}: {before:.4f} / {after:.4f} (cut to {after / max(before, 1e-9):.0%})")
        else:
            print(f"{name}: {value:.3f}")
    if args.sheet:
        contact_sheet(samples).save(args.sheet)
        print(f"contact sheet: {args.sheet}")
    print(f"({time.perf_counter() - started:.0f} s, {args.steps} steps, guidance {GUIDANCE})")


if __name__ == "__main__":
    main()
