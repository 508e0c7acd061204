"""The shipped built-in model, loaded as any SD 1.5 folder is, offline, and checked on pictures.

Few steps and small batches: these check that prompts mean what they say, not the
model's best quality (the fidelity script measures that; see MODEL_CARD.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from generation.builtin import LORA_DIR, MODEL_DIR
from generation.builtin.analysis import (
    background_colour,
    blobs_of,
    blockiness,
    colour_share,
    dominant_colour,
    fill_colour,
    outline_darkness,
)
from generation.builtin.world import vocabulary

STEPS = 20


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def draw(pipe, prompt: str, seeds, negative: str | None = None, steps: int = STEPS, **kwargs):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe([prompt] * len(seeds), negative_prompt=[negative] * len(seeds) if negative else None,
                num_inference_steps=steps, guidance_scale=6.0, generator=generators, **kwargs).images


def test_the_shipped_weights_are_small_safetensors():
    files = [p for p in MODEL_DIR.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".ckpt", ".pt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in files) < 30 * 2**20
    assert {p.name for p in LORA_DIR.glob("*.safetensors")} >= {"niji.safetensors", "pixel.safetensors"}


def test_the_tokenizer_knows_every_caption_word(pipe):
    tokenizer = pipe.tokenizer
    assert tokenizer.model_max_length == 77
    for word in vocabulary():
        assert len(tokenizer(word).input_ids) == 3, word  # start, the word, end
    # any character has a token: nothing becomes the end token by accident
    ids = tokenizer("a red circle, (42%) é ✨").input_ids
    assert ids.count(tokenizer.eos_token_id) == 1


def test_colour_and_background_words_are_obeyed(pipe):
    cases = [("a red circle on a white background", "red", "white"),
             ("a blue square on a yellow background", "blue", "yellow"),
             ("a green triangle on a black background", "green", "black"),
             ("a yellow star on a blue background", "yellow", "blue")]
    colours = backgrounds = 0
    for prompt, colour, background in cases:
        for image in draw(pipe, prompt, seeds=[1, 2]):
            colours += dominant_colour(image) == colour
            backgrounds += background_colour(image) == background
    assert colours >= 7 and backgrounds >= 7


def test_two_means_two(pipe):
    seeds = list(range(5, 13))
    twos = [len(blobs_of(image, "pink")) for image in draw(pipe, "two pink stars on a gray background", seeds)]
    ones = [len(blobs_of(image, "pink")) for image in draw(pipe, "a pink star on a gray background", seeds)]
    assert twos.count(2) >= 5 and ones.count(1) >= 6  # most of the time: a stray third shape happens


def test_colours_hold_at_ten_steps(pipe):
    """`--q .5` (10 steps) is the fewest the model draws colours right at (MODEL_CARD.md)."""
    colours = ["red", "green", "blue", "yellow", "purple", "pink", "cyan"]
    found = [dominant_colour(draw(pipe, f"a {colour} {shape} on a white background", [5], steps=10)[0]) == colour
             for colour in colours for shape in ("circle", "square", "triangle")]
    assert found.count(True) >= 19, found


def test_a_negative_prompt_removes_its_colour(pipe):
    seeds = list(range(10, 22))
    shapes = ("a circle", "a square", "a triangle", "a star")  # no colour named: red is one of the model's picks
    without = np.mean([colour_share(i, "red") for shape in shapes for i in draw(pipe, shape, seeds)])
    with_negative = np.mean([colour_share(i, "red") for shape in shapes
                             for i in draw(pipe, shape, seeds, negative="red")])
    assert without > 0.02
    assert with_negative < without * 0.5  # the fidelity script measures the full effect (MODEL_CARD.md)


def test_the_same_seed_gives_the_same_pixels(pipe):
    first, second = draw(pipe, "two pink stars", [5]), draw(pipe, "two pink stars", [5])
    assert np.array_equal(np.asarray(first[0]), np.asarray(second[0]))


def test_other_aspect_ratios(pipe):
    wide = draw(pipe, "a yellow circle on a gray background", [3, 4], height=48, width=80)
    tall = draw(pipe, "a yellow circle on a gray background", [3, 4], height=80, width=48)
    assert {image.size for image in wide} == {(80, 48)} and {image.size for image in tall} == {(48, 80)}
    found = [(dominant_colour(image), background_colour(image)) for image in wide + tall]
    assert found.count(("yellow", "gray")) >= 3


@pytest.mark.parametrize(("lora", "metric"), [("niji", outline_darkness), ("pixel", blockiness)])
def test_each_lora_style_shows_at_weight_1_and_not_at_0(pipe, lora, metric):
    prompt, seeds = "a yellow circle on a white background", [20, 21, 22, 23]
    plain = draw(pipe, prompt, seeds)
    pipe.load_lora_weights(LORA_DIR, weight_name=f"{lora}.safetensors", adapter_name=lora)
    try:
        pipe.set_adapters([lora], adapter_weights=[0.0])
        off = draw(pipe, prompt, seeds)
        pipe.set_adapters([lora], adapter_weights=[1.0])
        on = draw(pipe, prompt, seeds)
    finally:
        pipe.delete_adapters([lora])
    after = draw(pipe, prompt, seeds)
    # weight 0 is the plain model, and nothing leaks into the next call
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, off, strict=True))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, after, strict=True))
    # the style moves the picture its way (how far: MODEL_CARD.md)
    assert np.mean([metric(i) for i in on]) > np.mean([metric(i) for i in off])
    change = [np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() for a, b in zip(on, off, strict=True)]
    assert np.mean(change) > 1


@pytest.mark.parametrize("lora", ["niji", "pixel"])
def test_each_lora_style_keeps_the_colour_asked_for(pipe, lora):
    """`--niji` pastels and pixel blocks are still the prompt's colour: a green square stays green."""
    asked = [("green", "square"), ("red", "circle"), ("blue", "triangle"), ("yellow", "square"),
             ("purple", "circle"), ("cyan", "square")]
    pipe.load_lora_weights(LORA_DIR, weight_name=f"{lora}.safetensors", adapter_name=lora)
    try:
        pipe.set_adapters([lora], adapter_weights=[1.0])
        read = [(colour, fill_colour(image)) for colour, shape in asked
                for image in draw(pipe, f"a {colour} {shape} on a white background", [1, 2])]
    finally:
        pipe.delete_adapters([lora])
    assert sum(colour == found for colour, found in read) >= 10, read


def test_a_lora_file_is_a_standard_peft_lora():
    from safetensors import safe_open

    with safe_open(str(Path(LORA_DIR) / "niji.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("unet.") for k in keys)
    assert any(k.endswith("lora_A.weight") for k in keys) and any(k.endswith("lora_B.weight") for k in keys)
