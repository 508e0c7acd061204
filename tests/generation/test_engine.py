"""The engine on the built-in model: each parameter checked on the pictures it makes.

Fixed seeds, few steps, 64-pixel pictures. Colour shares come from the built-in
model's pixel analysis (nearest palette colour per pixel).
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from generation.builtin.analysis import (
    background_colour,
    classify_shape,
    colour_share,
    dominant_colour,
    outline_darkness,
)
from generation.conditioning import PromptEncoder, compel_prompt, parse_emphasis
from generation.engine import (
    Engine,
    Imagine,
    Upscale,
    Vary,
    guidance_for_stylize,
    image_seeds,
)
from generation.executor import CancelToken, JobCancelled
from generation.prompt import Segment
from generation.sampling import chaos_guidance, initial_noise

FAST = "--steps 10"


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def mean_share(images, colour: str) -> float:
    return float(np.mean([colour_share(image, colour) for image in images]))


def distance(a, b) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


# ---------------------------------------------------------------------------
# emphasis and conditioning


@pytest.mark.parametrize(("text", "runs"), [
    ("a (red:1.3) circle", [("a", 1.0), ("red", 1.3), ("circle", 1.0)]),
    # the WebUI's weights unrounded (were 1.21, 0.909091, 1.65): its floats, so neighbours merge as there
    ("((big)) cat", [("big", 1.1 * 1.1), ("cat", 1.0)]),
    ("[blue] sky", [("blue", 1 / 1.1), ("sky", 1.0)]),
    ("(a (b:1.5) c)", [("a", 1.1), ("b", 1.5 * 1.1), ("c", 1.1)]),
    (r"a \(literal\) \[x\]", [("a (literal) [x]", 1.0)]),
    ("(never closed", [("never closed", 1.1)]),
    ("closer) only", [("closer) only", 1.0)]),
    ("C++ and time: 3pm", [("C++ and time: 3pm", 1.0)]),
    ("", [("", 1.0)]),
])
def test_webui_emphasis_is_read_as_the_webui_reads_it(text, runs):
    """More cases, each worked out from the WebUI's code, in test_emphasis.py."""
    assert parse_emphasis(text) == runs


def test_emphasis_weights_arrive_in_compel(engine):
    """`(red:1.5)` must encode exactly as compel's own `(red)1.5`, and differently from plain `red`."""
    compel = engine.model("builtin").encoder._compels[0]
    ours = compel.build_conditioning_tensor_for_prompt_object(compel_prompt("a (red:1.5) circle"))[0][0]
    theirs = compel.build_conditioning_tensor("a (red)1.5 circle")
    plain = compel.build_conditioning_tensor("a red circle")
    torch.testing.assert_close(ours, theirs)
    assert not torch.allclose(ours, plain)
    # text compel would misread stays text: `C++` is not an upweighted `C`
    literal = compel.build_conditioning_tensor_for_prompt_object(compel_prompt("C++"))[0][0]
    misread = compel.build_conditioning_tensor("C++")
    assert not torch.allclose(literal, misread)


def test_long_prompts_are_chunked_not_cut(engine):
    encoder: PromptEncoder = engine.model("builtin").encoder
    long_text = ", ".join(["a red circle on a white background"] * 30)
    conditioning = encoder.encode([Segment(long_text, 1.0)])
    assert conditioning.prompt_embeds.shape[1] >= 3 * 77
    assert conditioning.negative_prompt_embeds.shape == conditioning.prompt_embeds.shape


# ---------------------------------------------------------------------------
# what the words do


def test_colour_words_are_drawn(engine, request_for):
    for colour in ("red", "blue", "yellow"):
        result = engine.run(Imagine(request_for(f"a {colour} circle on a white background {FAST}"), seed=11))
        assert sum(dominant_colour(image) == colour for image in result.images) >= 3, colour


