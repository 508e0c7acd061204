"""The synthetic world: deterministic, described in users' words, and readable back."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from generation.builtin.analysis import (
    background_colour,
    blockiness,
    classify_shape,
    dominant_colour,
    fill_colour,
    outline_darkness,
)
from generation.builtin.world import (
    PALETTE,
    POSITIONS,
    SHAPE_COLOURS,
    SHAPES,
    SIZES,
    Scene,
    ShapeSpec,
    make_examples,
    render,
    vocabulary,
)


def test_the_same_seed_gives_the_same_pictures_and_captions():
    first, second = make_examples(12, seed=7), make_examples(12, seed=7)
    assert [c for c, _ in first] == [c for c, _ in second]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for (_, a), (_, b) in zip(first, second, strict=True))
    assert [c for c, _ in make_examples(12, seed=8)] != [c for c, _ in first]


def test_the_world_is_as_wide_as_promised():
    assert set(SHAPES) >= {"circle", "square", "triangle", "star"}
    assert len(SHAPE_COLOURS) >= 8
    captions = " ".join(c for c, _ in make_examples(400, seed=1))
    for word in ("background", "small", "large", "top left", "bottom right", "two", " and "):
        assert word in captions


def test_captions_name_what_is_drawn():
    # "a small blue star in the top left on a white background" is drawn so
    scene = Scene("white", (ShapeSpec("star", "blue", "small", "top left"),))
    image = render(scene)
    assert (dominant_colour(image), background_colour(image), classify_shape(image)) == ("blue", "white", "star")
    blue = np.asarray(image)[:, :, 2] > 150
    ys, xs = np.nonzero(blue & (np.asarray(image)[:, :, 0] < 100))
    assert ys.mean() < 32 and xs.mean() < 32


def test_other_aspect_ratios_render():
    assert render(Scene("gray", (ShapeSpec("circle", "red"),)), 80, 48).size == (80, 48)


def test_every_caption_word_is_in_the_vocabulary():
    known = set(vocabulary())
    for caption, _ in make_examples(300, seed=3):
        assert set(caption.split()) <= known, caption


def test_the_reader_tells_shapes_colours_and_backgrounds_apart():
    rng = random.Random(11)
    right = {"shape": 0, "colour": 0, "background": 0}
    for _ in range(200):
        colour = rng.choice(list(SHAPE_COLOURS))
        background = rng.choice([b for b in PALETTE if b != colour])
        spec = ShapeSpec(rng.choice(SHAPES), colour, rng.choice(list(SIZES)), rng.choice(list(POSITIONS)))
        image = render(Scene(background, (spec,)), rng=rng)
        right["shape"] += classify_shape(image) == spec.shape
        right["colour"] += dominant_colour(image) == colour
        right["background"] += background_colour(image) == background
    assert right["colour"] == right["background"] == 200
    assert right["shape"] >= 190


@pytest.mark.parametrize("shape", SHAPES)
def test_styles_are_measurable_on_drawn_pictures(shape):
    scene = Scene("white", (ShapeSpec(shape, "yellow", "large"),))
    plain, niji, pixel = (render(scene, style=style) for style in ("plain", "niji", "pixel"))
    assert outline_darkness(plain) == 0 and outline_darkness(niji) > 0.03
    assert blockiness(plain) < 1.5 < 3 < blockiness(pixel)


@pytest.mark.parametrize("style", ["plain", "niji", "pixel"])
def test_the_fill_colour_reads_back_in_every_style(style):
    for background, colour, shape in itertools.product(("white", "gray", "pink"), SHAPE_COLOURS, SHAPES):
        if colour in (background, "black"):
            continue
        assert fill_colour(render(Scene(background, (ShapeSpec(shape, colour),)), style=style)) == colour, (
            background, colour, shape)


@pytest.mark.parametrize("phase", ["vae", "decoder"])
def test_the_autoencoder_learns_every_style(phase):
    """The VAE must see niji and pixel pictures, or its latents cannot hold their colours, and
    its decoder must see enough niji to draw pastel fills (MODEL_CARD.md)."""
    import dataclasses

    import torch
    from PIL import Image

    from generation.builtin.train import (
        DECODER_STYLE_MIX,
        VAE_STYLE_MIX,
        TrainingPlan,
        _autoencoder_batch,
        build_style_datasets,
    )

    mix = {"vae": VAE_STYLE_MIX, "decoder": DECODER_STYLE_MIX}[phase]
    plan = dataclasses.replace(TrainingPlan(), examples_square=256, examples_per_other_bucket=256)
    styles = build_style_datasets(plan)

    def looks(image: Image.Image) -> str:
        if outline_darkness(image) > 0.03 and background_colour(image) != "black":
            return "niji"
        return "pixel" if blockiness(image) > 3 else "plain"

    def shares(weights: dict, draws: int) -> np.ndarray:
        """How often a batch drawn by `weights` looks plain, niji, pixel."""
        rng, generator = random.Random(0), torch.Generator().manual_seed(0)
        seen = [looks(Image.fromarray(_autoencoder_batch(styles, weights, 1, rng, generator)[0]
                                      .add(1).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()))
                for _ in range(draws)]
        return np.array([seen.count(name) / draws for name in ("plain", "niji", "pixel")])

    # A niji picture without a shape, or on black, looks plain: compare against how each
    # style's own pictures look rather than against the mix itself.
    looks_of = {style: shares({name: float(name == style) for name in mix}, 150) for style in mix}
    expected = sum(share * looks_of[style] for style, share in mix.items())
    assert min(mix.values()) >= 0.2  # every style, niji not starved
    assert looks_of["niji"][1] > 0.4 and looks_of["pixel"][2] > 0.4  # the styles are told apart
    assert np.abs(shares(mix, 300) - expected).max() < 0.08, (shares(mix, 300), expected)
