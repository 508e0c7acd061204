"""The engine: one parsed request (and, for variations and upscales, a picture) to pictures.

Read `Engine.run` top to bottom: plan the effective settings from the request and the
configured model, switch on the job's LoRAs, encode the prompt, make the starting
noise, run the diffusers pipeline with a per-step callback (progress, previews,
cancellation, `--stop`), and hand back a frozen `GenerationResult`. What every
parameter does, and where it differs from Midjourney, is in docs/engine.md.

The engine is not thread-safe: one worker thread owns it (see executor.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from .canvas import Canvas, Direction, collage, make_square, mean_picture, pan, region, zoom_out
from .catalog import ModelCatalog, ModelVersion
from .conditioning import Conditioning
from .executor import CancelToken, JobCancelled, Progress
from .infotext import PROMPT_FIELD, quote
from .memory import GIB, JobTooLarge, device_memory_bytes, estimate_peak_bytes, too_large_message, torch_dtype
from .models import LoadedModel, LoraChoice, load_model
from .previews import preview_image, projection_for
from .prompt import GenerationRequest, Segment
from .results import GenerationResult
from .samplers import WEBUI_LABELS, make_scheduler, sampler_name_of
from .sampling import DenoiserTap, chaos_guidance, initial_noise, perturb_embeddings, seamless_tiling
from .sizes import output_size, size_unit

log = logging.getLogger(__name__)

Variability = Literal["subtle", "strong"]
UpscaleMode = Literal["subtle", "creative"]

GRID_SIZE = 4
SEED_MODULUS = 2**32
VARIATION_STRENGTH: dict[Variability, float] = {"subtle": 0.5, "strong": 0.85}  # Fooocus's values
UPSCALE_STRENGTH: dict[UpscaleMode, float] = {"subtle": 0.3, "creative": 0.55}
UPSCALE_FACTOR = 2
BLEND_STRENGTH = 0.65  # the collage is repainted enough to become one picture, not so much it is lost
OUTPAINT_STRENGTH = 1.0  # zoom, pan, square: the new area is painted from noise
REGION_STRENGTH = 1.0  # Vary (Region): the region is painted anew (with the new prompt, when given)
PREVIEW_EVERY = 5  # steps between preview images
# --tile: the UNet wraps around only after this share of the steps (the VAE from the start).
# A model trained with zero padding reads the picture's borders (the built-in one takes
# its background colour from them), so wrapping from the first step loses the prompt's
# colours; composition is settled early, and the later steps still make the edges meet.
TILE_UNET_FROM = 0.3
PREVIEW_SIDE = 256  # previews are this wide or high (the longer side), projected from the latents
# Outpaints on a 4-channel UNet: the band of the new area along the old picture (Canvas.held)
# is held to the prefilled canvas for this share of the steps, so the composition forms away
# from the old picture's edge (a shape begun across it was cut straight by it) and the band is
# painted to match both sides once the layout is set.
HELD_SHARE = 0.5


# ---------------------------------------------------------------------------
# jobs


@dataclass(frozen=True)
class Imagine:
    """A grid from words: `/imagine`, and 🔄 (the same request with a new seed).

    `images` are the request's image prompts, already fetched (see bot/fetch.py): the
    grid starts from them, closer to them the higher `--iw` is."""

    request: GenerationRequest
    seed: int
    count: int = GRID_SIZE
    images: tuple[Image.Image, ...] = ()


@dataclass(frozen=True)
class Vary:
    """V1–V4 and Vary (Subtle / Strong): a grid of img2img variations of one picture."""

    request: GenerationRequest
    source: Image.Image
    seed: int
    variability: Variability = "strong"
    count: int = GRID_SIZE


@dataclass(frozen=True)
class Upscale:
    """Upscale 2× (Subtle / Creative): one picture, twice the size, repainted lightly or freely."""

    request: GenerationRequest
    source: Image.Image
    seed: int
    mode: UpscaleMode = "subtle"


@dataclass(frozen=True)
class Blend:
    """/blend: 2–5 pictures mixed into one grid; the request's text (optional) steers it and
    its `--ar` is the dimensions choice (1:1, 2:3, 3:2)."""

    request: GenerationRequest
    sources: tuple[Image.Image, ...]
    seed: int
    count: int = GRID_SIZE


@dataclass(frozen=True)
class Outpaint:
    """Zoom Out (factor 1–2), Pan (a direction) and Make Square: the model paints around the picture."""

    request: GenerationRequest
    source: Image.Image
    seed: int
    kind: Literal["zoom", "pan", "square"]
    factor: float = 2.0
    direction: Direction = "right"
    count: int = GRID_SIZE


@dataclass(frozen=True)
class Repaint:
    """Vary (Region): only `box` (fractions left, top, right, bottom) is painted again."""

    request: GenerationRequest
    source: Image.Image
    seed: int
    box: tuple[float, float, float, float]
    count: int = GRID_SIZE


EngineJob = Imagine | Vary | Upscale | Blend | Outpaint | Repaint


def image_prompt_strength(image_weight: float) -> float:
    """`--iw` (0–3) to how much of an image prompt is repainted: 0 → all of it (the image is
    ignored), 1 (default) → 0.8, 3 → 0.4 (close to the image)."""
    return min(1.0, max(0.4, 1.0 - 0.2 * image_weight))


def ip_adapter_scale(image_weight: float) -> float:
    """`--iw` (0–3) to an IP-Adapter's scale: 0 → the text alone, 1 (default) → 0.5 (the
    balance of text and picture the IP-Adapter authors suggest), 2 and over → 1.0."""
    return min(1.0, max(0.0, 0.5 * image_weight))


def job_strength(job: EngineJob, model: LoadedModel) -> float:
    """How much of the job's starting picture is repainted (1: painted from noise)."""
    if isinstance(job, Imagine):
        if not job.images or model.ip_adapter is not None:  # an IP-Adapter steers text-to-image
            return 1.0
        return image_prompt_strength(job.request.params.image_weight)
    if isinstance(job, Vary):
        return VARIATION_STRENGTH[job.variability]
    if isinstance(job, Upscale):
        return UPSCALE_STRENGTH[job.mode]
    if isinstance(job, Blend):
        return BLEND_STRENGTH
    return REGION_STRENGTH if isinstance(job, Repaint) else OUTPAINT_STRENGTH


