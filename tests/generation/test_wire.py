"""Jobs and results as plain data (generation/wire.py): every job kind survives the trip as
JSON and makes the same pictures; a message that is not a valid one is refused before
anything is decoded or run."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from helpers.hostile_pictures import bomb_png, noise
from helpers.pictures import same_pixels
from PIL import Image

from generation.engine import Blend, Imagine, Outpaint, Repaint, Upscale, Vary
from generation.executor import Progress
from generation.results import GenerationResult
from generation.wire import (
    WireError,
    job_from_wire,
    job_to_wire,
    outcome_from_wire,
    outcome_to_wire,
    progress_from_wire,
    progress_to_wire,
    result_from_wire,
    result_to_wire,
)


def through_json(message: dict) -> dict:
    return json.loads(json.dumps(message))


def jobs(request_for) -> list:
    request = request_for("a red circle on a white background --ar 3:2 --steps 4 --seed 7")
    picture, other = noise((96, 64)), noise((64, 64))
    return [
        Imagine(request, 7),
        Imagine(request_for("https://example.com/a.png a red circle --iw 2"), 3, count=2, images=(picture, other)),
        Blend(request_for("a blend --ar 3:2"), (picture, other, picture), 11),
        Vary(request, picture, 5, variability="subtle", count=3),
        Upscale(request, picture, 6, mode="creative"),
        Outpaint(request, picture, 8, kind="zoom", factor=1.5),
        Outpaint(request, picture, 8, kind="pan", direction="up"),
        Outpaint(request, picture, 8, kind="square"),
        Repaint(request, picture, 9, box=(0.25, 0.0, 0.75, 0.5), count=1),
    ]


def test_every_job_kind_arrives_as_it_was_sent(request_for):
    for sent in jobs(request_for):
        job_id, attempt, arrived = job_from_wire(through_json(job_to_wire(41, 2, sent)))
        assert (job_id, attempt, type(arrived)) == (41, 2, type(sent))
        for name in sent.__dataclass_fields__:
            mine, theirs = getattr(sent, name), getattr(arrived, name)
            if isinstance(mine, Image.Image):
                assert same_pixels(mine, theirs), name
            elif isinstance(mine, tuple) and mine and isinstance(mine[0], Image.Image):
                assert len(mine) == len(theirs) and all(map(same_pixels, mine, theirs)), name
            else:
                assert mine == theirs, (type(sent).__name__, name)


def test_a_job_run_from_its_message_makes_the_same_pictures_and_its_result_travels_back(engine, request_for):
    source = engine.run(Imagine(request_for("a blue square --steps 4"), 3, count=1)).images[0]
    sent = Vary(request_for("a blue square --steps 4"), source, 12, variability="strong", count=2)
    here = engine.run(sent)
    _, _, arrived = job_from_wire(through_json(job_to_wire(1, 1, sent)))
    there = engine.run(arrived)
    assert all(map(same_pixels, here.images, there.images))

    job_id, attempt, back = result_from_wire(through_json(result_to_wire(1, 1, replace_flags(there))))
    assert (job_id, attempt) == (1, 1)
    assert all(map(same_pixels, back.images, there.images))
    assert (back.seeds, back.infotexts, back.parameters, back.flagged) == (
        there.seeds, there.infotexts, there.parameters, (False, True))
    assert back.timings == there.timings and back.timings["total"] > 0


def replace_flags(result: GenerationResult) -> GenerationResult:
    from dataclasses import replace

    return replace(result, flagged=(False, True))


def message(request_for, **changes) -> dict:
    sent = Vary(request_for("a red circle"), noise((64, 64)), 5, variability="subtle")
    return through_json(job_to_wire(3, 1, sent)) | changes


def png_of(image: Image.Image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(("changes", "says"), [
    ({"version": 2}, "version 1 messages, got version 2"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ({"variability": None}, "a vary job takes ['variability'], got []"),
    ({"box": [0, 0, 1, 1]}, "a vary job takes ['variability'], got ['box', 'variability']"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"seed": 2**40}, "seed: Input should be less than or equal to"),
    ({"count": 5}, "count: Input should be less than or equal to 4"),
    ({"attempt": 0}, "attempt: Input should be greater than or equal to 1"),
    ({"type": "teleport"}, "type: Input should be"),
    ({"pictures": []}, "a vary job carries 1–1 pictures, got 0"),
    ({"request": {"segments": "a red circle"}}, "the job's request cannot be read"),
])
def test_a_malformed_job_is_refused_saying_what_is_wrong(request_for, changes, says):
    with pytest.raises(WireError, match="^.*" + __import__("re").escape(says)):
        job_from_wire(message(request_for, **changes))


def test_pictures_that_are_not_small_pngs_are_refused_before_they_are_decoded(request_for):
    refusals = {
        "not base64": "a picture is not base64",
        png_of(noise((32, 32)), "JPEG"): "a picture is not a readable PNG",
        base64.b64encode(bomb_png(8_000, 8_000)).decode(): "a picture of 8000×8000 is over 40 megapixels",
        base64.b64encode(bomb_png()).decode(): "a picture is not a readable PNG: .* decompression bomb",
    }
    for picture, says in refusals.items():
        with pytest.raises(WireError, match=says):
            job_from_wire(message(request_for, pictures=[picture]))
    blend = through_json(job_to_wire(3, 1, Blend(request_for("a blend"), (noise((8, 8)),) * 2, 1)))
    with pytest.raises(WireError, match="pictures: List should have at most 5 items"):
        job_from_wire(blend | {"pictures": blend["pictures"] * 3})
    with pytest.raises(WireError, match="a blend job carries 2–5 pictures, got 1"):
        job_from_wire(blend | {"pictures": blend["pictures"][:1]})
    with pytest.raises(WireError, match="a message is a JSON object, got list"):
        job_from_wire([1, 2])
    with pytest.raises(WireError, match="the box is left, top, right, bottom"):
        job_from_wire(message(request_for, type="repaint", variability=None, box=[0.5, 0, 0.25, 1]))


def test_a_malformed_result_is_refused(engine, request_for):
    result = engine.run(Imagine(request_for("a green star --steps 2"), 1, count=2))
    reply = through_json(result_to_wire(9, 1, result))
    assert len(result_from_wire(reply)[2].images) == 2
    for changes, says in (({"seeds": [1]}, "seeds: one per picture"), ({"infotexts": ["x"] * 3}, "infotexts"),
                          ({"pictures": []}, "pictures: List should have at least 1 item"),
                          ({"job_id": "nine"}, "job_id: Input should be a valid integer")):
        with pytest.raises(WireError, match=says):
            result_from_wire(reply | changes)


def test_progress_travels_with_a_small_webp_preview_and_a_bad_one_is_refused():
    # a preview is smooth (upscaled from the latents): a gradient, not noise
    ramp = np.linspace(0, 255, 256, dtype=np.float64)
    pixels = np.stack([np.tile(ramp, (192, 1)), np.tile(ramp[::-1], (192, 1)), np.full((192, 256), 90.0)], axis=-1)
    preview = Image.fromarray(pixels.astype(np.uint8))
    sent = Progress(5, 20, preview, flagged=False)
    job_id, attempt, progress = progress_from_wire(through_json(progress_to_wire(3, 2, sent)))
    assert (job_id, attempt, progress.step, progress.total, progress.flagged) == (3, 2, 5, 20, False)
    assert progress.preview.size == (256, 192)
    assert np.abs(np.asarray(progress.preview, dtype=int) - np.asarray(preview, dtype=int)).mean() < 4  # lossy
    assert progress_from_wire(progress_to_wire(3, 2, Progress(1, 20))) == (3, 2, Progress(1, 20))

    too_big = progress_to_wire(3, 2, Progress(5, 20, noise((512, 64))))
    with pytest.raises(WireError, match="a preview of 512×64 is over 256 pixels on a side"):
        progress_from_wire(too_big)
    not_webp = progress_to_wire(3, 2, Progress(5, 20)) | {"preview": png_of(noise((32, 32)))}
    with pytest.raises(WireError, match="not a readable WEBP"):
        progress_from_wire(not_webp)
    with pytest.raises(WireError, match="step"):
        progress_from_wire(progress_to_wire(3, 2, Progress(5, 20)) | {"step": -1})
    with pytest.raises(WireError, match="step 21 is past the total of 20"):
        progress_from_wire(progress_to_wire(3, 2, Progress(21, 20)))


def test_an_outcome_is_done_with_its_result_or_cancelled_or_failed_with_a_short_cause(engine, request_for):
    result = engine.run(Imagine(request_for("a red circle --steps 2"), 4, count=1))
    done = outcome_from_wire(through_json(outcome_to_wire(6, 1, "done", result=result)))
    assert done.outcome == "done" and same_pixels(result_from_wire(done.result)[2].images[0], result.images[0])
    assert outcome_from_wire(outcome_to_wire(6, 1, "cancelled")).result is None
    failed = outcome_from_wire(outcome_to_wire(6, 1, "failed", error="the GPU ran out of memory " * 50))
    assert failed.error.startswith("the GPU ran out of memory") and len(failed.error) == 500
    with pytest.raises(WireError, match="a result comes with a done outcome"):
        outcome_from_wire(outcome_to_wire(6, 1, "done", result=result) | {"result": None})
    with pytest.raises(WireError, match="a result comes with a done outcome"):
        outcome_from_wire(outcome_to_wire(6, 1, "failed") | {"result": {}})