def test_no_removes_a_colour(engine, request_for):
    plain = engine.run(Imagine(request_for(f"a circle on a white background {FAST}"), seed=3, count=8))
    without = engine.run(Imagine(request_for(f"a circle on a white background --no red {FAST}"), seed=3, count=8))
    assert mean_share(without.images, "red") <= 0.5 * mean_share(plain.images, "red")


def test_raising_a_segments_weight_raises_its_colour(engine, request_for):
    text = "a red circle on a white background::{} a blue circle on a white background::{} " + FAST
    red_heavy = engine.run(Imagine(request_for(text.format(3, 1)), seed=1, count=8))
    blue_heavy = engine.run(Imagine(request_for(text.format(1, 3)), seed=1, count=8))
    assert mean_share(red_heavy.images, "red") > mean_share(blue_heavy.images, "red") + 0.05


def test_emphasis_changes_the_picture(engine, request_for):
    def pictures(red: str):
        return engine.run(Imagine(request_for(f"a {red} circle and a blue circle {FAST}"), seed=1, count=8)).images

    plain = pictures("red")
    stressed, weakened, bracketed = pictures("(red:1.6)"), pictures("(red:0.5)"), pictures("[[red]]")
    # On the shipped weights a stressed word changes the picture but does not add red
    # (MODEL_CARD.md, "Emphasis"); a weakened one gives way to the other colour.
    assert np.mean([distance(a, b) for a, b in zip(stressed, plain, strict=True)]) > 5
    assert mean_share(weakened, "red") < mean_share(plain, "red") - 0.02
    assert mean_share(weakened, "blue") > mean_share(plain, "blue")
    assert mean_share(bracketed, "red") < mean_share(plain, "red")  # [[red]]: weight 1/1.21


# ---------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize(("aspect", "size"), [("1:1", (64, 64)), ("16:9", (80, 48)), ("2:3", (48, 80)),
                                              ("4:1", (128, 32))])
def test_aspect_ratio_sets_the_size(engine, request_for, aspect, size):
    result = engine.run(Imagine(request_for(f"a red circle --ar {aspect} --steps 2"), seed=1, count=1))
    assert result.images[0].size == size
    assert (result.parameters["width"], result.parameters["height"]) == size


def test_same_seed_same_pixels_and_seeds_count_up(engine, request_for):
    request = request_for(f"a green star on a pink background --seed 41 {FAST}")
    first = engine.run(Imagine(request, seed=41))
    again = engine.run(Imagine(request, seed=41))
    other = engine.run(Imagine(request, seed=42))
    assert first.seeds == (41, 42, 43, 44)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first.images, again.images, strict=True))
    # seed 42's first image is seed 41's second: each image has its own seed
    assert np.array_equal(pixels(first.images[1]), pixels(other.images[0]))
    assert "Seed: 41" in first.infotexts[0] and "Seed: 44" in first.infotexts[3]
    assert image_seeds(2**32 - 2, 4) == (2**32 - 2, 2**32 - 1, 0, 1)


CHAOS_PROMPTS = [("red", "circle", "a red circle"), ("red", "circle", "a red circle on a white background"),
                 ("blue", "square", "a blue square on a yellow background"),
                 ("green", "triangle", "a green triangle on a white background")]


def test_chaos_varies_the_grid_and_every_picture_still_shows_the_prompt(engine, request_for):
    """--chaos 100 against 0 over 4 prompts × 2 seeds: the grids differ more, and each picture still
    has the named colour (no pale empty fields, which the first --chaos gave) and, as often as at
    chaos 0 but one, the named shape (the model's own squares read as circles now and then)."""
    spreads: dict[int, list[float]] = {0: [], 100: []}
    shapes_right = {0: 0, 100: 0}
    for (colour, shape, prompt), seed in itertools.product(CHAOS_PROMPTS, (21, 8)):
        for chaos in (0, 100):
            images = engine.run(Imagine(request_for(f"{prompt} --chaos {chaos} --steps 20"), seed=seed)).images
            spreads[chaos].append(np.mean([distance(a, b) for a, b in itertools.combinations(images, 2)]))
            shapes_right[chaos] += sum(classify_shape(image, colour) == shape for image in images)
            if chaos == 100:
                shares = [round(colour_share(image, colour), 3) for image in images]
                assert min(shares) > 0.02, (prompt, seed, shares)
    calm, wild = np.mean(spreads[0]), np.mean(spreads[100])
    assert wild > 1.5 * calm, (calm, wild)
    assert shapes_right[100] >= shapes_right[0] - 1 and shapes_right[100] >= 0.85 * 32, shapes_right


