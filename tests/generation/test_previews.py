"""Cheap previews (generation/previews.py): the latents' colours, without the VAE.

On the built-in model the projection is compared with what the VAE makes of the same
latents: the final latents of real jobs (caught on their way into the VAE) and the
clean estimate at a preview step, region by region and by dominant colour. SDXL's
published factors are checked on float16 latents, and a tiny SDXL VAE shows why a
float16 full decode gives black previews where the projection does not.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from generation.builtin.analysis import background_colour, dominant_colour
from generation.engine import Imagine
from generation.previews import (
    SD15_PROJECTION,
    SDXL_PROJECTION,
    LatentProjection,
    preview_image,
    projection_for,
)
from generation.sampling import DenoiserTap

CELLS = 4  # regions compared: a CELLS × CELLS grid


def cell_means(image: Image.Image) -> np.ndarray:
    """The mean RGB (0–255) of each cell of a CELLS × CELLS grid: (CELLS, CELLS, 3)."""
    pixels = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float64)
    return pixels.reshape(CELLS, 64 // CELLS, CELLS, 64 // CELLS, 3).mean(axis=(1, 3))


def colour_gap(a: Image.Image, b: Image.Image) -> np.ndarray:
    """Per cell, the mean absolute RGB difference (0–255) of the two pictures' cell colours."""
    return np.abs(cell_means(a) - cell_means(b)).mean(axis=-1)