def image_seeds(seed: int, count: int) -> tuple[int, ...]:
    """Image k of a job gets seed + k (wrapping at 2³²): `--seed 7` gives seeds 7, 8, 9, 10."""
    return tuple((seed + k) % SEED_MODULUS for k in range(count))


# ---------------------------------------------------------------------------
# the plan: what a request means on the configured model


@dataclass(frozen=True)
class GenerationPlan:
    """The effective settings of one job, as stored, shown (✉️) and written into the PNGs."""

    model: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str  # a WebUI name, or the model's own scheduler class
    sampler_name: str | None  # what make_scheduler takes (None: the model's own)
    loras: tuple[LoraChoice, ...]
    style_suffix: str
    chaos: int
    stop: int
    stylize: int
    tile: bool
    strength: float = 1.0  # how much of a starting picture is repainted (1: from noise)

    def as_parameters(self) -> dict[str, Any]:
        return {
            "model": self.model, "width": self.width, "height": self.height, "steps": self.steps,
            "cfg": self.cfg, "sampler": self.sampler, "chaos": self.chaos, "stop": self.stop,
            "stylize": self.stylize, "tile": self.tile, "style_suffix": self.style_suffix,
            "loras": [{"name": lora.name, "weight": lora.weight} for lora in self.loras],
        }


def held_until(total: int, stop_at: int) -> int:
    """The step after which an outpaint's held band is let go: half way (HELD_SHARE), or the step
    before `--stop` ends the loop, so that the band is always painted at least once."""
    return max(1, min(math.ceil(total * HELD_SHARE), stop_at - 1))