def test_chaos_start_noise_is_unit_gaussian_at_every_element():
    """The scheduler expects unit variance everywhere: the coarse part must not make some places
    (its grid's nodes) louder than others (the cells between them)."""
    noise = initial_noise(list(range(400)), (4, 16, 24), chaos=1.0)
    variance = noise.var(dim=0).mean(dim=0)  # per position, over seeds and channels: 1600 values each
    assert abs(float(noise.mean())) < 0.02
    assert float((variance - 1).abs().max()) < 0.15, variance
    assert not torch.equal(noise, initial_noise(list(range(400)), (4, 16, 24), chaos=0.0))


def test_chaos_lowers_guidance_only_in_the_first_steps():
    assert [chaos_guidance(7.0, 0.0, step, 20) for step in range(20)] == [7.0] * 20
    wild = [chaos_guidance(7.0, 1.0, step, 20) for step in range(20)]
    assert all(1 < g < 1.01 for g in wild[:4]) and wild[4:] == [7.0] * 16  # CHAOS_FREE_SHARE: the first 20 %
    half = [chaos_guidance(7.0, 0.5, step, 20) for step in range(20)]
    assert half[:2] == [4.0, 4.0] and half[2:] == [7.0] * 18
    assert chaos_guidance(1.0, 1.0, 0, 20) == 1.0  # no guidance to lower


def test_stop_gives_a_softer_picture(engine, request_for):
    def edge_strength(stop: int) -> float:
        images = engine.run(Imagine(request_for(f"a red square on a white background --steps 20 --stop {stop}"),
                                    seed=2)).images
        strengths = []
        for image in images:
            grey = pixels(image).mean(axis=-1)
            gradient = np.hypot(*np.gradient(grey))
            strengths.append(np.percentile(gradient, 98))
        return float(np.mean(strengths))
    assert edge_strength(10) < 0.85 * edge_strength(100)


def test_tile_wraps_left_right_and_top_bottom(engine, request_for):
    def seam_jump(extra: str) -> float:
        """How much the picture changes across its wrap-around edges, against the change
        between the neighbouring rows and columns just inside them (1: no seam), over 4 pictures."""
        images = engine.run(Imagine(request_for(f"a large yellow star in the top left on a blue background "
                                                f"{extra} {FAST}"), seed=8)).images
        assert [background_colour(image) for image in images].count("blue") >= 3  # still the prompt's picture
        ratios = []
        for image, axis in itertools.product(images, (0, 1)):
            values = np.moveaxis(pixels(image), axis, 0)
            seam = np.abs(values[0] - values[-1]).mean()
            near = np.mean([np.abs(values[i] - values[i + 1]).mean() for i in (0, 1, 2, -4, -3, -2)])
            ratios.append(seam / (near + 0.5))
        return float(np.mean(ratios))
    tiled, plain = seam_jump("--tile"), seam_jump("")
    assert tiled < 1.1 and plain > 1.3 and tiled < 0.75 * plain
    # and tiling is undone after the job
    model = engine.model("builtin")
    assert all(layer.padding_mode == "zeros" for layer in model.text2img.unet.modules()
               if isinstance(layer, torch.nn.Conv2d))


