"""/describe on the built-in model: its captioner reads the world, and the model's own pictures."""

from __future__ import annotations

import random

import pytest

from generation.builtin.captioner import Captioner, Reading, ShapeReading, prompts_for
from generation.builtin.world import Scene, ShapeSpec, render
from generation.describe import load_describer
from generation.engine import Imagine


@pytest.fixture(scope="module")
def captioner() -> Captioner:
    return Captioner()


def test_the_captioner_reads_drawn_pictures(captioner):
    rng = random.Random(7)
    right = {"background": 0, "colour": 0, "shape": 0}
    total = 60
    for _ in range(total):
        colour = rng.choice(["red", "green", "blue", "yellow", "purple", "pink", "cyan"])
        background = rng.choice(["white", "black", "gray"])
        spec = ShapeSpec(rng.choice(["circle", "square", "triangle", "star"]), colour, rng.choice(["medium", "large"]))
        reading = captioner.read(render(Scene(background, (spec,)), 64, 64))
        right["background"] += reading.background == background
        right["colour"] += bool(reading.shapes) and reading.shapes[0].colour == colour
        right["shape"] += bool(reading.shapes) and reading.shapes[0].shape == spec.shape
    assert right["background"] / total >= 0.95
    assert right["colour"] / total >= 0.9
    assert right["shape"] / total >= 0.8


@pytest.mark.parametrize("prompt, colour, background", [
    ("a red circle on a white background", "red", "white"),
    ("a blue square on a yellow background", "blue", "yellow"),
    ("a large green circle on a black background", "green", "black"),
])
def test_describe_names_the_colour_and_background_of_generated_pictures(engine, request_for, prompt, colour,
                                                                        background):
    describer = load_describer("builtin")
    pictures = engine.run(Imagine(request_for(f"{prompt} --steps 15"), seed=4)).images
    named = 0
    for picture in pictures:
        suggestions = describer.suggestions(picture)
        assert len(suggestions) == 4 and len(set(suggestions)) == 4
        named += colour in suggestions[0] and background in suggestions[0]
    assert named >= 3


def test_four_different_prompts_for_every_kind_of_picture():
    one = ShapeReading("star", "red", "small", "top left", ("circle", "square", "triangle"), ("pink", "purple"))
    other = ShapeReading("square", "blue", "medium", "right", ("circle",), ("cyan",))
    assert prompts_for(Reading("white", (one,))) == [
        "a small red star in the top left on a white background", "a red star on white",
        "a red circle on a white background", "a pink star on a white background"]
    assert prompts_for(Reading("black", (one, one)))[0] == "two red stars on a black background"
    assert prompts_for(Reading("gray", (one, other)))[0] == "a red star and a blue square on a gray background"
    assert prompts_for(Reading("pink", ()))[0] == "plain pink background"
    for reading in (Reading("white", (one,)), Reading("black", (one, one)), Reading("gray", (one, other)),
                    Reading("pink", ())):
        assert len(set(prompts_for(reading))) == 4


def test_a_missing_captioning_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no captioning model folder"):
        load_describer(str(tmp_path / "nothing"))


def test_a_blip_folder_gives_four_captions_from_its_own_vocabulary(tmp_path):
    from helpers.tiny_blip import WORDS, build_tiny_blip
    from PIL import Image

    describer = load_describer(str(build_tiny_blip(tmp_path / "blip")))
    suggestions = describer.suggestions(Image.new("RGB", (50, 40), (200, 10, 10)))
    assert len(suggestions) == 4 and len(set(suggestions)) == 4
    assert all(set(text.split()) <= set(WORDS) for text in suggestions)