def latent_mask(mask: Image.Image, vae_factor: int) -> torch.Tensor:
    """A mask on the latent grid as the inpainting pipelines keep it: (1, 1, h, w), 1.0 = paint."""
    cells = mask.resize((mask.width // vae_factor, mask.height // vae_factor), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(cells) > 127).float()[None, None]


def denoising_schedule(steps: int, strength: float) -> int:
    """The schedule diffusers is given for `steps` at `strength`, long enough for one step to run.

    Image-to-image runs the last int(schedule × strength) steps of the schedule (as in
    the WebUI), so `--steps 2` at strength 0.3 would run none: the schedule is
    lengthened until one step runs. The infotext's `Steps:` is this schedule.
    """
    schedule = steps
    while int(schedule * strength) < 1:  # diffusers' own rounding (get_timesteps)
        schedule += 1
    return schedule


def denoising_steps(steps: int, strength: float) -> int:
    """How many denoising steps a schedule of `steps` runs at `strength`."""
    return min(int(steps * strength), steps)


def guidance_for_stylize(stylize: int, default_cfg: float) -> float:
    """`--stylize` (0–1000, default 100) to guidance: monotone, higher stylize = freer.

    0 → 1.6× the model's default guidance (very literal), 100 → the default,
    1000 → 0.4× (loose). Linear below 100, linear in log10(stylize) above.
    """
    factor = 1.6 - 0.6 * stylize / 100 if stylize <= 100 else 1.0 - 0.6 * math.log10(stylize / 100)
    return round(default_cfg * factor, 2)


def plan_generation(request: GenerationRequest, catalog: ModelCatalog, model: LoadedModel,
                    size: tuple[int, int] | None = None) -> GenerationPlan:
    """The job's effective settings; `size` is given for jobs that start from a picture."""
    params = request.params
    version = resolve_version(request, catalog)
    raw = params.style == "raw"
    loras = [LoraChoice(lora.name, lora.weight) for lora in request.loras]
    suffixes = []
    if params.niji is not None and (niji := catalog.niji[str(params.niji)]).lora is not None:
        loras.append(LoraChoice(niji.lora, niji.lora_weight))
    if not raw:
        if version.style_lora:
            loras.append(LoraChoice(version.style_lora, version.style_lora_weight))
        suffixes.append(version.style_suffix)
    if params.style not in (None, "raw"):
        style = catalog.styles[params.style]
        if style.lora:
            loras.append(LoraChoice(style.lora, style.lora_weight))
        suffixes.append(style.suffix)
    width, height = size or output_size(params.aspect_ratio, model.native_side,
                                        size_unit(model.native_side, model.alignment))
    steps = params.steps or max(1, round(model.default_steps * params.quality))
    cfg = params.cfg if params.cfg is not None else guidance_for_stylize(params.stylize, model.default_cfg)
    sampler_name = params.sampler or version.sampler
    return GenerationPlan(
        model=version.name, width=width, height=height, steps=steps, cfg=cfg,
        sampler=sampler_name or sampler_name_of(model.base_scheduler), sampler_name=sampler_name,
        loras=_merge_loras(loras), style_suffix=" ".join(s.strip(" ,") for s in suffixes if s.strip(" ,")),
        chaos=params.chaos, stop=params.stop, stylize=params.stylize, tile=params.tile,
    )


def resolve_version(request: GenerationRequest, catalog: ModelCatalog) -> ModelVersion:
    """The model a (validated) request runs on: its niji model, its `--v`, or the default."""
    params = request.params
    if params.niji is not None and (model := catalog.niji[str(params.niji)].model) is not None:
        return catalog.versions[model]
    return catalog.versions[params.version or catalog.default_version]


def _merge_loras(loras: list[LoraChoice]) -> tuple[LoraChoice, ...]:
    """The same LoRA from two places (a tag and --niji): one adapter, the weights added."""
    merged: dict[str, float] = {}
    for lora in loras:
        merged[lora.name] = merged.get(lora.name, 0.0) + lora.weight
    return tuple(LoraChoice(name, weight) for name, weight in merged.items())


def styled_segments(request: GenerationRequest, plan: GenerationPlan) -> tuple[Segment, ...]:
    """The segments with the style suffix added to each positive one, weighted by `--stylize`.

    The suffix rides at emphasis stylize/100 (capped at 2): absent at `--s 0`, as
    configured at the default 100, stronger above it.
    """
    weight = min(plan.stylize / 100, 2.0)
    if not plan.style_suffix or weight == 0:
        return request.segments
    suffix = f"({plan.style_suffix}:{weight:g})"
    return tuple(replace(s, text=f"{s.text}, {suffix}") if s.weight > 0 else s for s in request.segments)


def infotext(request: GenerationRequest, plan: GenerationPlan, seed: int, extra: dict[str, Any] | None = None) -> str:
    """The A1111 `parameters` text: prompt, negative prompt, then `Key: value` pairs (read back
    by generation/infotext.py). `Steps:` is the schedule: image-to-image jobs run its last
    int(steps × Denoising strength) steps, as in the WebUI."""
    segments = request.positive_segments
    if len(segments) == 1 and segments[0].weight == 1:
        positive = segments[0].text
    else:
        positive = " ".join(f"{s.text}::{s.weight:g}" for s in segments)
    positive += "".join(f" <lora:{lora.name}:{lora.weight:g}>" for lora in plan.loras)
    negative = ", ".join(s.text for s in request.negative_segments)
    fields = {"Steps": plan.steps, "Sampler": WEBUI_LABELS.get(plan.sampler, plan.sampler), "CFG scale": plan.cfg,
              "Seed": seed, "Size": f"{plan.width}x{plan.height}", "Model": plan.model, **(extra or {})}
    if plan.stop < 100:
        fields["Stop"] = f"{plan.stop}%"
    if plan.chaos:
        fields["Chaos"] = plan.chaos
    if plan.tile:
        fields["Tiling"] = "True"
    fields[PROMPT_FIELD] = replace(request, image_urls=()).to_prompt()  # what `python -m bot vary FILE` reads
    lines = [positive.strip()]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in fields.items()))
    return "\n".join(lines)


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Left (or top) edges of tiles covering `length`, each overlapping the next by at least `overlap`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _feather(side: int, overlap: int) -> np.ndarray:
    """A tile's blending weight: 1 inside, ramping down to near 0 across `overlap` at each edge."""
    ramp = np.minimum(1.0, (np.arange(side) + 0.5) / overlap)
    ramp = np.minimum(ramp, ramp[::-1])
    return np.outer(ramp, ramp)[:, :, None]