def test_stylize_maps_monotonically_onto_guidance():
    values = [guidance_for_stylize(s, 7.0) for s in (0, 50, 100, 250, 500, 1000)]
    assert values == sorted(values, reverse=True)
    assert guidance_for_stylize(100, 7.0) == 7.0


def test_cfg_and_steps_override_stylize_and_quality(engine, request_for):
    result = engine.run(Imagine(request_for("a red circle --s 1000 --cfg 9 --q 2 --steps 3"), seed=1, count=1))
    assert (result.parameters["cfg"], result.parameters["steps"]) == (9, 3)
    quality = engine.run(Imagine(request_for("a red circle --q .25"), seed=1, count=1))
    assert quality.parameters["steps"] == 5  # the built-in model's 20 steps × .25


@pytest.mark.parametrize("sampler", ["euler_a", "dpm++_2m_karras", "dpm++_sde", "heun", "lms", "lms_karras", "unipc"])
def test_webui_samplers_run_and_are_recorded(engine, request_for, sampler):
    steps = 30 if sampler == "lms" else 12  # LMS goes astray under 30 steps on the built-in model (MODEL_CARD.md)
    result = engine.run(Imagine(request_for(f"a blue square on a white background --sampler {sampler} "
                                            f"--steps {steps}"), seed=4, count=2))
    assert result.parameters["sampler"] == sampler
    assert sum(dominant_colour(image) == "blue" for image in result.images) >= 1


# ---------------------------------------------------------------------------
# LoRAs, niji, styles


def test_lora_weight_zero_is_no_lora_and_one_draws_outlines(engine, request_for):
    prompt = "a yellow circle on a white background --steps 12"
    off = engine.run(Imagine(request_for(f"<lora:niji:0> {prompt}"), seed=6))
    on = engine.run(Imagine(request_for(f"<lora:niji:1> {prompt}"), seed=6))
    none = engine.run(Imagine(request_for(prompt), seed=6))
    assert np.mean([outline_darkness(i) for i in on.images]) > np.mean([outline_darkness(i) for i in off.images])
    assert all(distance(a, b) < 0.5 for a, b in zip(off.images, none.images, strict=True))
    assert on.parameters["loras"] == [{"name": "niji", "weight": 1.0}]


def test_niji_and_style_select_their_loras(engine, request_for):
    niji = engine.run(Imagine(request_for("a yellow circle --niji --steps 2"), seed=6, count=1))
    pixel = engine.run(Imagine(request_for("a yellow circle --style pixel --steps 2"), seed=6, count=1))
    both = engine.run(Imagine(request_for("a yellow circle <lora:pixel:0.5> --niji --style pixel --steps 2"),
                              seed=6, count=1))
    assert niji.parameters["loras"] == [{"name": "niji", "weight": 1.0}]
    assert pixel.parameters["loras"] == [{"name": "pixel", "weight": 1.0}]
    assert both.parameters["loras"] == [{"name": "pixel", "weight": 1.5}, {"name": "niji", "weight": 1.0}]
    assert "<lora:niji:1>" in niji.infotexts[0]


def test_a_job_after_a_lora_job_matches_a_fresh_pipeline(engine, catalog, request_for):
    plain = request_for("a cyan square on a white background --steps 8")
    engine.run(Imagine(request_for("<lora:niji:1> <lora:pixel:0.7> a cyan square --steps 8"), seed=9))
    after = engine.run(Imagine(plain, seed=9))
    fresh = Engine(catalog).run(Imagine(plain, seed=9))
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(after.images, fresh.images, strict=True))


# ---------------------------------------------------------------------------
# variations and upscales


@pytest.fixture(scope="module")
def source_image(engine, request_for):
    return engine.run(Imagine(request_for("a red circle on a white background --steps 12"), seed=21)).images[0]


