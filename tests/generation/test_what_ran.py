"""What ran is what the infotext says: the scheduler the pipeline stepped with, the guidance
it applied, and the words the text encoder read (a style's suffix, `--style raw`, `--s 0`).

The other tests read the plan; these spy on the pipeline itself, so a plan that is
right while the call ignores it (a scheduler set on the wrong pipeline, a guidance
not passed) fails here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers.catalogs import builtin_catalog

from generation.catalog import KNOWN_SAMPLERS, ModelVersion, StyleOption
from generation.engine import Engine, Imagine, Vary, guidance_for_stylize
from generation.infotext import parse_infotext
from generation.prompt import parse_prompt
from generation.samplers import SAMPLERS, WEBUI_LABELS
from generation.validation import validate_request


class Spy:
    """A forward hook on the (shared) UNet reads the running pipeline's scheduler and guidance
    at each call; one on the text encoder decodes the words it was given."""

    def __init__(self, engine: Engine, version: str = "builtin") -> None:
        self.model = engine.model(version)
        self.schedulers: list[object] = []
        self.guidance: list[float] = []
        self.texts: list[str] = []
        self.running = None  # the pipeline the engine called
        denoise = engine._denoise

        def watched(model, pipe, *args, **kwargs):
            self.running = pipe
            return denoise(model, pipe, *args, **kwargs)
        engine._denoise = watched
        self._engine = engine
        self._handles = [self.model.text2img.unet.register_forward_hook(self._unet_ran),
                         self.model.text2img.text_encoder.register_forward_hook(self._encoder_ran)]

    def _unet_ran(self, *_) -> None:
        self.schedulers.append(self.running.scheduler)
        self.guidance.append(self.running.guidance_scale)

    def _encoder_ran(self, module, args, kwargs=None, output=None):
        ids = args[0] if args else None
        if ids is not None:
            tokenizer = self.model.text2img.tokenizer
            self.texts.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        del self._engine._denoise  # the class's own method again


@pytest.fixture
def spy(engine):
    watching = Spy(engine)
    yield watching
    watching.close()


def test_the_scheduler_that_stepped_is_the_sampler_the_infotext_names(engine, request_for, spy):
    for sampler in KNOWN_SAMPLERS:
        spy.schedulers.clear()
        result = engine.run(Imagine(request_for(f"a red circle --steps 3 --sampler {sampler}"), seed=1, count=1))
        cls, overrides = SAMPLERS[sampler]
        used = {id(s): s for s in spy.schedulers}.values()
        assert len(used) == 1, sampler  # one scheduler for the whole call
        (scheduler,) = used
        assert type(scheduler) is cls and all(scheduler.config.get(k) == v for k, v in overrides.items()), sampler
        assert parse_infotext(result.infotexts[0]).fields["Sampler"] == WEBUI_LABELS[sampler]


@pytest.mark.parametrize("prompt", ["--s 0", "--s 100", "--s 1000", "--cfg 3.5", "--s 0 --cfg 9"])
def test_the_guidance_applied_is_the_cfg_scale_in_the_infotext(engine, request_for, spy, prompt):
    request = request_for(f"a red circle --steps 2 {prompt}")
    result = engine.run(Imagine(request, seed=1, count=1))
    written = float(parse_infotext(result.infotexts[0]).fields["CFG scale"])
    assert set(spy.guidance) == {written}
    expected = request.params.cfg if request.params.cfg is not None else guidance_for_stylize(
        request.params.stylize, spy.model.default_cfg)
    assert written == expected


def test_variations_apply_the_guidance_they_record(engine, request_for, spy):
    source = engine.run(Imagine(request_for("a red circle --steps 2"), seed=1, count=1)).images[0]
    spy.guidance.clear()
    result = engine.run(Vary(request_for("a red circle --steps 4 --s 1000"), source, seed=2, count=1))
    assert set(spy.guidance) == {float(parse_infotext(result.infotexts[0]).fields["CFG scale"])}


def test_the_text_encoder_reads_the_style_suffix_unless_raw_or_stylize_zero():
    catalog = builtin_catalog(styled=ModelVersion("styled", "builtin", style_suffix="on a white background"))
    catalog = replace(catalog, styles={**catalog.styles, "ink": StyleOption("ink", suffix="with a black outline")})
    engine = Engine(catalog)
    spy = Spy(engine, "styled")

    def read(extra: str) -> str:
        spy.texts.clear()
        (request,) = parse_prompt(f"a red circle --steps 2 {extra}")
        engine.run(Imagine(validate_request(request, catalog, available_loras=[]), seed=1, count=1))
        return " | ".join(spy.texts)

    try:
        assert "white background" in read("--v styled")
        assert "white background" not in read("--v styled --style raw")
        assert "white background" not in read("--v styled --s 0")  # the suffix rides at stylize / 100
        both = read("--v styled --style ink")
        assert "white background" in both and "black outline" in both
        assert "red circle" in read("--v styled --style raw")
    finally:
        spy.close()