# ---------------------------------------------------------------------------
# the engine


Report = Callable[[Progress], None]


def _ignore(_: Progress) -> None:
    pass


class Engine:
    """Owns the loaded models and runs one job at a time on them.

    `dtype` is the default for versions that name none in config.toml. Models stay loaded
    up to `[models] max_resident_gib` of weights (the least recently used goes first).
    """

    def __init__(self, catalog: ModelCatalog, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, preview_every: int = PREVIEW_EVERY) -> None:
        self.catalog = catalog
        self.memory = catalog.memory
        self.device = torch.device(device)
        self.dtype = dtype
        self.preview_every = preview_every
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._sizes: dict[str, int] = {}  # bytes of each version's weights, once loaded
        self.resident: tuple[str, ...] = ()  # the versions loaded now; replaced whole, so other threads may read it

    def model(self, name: str) -> LoadedModel:
        """The loaded version `name`, loading it (and unloading the least recently used) when needed."""
        if name in self._models:
            self._models.move_to_end(name)
            self.resident = tuple(self._models)
            return self._models[name]
        budget = self.memory.max_resident_gib * GIB
        expected = self._sizes.get(name, 0)
        while self._models and (not budget or sum(self._sizes[n] for n in self._models) + expected > budget):
            self._unload(next(iter(self._models)))
        log.info("loading model version %s", name)
        version = self.catalog.versions[name]
        dtype = torch_dtype(version.dtype) if version.dtype else self.dtype
        model = load_model(version, self.catalog.lora_dir, device=self.device, dtype=dtype)
        if self.memory.vae_slicing:
            model.text2img.vae.enable_slicing()
        self._models[name] = model
        self._sizes[name] = model.weight_bytes
        while budget and len(self._models) > 1 and sum(self._sizes[n] for n in self._models) > budget:
            self._unload(next(iter(self._models)))
        self.resident = tuple(self._models)
        return model

    def _unload(self, name: str) -> None:
        del self._models[name]
        self.resident = tuple(self._models)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("unloaded model version %s", name)

    def check_fits(self, model: LoadedModel, plan: GenerationPlan, images: int) -> int:
        """Refuse a job whose estimated peak memory exceeds the budget, before it starts; else its estimate."""
        budget = int(self.memory.budget_gib * GIB) or device_memory_bytes(self.device)
        if plan.width * plan.height > 4 * model.native_side**2:  # upscaled in native-size tiles, one at a time
            width = height = model.native_side
            images = 1
        else:
            width, height = plan.width, plan.height
        vae = model.text2img.vae
        needed = estimate_peak_bytes(
            weights=sum(self._sizes[n] for n in self._models), images=images, width=width, height=height,
            vae_factor=model.text2img.vae_scale_factor, dtype=model.text2img.unet.dtype, guidance=plan.cfg > 1,
            vae_slicing=self.memory.vae_slicing, vae_tiled=self._vae_tiled(width, height),
            tile_side=int(getattr(vae, "tile_sample_min_size", 0) or model.native_side))
        if needed > budget:
            raise JobTooLarge(too_large_message(needed, budget))
        return needed

    def _vae_tiled(self, width: int, height: int) -> bool:
        threshold = self.memory.vae_tiling_above_megapixels
        return bool(threshold) and width * height > threshold * 1e6

    def run(self, job: EngineJob, report: Report = _ignore, token: CancelToken | None = None) -> GenerationResult:
        """Make the job's pictures; raises `JobCancelled` when `token` is cancelled."""
        token = token or CancelToken()
        if job.request.image_urls and not (isinstance(job, Imagine) and job.images):
            # nothing is silently ignored: image prompts must be fetched first (bot/fetch.py)
            raise ValueError("this job names image prompts but carries no pictures: fetch them first")
        started = time.perf_counter()
        model = self.model(resolve_version(job.request, self.catalog).name)
        plan, seeds = self._plan(job, model)
        self.check_fits(model, plan, len(seeds))
        timings: dict[str, float] = {}
        with self._adapters(model, plan):
            mark = time.perf_counter()
            conditioning = model.encoder.encode(styled_segments(job.request, plan))
            timings["encode"] = time.perf_counter() - mark
            mark = time.perf_counter()
            images, extra = self._paint(job, model, plan, conditioning, seeds, report, token)
            timings["denoise"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started
        parameters = plan.as_parameters() | {"seeds": list(seeds)}
        if "Denoising strength" in extra:
            parameters["strength"] = extra["Denoising strength"]
        if "IP-Adapter scale" in extra:
            parameters["ip_adapter_scale"] = extra["IP-Adapter scale"]
        return GenerationResult(
            images=tuple(images), seeds=seeds, parameters=parameters,
            infotexts=tuple(infotext(job.request, plan, seed, extra) for seed in seeds), timings=timings,
        )

    def _plan(self, job: EngineJob, model: LoadedModel) -> tuple[GenerationPlan, tuple[int, ...]]:
        """The effective settings and the seeds: the output size and the strength follow the job's kind."""
        strength = job_strength(job, model)
        if isinstance(job, Imagine | Blend):
            plan = plan_generation(job.request, self.catalog, model)
            return (replace(plan, strength=strength, steps=denoising_schedule(plan.steps, strength)),
                    image_seeds(job.seed, job.count))
        if isinstance(job, Upscale):
            width, height = job.source.size
            size = self._fit((width * UPSCALE_FACTOR, height * UPSCALE_FACTOR), model)
            count = 1
        elif isinstance(job, Outpaint):
            size = self._canvas(job, model).image.size
            count = job.count
        else:  # Vary, Repaint: the picture's own size
            size, count = self._fit(job.source.size, model), job.count
        plan = plan_generation(job.request, self.catalog, model, size=size)
        return (replace(plan, chaos=0, strength=strength, steps=denoising_schedule(plan.steps, strength)),
                image_seeds(job.seed, count))

    def _canvas(self, job: Outpaint | Repaint, model: LoadedModel) -> Canvas:
        source = job.source.convert("RGB")
        fitted = self._fit(source.size, model)
        if fitted != source.size:
            source = source.resize(fitted, Image.Resampling.LANCZOS)
        if isinstance(job, Repaint):
            return region(source, job.box, model.alignment)
        if job.kind == "zoom":
            return zoom_out(source, job.factor, model.alignment)
        if job.kind == "pan":
            return pan(source, job.direction, model.alignment)
        return make_square(source, model.alignment)

    def _paint(self, job: EngineJob, model: LoadedModel, plan: GenerationPlan, conditioning: Conditioning,
               seeds: tuple[int, ...], report: Report, token: CancelToken) -> tuple[list[Image.Image], dict[str, Any]]:
        """The job's pictures, and what its infotext adds to the plan's settings."""
        size = (plan.width, plan.height)
        if isinstance(job, Imagine) and not job.images:
            return self._text_to_image(model, plan, conditioning, seeds, report, token), {}
        if isinstance(job, Imagine) and model.ip_adapter is not None:
            scale = ip_adapter_scale(job.request.params.image_weight)
            with model.ip_adapter.attached(model.text2img, scale):
                images = self._text_to_image(model, plan, conditioning, seeds, report, token,
                                             ip_adapter_image=[[image.convert("RGB") for image in job.images]])
            return images, {"IP-Adapter scale": scale, "Image prompts": len(job.images)}
        strength = plan.strength
        if isinstance(job, Imagine):  # no IP-Adapter: image-to-image from the pictures' mean
            start = mean_picture(list(job.images), size)
            images = self._image_to_image(model, plan, conditioning, [start] * len(seeds), strength, seeds,
                                          report, token)
            return images, {"Denoising strength": strength, "Image prompts": len(job.images)}
        if isinstance(job, Vary):
            source = job.source.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            images = self._image_to_image(model, plan, conditioning, [source] * len(seeds), strength, seeds,
                                          report, token)
            return images, {"Denoising strength": strength, "Variation": job.variability}
        if isinstance(job, Upscale):
            source = job.source.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            image = self._upscale_pass(model, plan, conditioning, source, strength, seeds[0], report, token)
            return [image], {"Denoising strength": strength, "Upscale": f"{UPSCALE_FACTOR}x {job.mode}"}
        if isinstance(job, Blend):
            starts = [collage(list(job.sources), size, seed) for seed in seeds]
            images = self._image_to_image(model, plan, conditioning, starts, strength, seeds, report, token)
            return images, {"Denoising strength": strength, "Blend": len(job.sources)}
        canvas = self._canvas(job, model)
        pipe = model.inpaint
        release = None
        if (canvas.held is not None and pipe.unet.config.in_channels == 4
                and math.ceil(plan.steps * plan.stop / 100) >= 2):  # a step to hold and one to paint the band
            release = latent_mask(canvas.mask, pipe.vae_scale_factor)
        painted = self._denoise(model, pipe, plan, conditioning.repeat(len(seeds)), seeds, report, token,
                                release_mask=release, image=[canvas.image] * len(seeds),
                                mask_image=[canvas.mask if release is None else canvas.first_mask()] * len(seeds),
                                strength=strength, width=plan.width, height=plan.height)
        what = ("Region " + ",".join(f"{edge:g}" for edge in job.box) if isinstance(job, Repaint)
                else f"zoom {job.factor:g}x" if job.kind == "zoom" else f"pan {job.direction}"
                if job.kind == "pan" else "make square")
        return [canvas.restore(image) for image in painted], {"Denoising strength": strength, "Outpaint": what}

    # -- the steps ------------------------------------------------------------

    @contextlib.contextmanager
    def _adapters(self, model: LoadedModel, plan: GenerationPlan) -> Iterator[None]:
        """The job's LoRAs on for the job, all off after it, whatever happens."""
        model.loras.activate(plan.loras)
        try:
            yield
        finally:
            model.loras.deactivate()

    @staticmethod
    def _fit(size: tuple[int, int], model: LoadedModel) -> tuple[int, int]:
        """A picture's size rounded to what the model can take."""
        unit = model.alignment
        return tuple(max(unit, round(side / unit) * unit) for side in size)  # type: ignore[return-value]

    def _text_to_image(self, model: LoadedModel, plan: GenerationPlan, conditioning: Conditioning,
                       seeds: tuple[int, ...], report: Report, token: CancelToken,
                       **inputs: Any) -> list[Image.Image]:
        pipe = model.text2img
        factor = pipe.vae_scale_factor
        latents = initial_noise(seeds, (pipe.unet.config.in_channels, plan.height // factor, plan.width // factor),
                                plan.chaos / 100)
        batch = conditioning.repeat(len(seeds))
        batch = replace(batch, prompt_embeds=perturb_embeddings(batch.prompt_embeds, seeds, plan.chaos / 100))
        return self._denoise(model, pipe, plan, batch, seeds, report, token,
                             latents=latents.to(model.device, pipe.unet.dtype), width=plan.width, height=plan.height,
                             **inputs)

    def _image_to_image(self, model: LoadedModel, plan: GenerationPlan, conditioning: Conditioning,
                        sources: list[Image.Image], strength: float, seeds: tuple[int, ...],
                        report: Report, token: CancelToken) -> list[Image.Image]:
        return self._denoise(model, model.img2img, plan, conditioning.repeat(len(seeds)), seeds, report, token,
                             image=sources, strength=strength)

    def _upscale_pass(self, model: LoadedModel, plan: GenerationPlan, conditioning: Conditioning,
                      source: Image.Image, strength: float, seed: int, report: Report,
                      token: CancelToken) -> Image.Image:
        """img2img over the resampled picture; in overlapping native-size tiles when it is large.

        Up to 4× the model's native pixel count runs in one pass. Beyond that each tile
        is repainted on its own (seed + tile number) and the tiles are blended with linear
        ramps over their overlap, so memory stays that of one native-size picture.
        """
        side = model.native_side
        if plan.width * plan.height <= 4 * side * side:
            return self._image_to_image(model, plan, conditioning, [source], strength, (seed,), report, token)[0]
        overlap = max(model.alignment, side // 4 // model.alignment * model.alignment)
        xs, ys = _tile_starts(plan.width, side, overlap), _tile_starts(plan.height, side, overlap)
        tiles = [(x, y) for y in ys for x in xs]
        ramp = _feather(side, overlap)
        total = np.zeros((plan.height, plan.width, 3))
        weight = np.zeros((plan.height, plan.width, 1))
        tile_plan = replace(plan, width=side, height=side)
        for number, (x, y) in enumerate(tiles):
            def tile_report(event: Progress, number: int = number) -> None:
                report(Progress(number * event.total + event.step, len(tiles) * event.total, event.preview))
            crop = source.crop((x, y, x + side, y + side))
            (painted,) = self._image_to_image(model, tile_plan, conditioning, [crop], strength,
                                              ((seed + number) % SEED_MODULUS,), tile_report, token)
            total[y:y + side, x:x + side] += np.asarray(painted, dtype=np.float64) * ramp
            weight[y:y + side, x:x + side] += ramp
        return Image.fromarray(np.clip(np.round(total / weight), 0, 255).astype(np.uint8))

    def _denoise(self, model: LoadedModel, pipe, plan: GenerationPlan, conditioning: Conditioning,
                 seeds: tuple[int, ...], report: Report, token: CancelToken,
                 release_mask: torch.Tensor | None = None, **inputs: Any) -> list[Image.Image]:
        """One pipeline call with the job's sampler, tiling and per-step callback.

        `release_mask` (an inpainting pipeline's whole mask, latent-sized): from HELD_SHARE of
        the steps on, the band held back by the first mask is painted too (`Canvas.held`)."""
        pipe.scheduler = make_scheduler(plan.sampler_name, model.base_scheduler, seeds)
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        images = len(seeds)
        stop_fraction = plan.stop / 100

        tiling = contextlib.ExitStack()
        projection = projection_for(model.version.family, model.version.is_builtin)

        def on_step_end(pipe, step_index: int, timestep, callback_kwargs: dict) -> dict:
            if token.cancelled:
                raise JobCancelled("cancelled")
            done, total = step_index + 1, pipe.num_timesteps
            if plan.tile and done == math.ceil(total * TILE_UNET_FROM):
                tiling.enter_context(seamless_tiling(True, pipe.unet))
            stop_at = max(1, math.ceil(total * stop_fraction))
            guidance = pipe.guidance_scale  # the step that just ran
            # the next step's (--chaos); diffusers' callback docs change guidance this way ("dynamic CFG")
            pipe._guidance_scale = chaos_guidance(plan.cfg, plan.chaos / 100, done, total)
            released = {}
            if release_mask is not None and done == held_until(total, stop_at):
                mask = callback_kwargs["mask"]
                released["mask"] = torch.maximum(mask, release_mask.to(mask.device, mask.dtype))
            if done >= stop_at and done < total:  # --stop: decode the current estimate
                pipe._interrupt = True  # diffusers' documented way to end the loop early
                report(Progress(stop_at, stop_at))
                latents = tap.estimate_x0(images, guidance)
                return {"latents": latents.to(callback_kwargs["latents"].dtype)}
            preview = None
            if self.preview_every and done % self.preview_every == 0 and done < stop_at:
                preview = preview_image(tap.estimate_x0(1, guidance), projection, PREVIEW_SIDE)
            report(Progress(done, stop_at, preview))
            return released

        if self._vae_tiled(plan.width, plan.height):
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        alphas = pipe.scheduler.alphas_cumprod
        with (DenoiserTap(pipe.unet, alphas, pipe.scheduler.config.prediction_type) as tap,
              seamless_tiling(plan.tile, pipe.vae), tiling):
            output = pipe(
                **conditioning.as_pipeline_kwargs(), **inputs,
                num_inference_steps=plan.steps, generator=generators,
                guidance_scale=chaos_guidance(plan.cfg, plan.chaos / 100, 0, plan.steps),
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents", "mask"] if release_mask is not None else ["latents"],
            )
        return list(output.images)
