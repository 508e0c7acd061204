"""Models from config: single-file checkpoints offline, SDXL through the same engine, shared weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers.catalogs import builtin_catalog

from generation.catalog import ModelVersion
from generation.engine import Engine, Imagine, Vary
from generation.models import ModelLoadError
from generation.prompt import Segment


def on_version(request, version: str):
    """The request as `--v version` would give it (the shared fixture's catalog knows only builtin)."""
    return replace(request, params=replace(request.params, version=version))


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


@pytest.fixture(scope="module")
def single_file(tmp_path_factory) -> Path:
    from diffusers import StableDiffusionPipeline
    from helpers.single_file import save_as_single_file

    from generation.builtin import MODEL_DIR

    path = tmp_path_factory.mktemp("civitai") / "builtin-single.safetensors"
    save_as_single_file(StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True), path)
    return path


def test_a_single_file_checkpoint_loads_offline_and_draws_the_same_pixels(single_file, engine, request_for,
                                                                           monkeypatch):
    # any attempt to reach a model hub fails the test
    import huggingface_hub

    from generation.builtin import MODEL_DIR

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)

    catalog = builtin_catalog(civitai=ModelVersion("civitai", str(single_file), config=str(MODEL_DIR)))
    from_file = Engine(catalog)
    request = request_for("a red circle on a white background --steps 6 --cfg 6")
    ours = from_file.run(Imagine(on_version(request, "civitai"), seed=3))
    shipped = engine.run(Imagine(request, seed=3))
    assert ours.parameters["model"] == "civitai"
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(ours.images, shipped.images, strict=True))


def test_a_single_file_without_config_is_refused_with_a_fix(single_file):
    catalog = builtin_catalog(civitai=ModelVersion("civitai", str(single_file)))
    with pytest.raises(ModelLoadError, match="needs `config`"):
        Engine(catalog).model("civitai")


def test_a_missing_model_folder_names_the_version(tmp_path):
    catalog = builtin_catalog(gone=ModelVersion("gone", str(tmp_path / "nothing-here")))
    with pytest.raises(ModelLoadError, match="version 'gone'"):
        Engine(catalog).model("gone")


def test_the_three_pipelines_share_one_copy_of_the_weights(engine):
    model = engine.model("builtin")
    for pipe in (model.img2img, model.inpaint):
        assert pipe.unet is model.text2img.unet
        assert pipe.vae is model.text2img.vae
        assert pipe.text_encoder is model.text2img.text_encoder


def test_a_tiny_sdxl_model_runs_every_job_through_the_same_engine(tmp_path, request_for):
    from helpers.tiny_ip_adapter import write_tiny_ip_adapter
    from helpers.tiny_sdxl import build_tiny_sdxl

    folder = build_tiny_sdxl(tmp_path / "tiny-sdxl")
    catalog = builtin_catalog(xl=ModelVersion("xl", str(folder), family="sdxl"))
    engine = Engine(catalog)
    request = request_for("a (red:1.2) circle::2 blue::1 --no green --ar 2:1 --steps 3 --chaos 20")
    request = on_version(request, "xl")
    events = []
    grid = engine.run(Imagine(request, seed=1), report=events.append)
    assert [image.size for image in grid.images] == [(96, 48)] * 4  # 64² budget at 2:1, sides of 16
    assert grid.parameters["model"] == "xl" and events[-1].step == 3
    again = engine.run(Imagine(request, seed=1))
    assert np.array_equal(pixels(grid.images[0]), pixels(again.images[0]))
    varied = engine.run(Vary(request, grid.images[0], seed=2, variability="subtle"))
    assert len(varied.images) == 4 and varied.images[0].size == (96, 48)
    model = engine.model("xl")
    assert model.encoder.is_sdxl and model.native_side == 64

    # an image prompt through an IP-Adapter configured for the SDXL version
    adapter = write_tiny_ip_adapter(tmp_path / "ip-adapter", model.text2img.unet)
    catalog = builtin_catalog(xl=ModelVersion("xl", str(folder), family="sdxl", ip_adapter=str(adapter)))
    image_prompted = replace(request, image_urls=("https://example.com/a.png",))
    steered = Engine(catalog).run(Imagine(image_prompted, seed=1, images=(grid.images[1],)))
    assert steered.parameters["ip_adapter_scale"] == 0.5 and steered.images[0].size == (96, 48)
    assert not np.array_equal(pixels(steered.images[0]), pixels(grid.images[0]))