def test_variations_stay_close_and_strong_moves_further(engine, request_for, source_image):
    request = request_for("a red circle on a white background --steps 12")
    subtle = engine.run(Vary(request, source_image, seed=100, variability="subtle"))
    strong = engine.run(Vary(request, source_image, seed=100, variability="strong"))
    unrelated = engine.run(Imagine(request_for("a red circle on a white background --steps 12"), seed=900))
    near = np.mean([distance(source_image, image) for image in subtle.images])
    far = np.mean([distance(source_image, image) for image in strong.images])
    baseline = np.mean([distance(source_image, image) for image in unrelated.images])
    assert near < far < baseline * 1.2
    assert near < 0.6 * baseline
    assert len(subtle.images) == 4 and len(set(subtle.seeds)) == 4
    assert subtle.parameters["strength"] == 0.5 and strong.parameters["strength"] == 0.85
    assert all(image.size == source_image.size for image in subtle.images)


@pytest.mark.parametrize("mode", ["subtle", "creative"])
def test_upscale_doubles_the_size_and_keeps_the_content(engine, request_for, source_image, mode):
    result = engine.run(Upscale(request_for("a red circle on a white background --steps 12"), source_image,
                                seed=7, mode=mode))
    (image,) = result.images
    assert image.size == (128, 128)
    back = image.resize(source_image.size)
    assert distance(back, source_image) < 12
    assert dominant_colour(image) == "red"
    assert f"Upscale: 2x {mode}" in result.infotexts[0]


@pytest.mark.parametrize(("job", "steps", "schedule", "ran"), [
    ("upscale", 2, 4, 1),  # strength 0.3: int(2 × 0.3) would run none
    ("upscale", 3, 4, 1),
    ("vary", 1, 2, 1),  # strength 0.85: one step of a two-step schedule
    ("subtle", 1, 2, 1),  # strength 0.5
    ("subtle", 10, 10, 5),  # long enough already: unchanged
])
def test_every_picture_job_runs_at_least_one_denoising_step(engine, request_for, source_image, job, steps,
                                                            schedule, ran):
    request = request_for(f"a red circle on a white background --steps {steps}")
    made = (Upscale(request, source_image, seed=3) if job == "upscale"
            else Vary(request, source_image, seed=3, variability="strong" if job == "vary" else "subtle", count=1))
    events = []
    result = engine.run(made, report=events.append)
    assert events[-1].step == events[-1].total == ran  # the steps that ran, as the progress bar showed them
    assert f"Steps: {schedule}," in result.infotexts[0] and result.parameters["steps"] == schedule
    assert dominant_colour(result.images[0]) == "red"  # a picture, not noise


def test_a_large_upscale_runs_in_tiles_and_keeps_the_content(engine, request_for, source_image):
    request = request_for("a red circle on a white background --steps 8")
    events = []
    twice = engine.run(Upscale(request, source_image, seed=7)).images[0]
    four_times = engine.run(Upscale(request, twice, seed=7), report=events.append)
    (image,) = four_times.images
    assert image.size == (256, 256)  # 16 × the native pixels: beyond one pass, so tiled
    assert events[-1].step == events[-1].total > 8  # progress counts every tile's steps
    assert distance(image.resize(source_image.size), source_image) < 12
    grey = pixels(image).mean(axis=-1)
    assert np.abs(np.diff(grey, axis=1)).max() < 120  # no hard seams between tiles on the white background


# ---------------------------------------------------------------------------
# progress and cancellation


def test_progress_reports_every_step_with_previews(engine, request_for):
    events = []
    engine.run(Imagine(request_for("a red circle --steps 10"), seed=1), report=events.append)
    assert [e.step for e in events] == list(range(1, 11))
    assert {e.total for e in events} == {10}
    assert [e.step for e in events if e.preview is not None] == [5]
    assert events[4].preview.size == (256, 256)  # projected from the latents, enlarged for display


