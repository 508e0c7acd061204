"""Jobs that start from pictures: image prompts, /blend, zoom out, pan, make square, Vary (Region).

On the built-in model with fixed seeds; source pictures are drawn exactly by the
synthetic world, so what came from them can be measured.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation.builtin.analysis import colour_share
from generation.builtin.world import Scene, ShapeSpec, render
from generation.canvas import collage, make_square, pan, region, zoom_out
from generation.engine import Blend, Imagine, Outpaint, Repaint, Vary, image_prompt_strength
from generation.executor import Progress
from generation.prompt import GenerationRequest, Params

FAST = "--steps 10"


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def drawn(shape: str, colour: str, background: str = "white", size=(64, 64)) -> Image.Image:
    return render(Scene(background, (ShapeSpec(shape, colour, "large"),)), *size)


def painted_naturally(area: np.ndarray) -> bool:
    """Not one flat colour, and not noise: neighbouring pixels mostly agree."""
    neighbours = np.abs(np.diff(area, axis=1)).mean()
    return area.std() > 3 and neighbours < 25  # uniform noise would give about 85


# --- the canvases (no model) -----------------------------------------------------------


def test_zoom_out_puts_the_shrunk_picture_in_the_centre():
    source = drawn("circle", "red")
    canvas = zoom_out(source, 2.0, unit=16)
    assert canvas.image.size == (64, 64) and canvas.keep.size == (32, 32) and canvas.keep_at == (16, 16)
    mask = np.asarray(canvas.mask)
    assert mask[16:48, 16:48].max() == 0 and mask[:16].min() == 255  # paint the border only
    assert zoom_out(source, 1.5, unit=16).keep.size == (40, 40)  # 42.7 on the latent grid (8 px steps)
    wide = zoom_out(drawn("square", "blue", size=(80, 48)), 2.0, unit=16)  # the shape is kept: 40×24, not 32×32
    assert (wide.image.size, wide.keep.size, wide.keep_at) == ((80, 48), (40, 24), (20, 12))
    with pytest.raises(ValueError):
        zoom_out(source, 2.5, unit=16)


def test_pan_grows_the_canvas_on_one_side_and_make_square_on_both():
    source = drawn("square", "blue")
    assert (pan(source, "right", 16).image.size, pan(source, "right", 16).keep_at) == ((80, 64), (0, 0))
    assert (pan(source, "left", 16).image.size, pan(source, "left", 16).keep_at) == ((80, 64), (16, 0))
    assert (pan(source, "up", 16).image.size, pan(source, "up", 16).keep_at) == ((64, 80), (0, 16))
    wide = drawn("square", "blue", size=(80, 48))
    square = make_square(wide, 16)
    assert square.image.size == (80, 80) and square.keep_at == (0, 16)


def test_region_is_widened_to_the_latent_grid_and_restore_keeps_the_rest():
    source = drawn("star", "yellow", "black")
    canvas = region(source, (0.3, 0.0, 0.6, 0.5), unit=4)
    mask = np.asarray(canvas.mask)
    columns, rows = np.nonzero(mask.any(axis=0))[0], np.nonzero(mask.any(axis=1))[0]
    assert (columns[0], columns[-1] + 1, rows[0], rows[-1] + 1) == (16, 40, 0, 32)
    restored = canvas.restore(Image.new("RGB", source.size, (0, 255, 0)))
    far = np.ones_like(mask, dtype=bool)  # more than the margin (2 px at unit 4) from the region
    far[max(0, rows[0] - 2):rows[-1] + 3, max(0, columns[0] - 2):columns[-1] + 3] = False
    assert (pixels(restored)[far] == pixels(source)[far]).all()
    assert (pixels(restored)[mask == 255] == [0, 255, 0]).all()


def test_a_blend_collage_holds_every_picture_in_an_order_that_follows_the_seed():
    red, blue = drawn("circle", "red"), drawn("square", "blue")
    first, second = collage([red, blue], (64, 64), seed=1), collage([red, blue], (64, 64), seed=2)
    for picture in (first, second):
        assert colour_share(picture, "red") > 0.05 and colour_share(picture, "blue") > 0.05
    orders = {tuple(collage([red, blue], (64, 64), seed=s).getpixel((16, 32))) for s in range(8)}
    assert len(orders) == 2  # both arrangements occur


# --- the jobs on the built-in model ------------------------------------------------------


def test_an_image_prompt_pulls_the_picture_towards_its_image(engine, request_for):
    image = drawn("square", "green", "yellow")
    results = {}
    for weight in ("0.5", "3"):
        request = request_for(f"https://example.com/green.png a circle --iw {weight} {FAST}")
        results[weight] = engine.run(Imagine(request, seed=5, images=(image,)))
    close = np.mean([np.abs(pixels(p) - pixels(image)).mean() for p in results["3"].images])
    loose = np.mean([np.abs(pixels(p) - pixels(image)).mean() for p in results["0.5"].images])
    assert close < 0.7 * loose
    assert results["3"].parameters["strength"] == image_prompt_strength(3) == 0.4
    assert "Image prompts: 1" in results["3"].infotexts[0]


def test_blend_shows_both_pictures_and_follows_the_dimensions(engine, request_for):
    red, blue = drawn("circle", "red"), drawn("square", "blue")
    square = engine.run(Blend(GenerationRequest((), Params(aspect="1:1", steps=10)), (red, blue), seed=3))
    assert len(square.images) == 4 and all(image.size == (64, 64) for image in square.images)
    def blueish(image) -> float:  # without words, the built-in model paints this blue a shade lighter
        return colour_share(image, "blue") + colour_share(image, "cyan")

    assert np.mean([colour_share(i, "red") for i in square.images]) > 0.1
    assert np.mean([blueish(i) for i in square.images]) > 0.1
    plain = engine.run(Imagine(request_for(f"a red circle on a white background {FAST}"), seed=3))
    assert np.mean([blueish(i) for i in plain.images]) < 0.01  # the blue came from the blend

    portrait = engine.run(Blend(GenerationRequest((), Params(aspect="2:3", steps=10)),
                                (red, blue, drawn("star", "yellow")), seed=3))
    width, height = portrait.images[0].size
    assert width < height


def test_zoom_out_keeps_the_original_in_the_centre_and_paints_the_border(engine, request_for):
    prompt = f"two yellow stars on a blue background {FAST}"
    source = engine.run(Imagine(request_for(prompt), seed=8)).images[0]
    events: list[Progress] = []
    result = engine.run(Outpaint(request_for(prompt), source, seed=9, kind="zoom", factor=2.0),
                        report=events.append)
    expected_centre = pixels(source.resize((32, 32), Image.Resampling.LANCZOS))
    for image in result.images:
        assert image.size == (64, 64)
        # exactly the shrunk original beyond the seam margin (8 px); across it, blended (test_outpaint_seams.py)
        assert (pixels(image)[24:40, 24:40] == expected_centre[8:24, 8:24]).all()
        assert painted_naturally(pixels(image)[:16])
    assert events and events[-1].step == events[-1].total == 10
    assert "Outpaint: zoom 2x" in result.infotexts[0]


def test_pan_keeps_the_original_and_extends_the_right_side(engine, request_for):
    prompt = f"two yellow stars on a blue background {FAST}"
    source = engine.run(Imagine(request_for(prompt), seed=8)).images[0]
    result = engine.run(Outpaint(request_for(prompt), source, seed=4, kind="pan", direction="right"))
    for image in result.images:
        assert image.size == (80, 64)
        assert (pixels(image)[:, :56] == pixels(source)[:, :56]).all()  # beyond the 8 px seam margin
        assert painted_naturally(pixels(image)[:, 64:])


def test_make_square_gives_a_square_around_the_original(engine, request_for):
    wide = engine.run(Imagine(request_for(f"a green circle on a white background --ar 16:9 {FAST}"), seed=2)).images[0]
    result = engine.run(Outpaint(request_for(f"a green circle on a white background {FAST}"), wide, seed=2,
                                 kind="square"))
    width, height = wide.size
    for image in result.images:
        assert image.size == (width, width)
        top = (width - height) // 2
        margin = 8  # the seam margin, at the built-in model's alignment
        assert (pixels(image)[top + margin:top + height - margin] == pixels(wide)[margin:-margin]).all()


def test_vary_region_changes_only_the_region(engine, request_for):
    source = engine.run(Imagine(request_for(f"a red circle on a white background {FAST}"), seed=8)).images[0]
    result = engine.run(Repaint(request_for(f"a blue square on a white background {FAST}"), source, seed=12,
                                box=(0.25, 0.25, 0.75, 0.75)))
    inside, near = np.zeros((64, 64), dtype=bool), np.zeros((64, 64), dtype=bool)
    inside[16:48, 16:48] = True
    near[8:56, 8:56] = True  # the region and the 8 px seam margin around it
    for image in result.images:
        assert (pixels(image)[~near] == pixels(source)[~near]).all()
        assert np.abs(pixels(image)[inside] - pixels(source)[inside]).mean() > 15
        assert colour_share(image, "blue") > 0.1 and colour_share(source, "blue") < 0.01  # the new prompt's square


# --- image prompts through an IP-Adapter (configured per version) -------------------------


@pytest.fixture(scope="module")
def ip_adapter_engine(tmp_path_factory, engine):
    """The built-in model configured with a tiny IP-Adapter (random weights, from a config)."""
    from dataclasses import replace

    from helpers.tiny_ip_adapter import write_tiny_ip_adapter

    from generation.engine import Engine

    weights = write_tiny_ip_adapter(tmp_path_factory.mktemp("ip-adapter"), engine.model("builtin").text2img.unet)
    catalog = engine.catalog
    version = replace(catalog.versions["builtin"], ip_adapter=str(weights))
    return Engine(replace(catalog, versions={**catalog.versions, "builtin": version}))


def test_an_ip_adapter_steers_image_prompts_by_iw_and_is_gone_after_the_job(ip_adapter_engine, engine, request_for):
    red, blue = drawn("circle", "red"), drawn("square", "blue")
    text_only = engine.run(Imagine(request_for(f"a green star {FAST}"), seed=1)).images

    def distance(images, others) -> float:
        return float(np.mean([np.abs(pixels(a) - pixels(b)).mean() for a, b in zip(images, others, strict=True)]))

    def steered(weight: str, *images: Image.Image):
        links = " ".join(f"https://example.com/{n}.png" for n in range(len(images)))
        return ip_adapter_engine.run(Imagine(request_for(f"{links} a green star --iw {weight} {FAST}"), seed=1,
                                             images=images))

    ignored, light, strong = steered("0", red), steered("0.5", red), steered("2", red)
    assert distance(ignored.images, text_only) == 0  # --iw 0: the text alone
    assert 0 < distance(light.images, text_only) < distance(strong.images, text_only)
    assert strong.parameters["ip_adapter_scale"] == 1.0 and "strength" not in strong.parameters  # not img2img
    assert "IP-Adapter scale: 1.0, Image prompts: 1" in strong.infotexts[0]
    assert distance(steered("2", blue).images, strong.images) > 1  # the picture matters, not just its presence
    assert len(steered("1", red, blue).images) == 4  # several image prompts together

    # detached after each job: text, LoRA and image-to-image jobs on the shared UNet are untouched
    after = ip_adapter_engine.run(Imagine(request_for(f"a green star {FAST}"), seed=1)).images
    assert distance(after, text_only) == 0
    niji = request_for(f"https://example.com/0.png a green star --niji --iw 1 {FAST}")
    assert len(ip_adapter_engine.run(Imagine(niji, seed=2, images=(red,))).images) == 4
    varied = ip_adapter_engine.run(Vary(request_for(f"a green star {FAST}"), red, seed=3, variability="subtle"))
    assert varied.parameters["strength"] > 0


def test_a_missing_ip_adapter_file_is_a_load_error_that_names_it(tmp_path, engine):
    from dataclasses import replace

    from generation.engine import Engine
    from generation.models import ModelLoadError

    version = replace(engine.catalog.versions["builtin"], ip_adapter=str(tmp_path / "ip-adapter_sd15.safetensors"))
    broken = Engine(replace(engine.catalog, versions={**engine.catalog.versions, "builtin": version}))
    with pytest.raises(ModelLoadError, match=r"ip-adapter_sd15\.safetensors is missing"):
        broken.model("builtin")