def test_sdxl_pads_the_shorter_encoders_embeddings_with_empty_chunks(tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from helpers.tiny_sdxl import build_tiny_sdxl

    from generation.conditioning import PromptEncoder

    pipe = StableDiffusionXLPipeline.from_pretrained(build_tiny_sdxl(tmp_path / "xl"), local_files_only=True)
    encoder = PromptEncoder(pipe)
    pair = [t[:, :77] for t in encoder.encode([Segment("a red circle", 1.0)]).as_pipeline_kwargs().values()][:2]
    pair = [t[..., 32:] for t in pair]  # the second encoder's half
    padded = PromptEncoder._pad_to(encoder._compels[1], pair, 154)
    assert [t.shape[1] for t in padded] == [154, 154]


def test_library_chatter_goes_to_the_log_at_debug_and_real_warnings_stay_warnings(caplog):
    import logging

    from generation.library_logs import route_library_logs

    route_library_logs()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="diffusers")  # the suite's DIFFUSERS_VERBOSITY=error otherwise
    library = logging.getLogger("diffusers.models.modeling_utils")
    library.warning("There are modules in UNet2DConditionModel that should be kept in float32: [].")
    library.warning("the LoRA has keys the model lacks")
    levels = {record.getMessage()[:12]: record.levelname for record in caplog.records
              if record.name.startswith("diffusers")}
    assert levels == {"There are mo": "DEBUG", "the LoRA has": "WARNING"}


def memory_catalog(**memory):
    from generation.memory import MemorySettings

    catalog = builtin_catalog(second=ModelVersion("second", "builtin", steps=4),
                              third=ModelVersion("third", "builtin"))
    return replace(catalog, memory=MemorySettings(**memory))


def counting_loads(monkeypatch) -> list[str]:
    import generation.engine

    loads: list[str] = []
    real = generation.engine.load_model

    def load(version, *args, **kwargs):
        loads.append(version.name)
        return real(version, *args, **kwargs)
    monkeypatch.setattr(generation.engine, "load_model", load)
    return loads


def test_versions_stay_resident_within_the_budget_and_the_least_recent_goes_first(monkeypatch, request_for):
    loads = counting_loads(monkeypatch)
    request = request_for("a red circle --steps 2")
    size = Engine(memory_catalog()).model("builtin").weight_bytes
    assert 10 * 2**20 < size < 2 * 2**30  # the built-in model's weights, counted once for three pipelines
    roomy = Engine(memory_catalog(max_resident_gib=3 * size / 2**30))
    for version in ["builtin", "second"] * 3:
        roomy.run(Imagine(on_version(request, version), seed=1, count=1))
    assert loads[1:] == ["builtin", "second"] and roomy.resident == ("builtin", "second")  # each loaded once

    loads.clear()
    one_at_a_time = Engine(memory_catalog())  # max_resident_gib = 0: today's one model
    for version in ["builtin", "second"] * 2:
        one_at_a_time.run(Imagine(on_version(request, version), seed=1, count=1))
    assert loads == ["builtin", "second"] * 2 and one_at_a_time.resident == ("second",)

    loads.clear()
    two = Engine(memory_catalog(max_resident_gib=2.5 * size / 2**30))
    for version in ["builtin", "second", "builtin", "third"]:  # builtin the more recent of the two
        two.model(version)
    assert two.resident == ("builtin", "third")  # "second" was the least recently used


def test_a_job_over_the_memory_budget_is_refused_with_a_message_before_it_runs(request_for):
    from bot.jobs import cause_for_user
    from generation.memory import JobTooLarge

    size = Engine(memory_catalog()).model("builtin").weight_bytes
    small = Engine(memory_catalog(budget_gib=1.05 * size / 2**30))
    events = []
    with pytest.raises(JobTooLarge) as refused:
        small.run(Imagine(request_for("a red circle --ar 4:1 --steps 2"), seed=1), report=events.append)
    assert not events  # refused before the first step
    assert cause_for_user(refused.value).startswith("this job would need about")
    assert "--ar" in str(refused.value)
    roomy = Engine(memory_catalog(budget_gib=size / 2**30 + 0.5))  # the weights and half a GiB of activations
    assert len(roomy.run(Imagine(request_for("a red circle --steps 2"), seed=1)).images) == 4