def test_a_preview_shows_the_colours_and_layout_its_picture_ends_with(engine, request_for):
    """Each preview (half-way, from the latents) is closer in its 4×4 cells' colours to its own final
    picture than to any other prompt's."""
    prompts = ["a red circle on a white background", "a blue square on a yellow background",
               "a yellow triangle on a black background", "two green stars on a white background"]
    previews, finals = [], []
    for prompt in prompts:
        events = []
        result = engine.run(Imagine(request_for(f"{prompt} --steps 10"), seed=3, count=1), report=events.append)
        previews.append(next(e.preview for e in events if e.preview is not None))
        finals.append(result.images[0])

    def cells(image) -> np.ndarray:
        return pixels(image.resize((4, 4), Image.Resampling.BOX))
    for index, preview in enumerate(previews):
        gaps = [np.abs(cells(preview) - cells(final)).mean() for final in finals]
        assert int(np.argmin(gaps)) == index, (prompts[index], [round(gap, 1) for gap in gaps])


def test_stop_reports_progress_up_to_where_it_stops(engine, request_for):
    events = []
    engine.run(Imagine(request_for("a red circle --steps 10 --stop 50"), seed=1), report=events.append)
    assert events[-1].step == events[-1].total == 5


def test_cancel_stops_at_the_next_step_and_the_engine_runs_on(engine, request_for):
    token = CancelToken()
    steps = []

    def report(event):
        steps.append(event.step)
        if event.step == 3:
            threading.Thread(target=token.cancel).start()
            threading.Event().wait(0.05)

    with pytest.raises(JobCancelled):
        engine.run(Imagine(request_for("a red circle --steps 30"), seed=1), report=report, token=token)
    assert max(steps) <= 4
    result = engine.run(Imagine(request_for("a red circle on a white background --steps 8"), seed=1, count=1))
    assert dominant_colour(result.images[0]) == "red"


def test_style_raw_drops_the_versions_suffix_and_lora(engine):
    from dataclasses import replace as swap

    from helpers.catalogs import builtin_catalog

    from generation.catalog import ModelVersion
    from generation.engine import plan_generation, styled_segments
    from generation.prompt import parse_prompt

    catalog = builtin_catalog(styled=ModelVersion("styled", "builtin", style_suffix="on a white background",
                                                  style_lora="pixel", style_lora_weight=0.6))
    model = engine.model("builtin")
    (styled,) = parse_prompt("a red circle --v styled")
    raw = swap(styled, params=swap(styled.params, style="raw"))
    plan, raw_plan = plan_generation(styled, catalog, model), plan_generation(raw, catalog, model)
    assert plan.loras[0].name == "pixel" and plan.style_suffix == "on a white background"
    assert raw_plan.loras == () and raw_plan.style_suffix == ""
    assert styled_segments(styled, plan)[0].text == "a red circle, (on a white background:1)"
    assert styled_segments(raw, raw_plan)[0].text == "a red circle"


def test_image_prompts_are_refused_not_ignored(engine):
    from generation.prompt import parse_prompt

    (request,) = parse_prompt("https://example.com/cat.png a red circle --iw 2")
    with pytest.raises(ValueError, match="image prompts"):
        engine.run(Imagine(request, seed=1))


def test_the_infotext_reads_back_with_quoted_values(engine, request_for, source_image):
    from generation.engine import Repaint
    from generation.infotext import PROMPT_FIELD, parse_infotext

    request = request_for('a "red" circle, on white --no blue, green --steps 4 --s 250')
    result = engine.run(Repaint(request, source_image, seed=5, box=(0.25, 0.25, 0.75, 0.75), count=1))
    stored = parse_infotext(result.infotexts[0])
    assert stored.prompt == 'a "red" circle, on white' and stored.negative == "blue, green"
    assert stored.fields["Outpaint"] == "Region 0.25,0.25,0.75,0.75" and stored.fields["Steps"] == "4"
    assert stored.fields[PROMPT_FIELD] == request.to_prompt()