class DecodeSpy:
    """Keeps what goes into the VAE's decoder, in UNet space (× scaling_factor), call by call."""

    def __init__(self, vae) -> None:
        self.vae = vae
        self.calls: list[torch.Tensor] = []

    def __enter__(self) -> DecodeSpy:
        self._handle = self.vae.post_quant_conv.register_forward_pre_hook(self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _record(self, module, args) -> None:
        self.calls.append(args[0].detach().float() * self.vae.config.scaling_factor)


def run_with_latents(engine, request_for, prompt: str, seed: int):
    """A grid on the built-in model: its pictures, its final latents, and the first image's
    clean estimate at step 5 (what the preview of step 5 shows)."""
    model = engine.model("builtin")
    request = request_for(prompt)
    estimates: dict[int, torch.Tensor] = {}
    previews: list[Image.Image] = []
    scheduler = model.base_scheduler

    def report(progress) -> None:
        if progress.preview is not None:
            previews.append(progress.preview)
        if progress.step == 5 and progress.step < progress.total:
            estimates[5] = tap.estimate_x0(1, model.default_cfg)

    with (DecodeSpy(model.text2img.vae) as spy,
          DenoiserTap(model.text2img.unet, scheduler.alphas_cumprod, scheduler.config.prediction_type) as tap):
        result = engine.run(Imagine(request, seed=seed), report)
    finals = torch.cat(spy.calls)[-len(result.images):]  # the last decodes: whole, or one image at a time
    return result.images, finals, estimates[5], previews


PROMPTS = [  # green on black is left out: this VAE's green and black latents are close, and
    # no linear map tells them apart (the preview's star is a greyish green: "gray")
    ("a red circle on a white background", "red"),
    ("a blue square on a black background", "blue"),
    ("a green star on a gray background", "green"),
    ("a yellow triangle on a white background", "yellow"),
]


@pytest.mark.parametrize(("prompt", "colour"), PROMPTS)
def test_a_projected_preview_has_the_colours_of_the_decoded_picture(engine, request_for, prompt, colour):
    images, finals, estimate, previews = run_with_latents(engine, request_for, f"{prompt} --steps 10", seed=11)
    projection = projection_for("sd15", is_builtin=True)
    assert previews  # the engine reported previews (however it makes them)
    for image, latents in zip(images, finals, strict=True):
        preview = preview_image(latents, projection, 64)
        assert preview.size == image.size == (64, 64)
        assert dominant_colour(image) == colour
        assert dominant_colour(preview) == colour
        assert background_colour(preview) == background_colour(image)
        gaps = colour_gap(preview, image)
        # seen: 9–19 of 255 on average over the 16 cells, 30 at most
        assert gaps.mean() < 25 and gaps.max() < 45, gaps.round()
        # a projection that does not fit this VAE (SD 1.5's factors) is much further off (seen: 31–69)
        assert colour_gap(preview_image(latents, SD15_PROJECTION, 64), image).mean() > 1.5 * gaps.mean()
    # half-way, the preview already shows the final picture's subject colour
    assert dominant_colour(preview_image(estimate, projection, 64)) == colour


def test_preview_image_is_the_first_image_upscaled_to_the_requested_side():
    latents = torch.zeros((2, 4, 12, 20))
    latents[1] = 5.0  # only the first image is read
    projection = LatentProjection("grey", ((0.0, 0.0, 0.0),) * 4, bias=(0.2, 0.2, 0.2))
    image = preview_image(latents, projection, 256)
    assert image.size == (256, 154) and image.mode == "RGB"
    assert set(np.asarray(image).ravel().tolist()) == {round(1.2 * 127.5)}
    assert preview_image(latents[0], projection, 20).size == (20, 12)  # (C, H, W) works too
    with pytest.raises(ValueError, match="4-channel"):
        preview_image(torch.zeros((1, 9, 8, 8)), projection, 64)


def test_projection_for_picks_the_family_or_the_builtin_fit():
    assert projection_for("sd15", is_builtin=False) is SD15_PROJECTION
    assert projection_for("sdxl", is_builtin=False) is SDXL_PROJECTION
    builtin = projection_for("sd15", is_builtin=True)
    assert builtin.name == "builtin" and builtin.channels == 4
    assert LatentProjection.from_json(builtin.as_json()) == builtin
    with pytest.raises(ValueError, match="family"):
        projection_for("flux", is_builtin=False)


def test_sdxl_previews_of_float16_latents_are_neither_nan_nor_black():
    generator = torch.Generator().manual_seed(0)
    latents = (torch.randn((1, 4, 128, 128), generator=generator) * 1.5).half()
    latents[0, :, :8, :8] = 60000.0  # near float16's limit: products and sums would overflow in float16
    image = preview_image(latents, SDXL_PROJECTION, 256)
    pixels = np.asarray(image, dtype=np.float64)
    assert image.size == (256, 256)
    assert 40 < pixels.mean() < 215 and pixels.std() > 5  # a picture, not black, not flat
    # the same as computing from float32 latents (one level of rounding apart at most)
    reference = np.asarray(preview_image(latents.float(), SDXL_PROJECTION, 256), dtype=np.float64)
    assert np.abs(pixels - reference).max() <= 1
    # and a NaN in the latents (a broken step) gives a grey pixel, not an exception
    latents[0, :, 64, 64] = float("nan")
    assert preview_image(latents, SDXL_PROJECTION, 128).size == (128, 128)


def test_a_float16_vae_decode_overflows_where_the_projection_does_not(tmp_path):
    """SDXL's VAE overflows in float16 (diffusers upcasts it to float32: `force_upcast`);
    the engine's preview decodes in the VAE's dtype, so float16 SDXL previews are black.
    A tiny SDXL's VAE, its decoder's input scaled so its activations pass float16's
    largest value (65504) as the real VAE's do, shows both paths on the CPU."""
    from diffusers import AutoencoderKL
    from diffusers.image_processor import VaeImageProcessor
    from helpers.tiny_sdxl import build_tiny_sdxl

    vae = AutoencoderKL.from_pretrained(build_tiny_sdxl(tmp_path / "sdxl") / "vae", local_files_only=True)
    assert vae.config.force_upcast
    factor = vae.config.scaling_factor
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)) * factor  # UNet space
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(1e6)
        upcast = vae.decode(latents / factor).sample  # float32: what diffusers' SDXL pipeline does
        half = vae.to(torch.float16).decode(latents.half() / factor).sample  # what the engine's _preview does
    assert torch.isfinite(upcast).all()
    assert torch.isnan(half).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN cast to uint8
        shown = VaeImageProcessor(vae_scale_factor=8).postprocess(half.float(), output_type="pil")[0]
    assert np.asarray(shown).max() == 0  # a black preview
    image = preview_image(latents.half(), SDXL_PROJECTION, 64)
    assert image.size == (64, 64)
    assert np.asarray(image).std() > 0 and np.asarray(image).mean() > 20