def test_large_pictures_decode_in_tiles_and_grids_one_picture_at_a_time(engine, request_for):
    from generation.engine import Upscale

    source_image = engine.run(Imagine(request_for("a red circle on a white background --steps 8"), seed=21)).images[0]

    tiled = Engine(memory_catalog(vae_tiling_above_megapixels=0.01))
    whole = Engine(memory_catalog(vae_tiling_above_megapixels=0, vae_slicing=False))
    request = request_for("a red circle on a white background --steps 4")
    a = tiled.run(Upscale(request, source_image, seed=2)).images[0]
    vae = tiled.model("builtin").text2img.vae
    assert vae.use_tiling and vae.use_slicing and not whole.model("builtin").text2img.vae.use_slicing
    b = whole.run(Upscale(request, source_image, seed=2)).images[0]
    assert a.size == b.size == (128, 128)
    assert np.abs(pixels(a) - pixels(b)).mean() < 8  # the same picture, decoded in blended tiles
    tiled.run(Imagine(request, seed=2, count=1))
    assert not vae.use_tiling  # a native-size picture decodes whole


def test_a_version_may_run_in_bfloat16(request_for):
    import torch

    from generation.builtin.analysis import dominant_colour

    catalog = builtin_catalog(half=ModelVersion("half", "builtin", dtype="bfloat16"))
    engine = Engine(catalog)
    result = engine.run(Imagine(on_version(request_for("a red circle on a white background --steps 8"), "half"),
                                seed=4, count=1))
    model = engine.model("half")
    assert model.text2img.unet.dtype == model.img2img.unet.dtype == torch.bfloat16  # from_pipe kept it
    assert dominant_colour(result.images[0]) == "red"


@pytest.fixture(scope="module")
def inpainting_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """The built-in model with a 9-channel inpainting UNet (random weights): as a folder and as one file."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel
    from helpers.single_file import save_as_single_file

    from generation.builtin import MODEL_DIR

    torch.manual_seed(0)
    base = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True)
    unet = UNet2DConditionModel.from_config({**base.unet.config, "in_channels": 9})
    folder = tmp_path_factory.mktemp("inpainting")
    pipe = StableDiffusionInpaintPipeline(**{**base.components, "unet": unet})
    pipe.save_pretrained(folder / "pipeline")
    save_as_single_file(pipe, folder / "inpainting.safetensors")
    return folder / "pipeline", folder / "inpainting.safetensors"


def test_an_inpainting_checkpoint_paints_region_zoom_and_pan_and_text_to_image_keeps_the_version(
        inpainting_checkpoints, request_for):
    import torch

    from generation.builtin import MODEL_DIR
    from generation.engine import Outpaint, Repaint

    folder, single = inpainting_checkpoints
    catalog = builtin_catalog(painter=ModelVersion("painter", "builtin", inpaint=str(folder)),
                              from_file=ModelVersion("from_file", "builtin", inpaint=str(single),
                                                     config=str(MODEL_DIR)))
    engine = Engine(catalog)
    request = on_version(request_for("a blue square on a yellow background --steps 3"), "painter")
    model = engine.model("painter")
    assert model.inpaint.unet.config.in_channels == 9 and model.text2img.unet.config.in_channels == 4
    assert model.inpaint.vae is model.text2img.vae and model.inpaint.text_encoder is model.text2img.text_encoder
    calls = {"inpaint": 0, "base": 0}
    model.inpaint.unet.register_forward_hook(lambda *_: calls.__setitem__("inpaint", calls["inpaint"] + 1))
    model.text2img.unet.register_forward_hook(lambda *_: calls.__setitem__("base", calls["base"] + 1))
    source = engine.run(Imagine(request, seed=1, count=1)).images[0]
    assert calls == {"inpaint": 0, "base": 3}
    previews = []
    for job in (Repaint(request, source, seed=2, box=(0.25, 0.25, 0.75, 0.75), count=1),
                Outpaint(request, source, seed=2, kind="zoom", count=1),
                Outpaint(request, source, seed=2, kind="pan", direction="left", count=1)):
        result = engine.run(job, report=previews.append)
        assert not np.isnan(pixels(result.images[0])).any()
    assert calls["inpaint"] > 0 and calls["base"] == 3  # the region, zoom and pan ran on the inpainting UNet

    from_file = Engine(catalog).model("from_file")
    assert from_file.inpaint.unet.config.in_channels == 9
    assert torch.equal(from_file.inpaint.unet.conv_in.weight, model.inpaint.unet.conv_in.weight)


def test_an_inpainting_checkpoint_as_a_version_source_is_refused_with_a_fix(inpainting_checkpoints):
    folder, _ = inpainting_checkpoints
    with pytest.raises(ModelLoadError, match=r"is an inpainting checkpoint .* as `inpaint`"):
        Engine(builtin_catalog(wrong=ModelVersion("wrong", str(folder)))).model("wrong")
    with pytest.raises(ModelLoadError, match="is not an inpainting checkpoint"):
        from generation.builtin import MODEL_DIR
        Engine(builtin_catalog(wrong=ModelVersion("wrong", "builtin", inpaint=str(MODEL_DIR)))).model("wrong")


def test_a_jobs_loras_reach_the_inpainting_checkpoints_unet_and_leave_with_the_job(inpainting_checkpoints):
    """A LoRA (here the pixel style's) changes what the 9-channel UNet paints, and is off again after."""
    import torch

    from generation.models import LoraChoice

    folder, _ = inpainting_checkpoints
    model = Engine(builtin_catalog(painter=ModelVersion("painter", "builtin", inpaint=str(folder)))).model("painter")
    unet = model.inpaint.unet
    generator = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 9, 16, 16, generator=generator), torch.tensor([500]),
              torch.randn(1, 8, unet.config.cross_attention_dim, generator=generator))

    def paint() -> torch.Tensor:
        with torch.no_grad():
            return unet(*inputs).sample

    plain = paint()
    model.loras.activate([LoraChoice("pixel", 1.0)])
    styled = paint()
    model.loras.activate([LoraChoice("pixel", 0.5)])
    half = paint()
    model.loras.deactivate()
    assert (styled - plain).abs().mean() > 1e-3 and not torch.allclose(half, styled)  # in, at its weight
    assert torch.equal(paint(), plain)  # and out after the job


def test_a_float16_sdxl_whose_vae_overflows_in_float16_still_gives_pictures_and_previews(tmp_path, request_for):
    """The final decodes are diffusers' own, which upcast SDXL's VAE to float32 (`force_upcast`);
    previews are projected from the latents. A tiny SDXL whose decoder overflows float16 (as the
    real VAE's activations do) run in float16 through the engine: text to image, Vary and --stop."""
    import torch
    from diffusers import AutoencoderKL
    from helpers.tiny_sdxl import build_tiny_sdxl

    from generation.engine import Progress

    folder = build_tiny_sdxl(tmp_path / "sdxl")
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    weight = vae.decoder.conv_in.weight
    with torch.no_grad():  # the weights still fit float16 (largest 65504); the sums they make do not
        weight.mul_(30000 / weight.abs().max())
        latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
        assert not torch.isfinite(vae.to(torch.float16).decode(latents.half()).sample).all()
        assert torch.isfinite(vae.to(torch.float32).decode(latents).sample).all()
    vae.save_pretrained(folder / "vae")
    engine = Engine(builtin_catalog(xl=ModelVersion("xl", str(folder), family="sdxl", dtype="float16")),
                    preview_every=1)
    assert engine.model("xl").text2img.vae.dtype == torch.float16
    events: list[Progress] = []
    request = on_version(request_for("a red circle --steps 3"), "xl")
    made = engine.run(Imagine(request, seed=1, count=1), report=events.append).images[0]
    varied = engine.run(Vary(request, made, seed=2, variability="strong", count=1)).images[0]
    stopped = engine.run(Imagine(on_version(request_for("a red circle --steps 3 --stop 50"), "xl"), seed=1,
                                 count=1)).images[0]
    previews = [event.preview for event in events if event.preview is not None]
    assert previews
    for image in (made, varied, stopped, *previews):
        values = np.asarray(image)
        assert values.max() > 0 and values.std() > 0  # a NaN decode shows as a black picture
