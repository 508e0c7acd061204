"""Small pieces the engine adds around a diffusers pipeline call.

- `initial_noise`: one seed per image (CPU generators, so a seed gives the same picture
  on any device);
- `--chaos`: what makes a grid's images differ in composition, not only in detail (below);
- `DenoiserTap`: reads the UNet's last noise prediction, so the engine can show what
  the picture is becoming (previews) and stop early on that estimate (`--stop`);
- `seamless_tiling`: circular padding in every convolution for `--tile`, undone after.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# --chaos C (0–100) acts in three ways, each scaled by C/100 and each keeping a picture a picture:
# - the first steps run with little guidance. Guidance is what makes a grid alike (every image is
#   pulled to the prompt's most likely picture), and the composition is settled in the first steps
#   (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval"): left unguided, the
#   layout, size and the colours the prompt leaves open vary; the later steps, guided, still draw
#   the prompt's subject;
# - each image reads the prompt a little differently (its embedding nudged by its own seed);
# - a small coarse part in the start noise, moving whole regions.
# The coarse part is small because a model cannot remove low-frequency noise it never saw in
# training: at 60 % of the variance (the first version) the grid came out as pale fields with
# nothing drawn. Measured on the built-in model, 4 prompts × 3 seeds, 20 steps, pictures that
# show the prompt's colour and shape out of 48 / mean pixel distance between a grid's images:
# chaos 0: 44 / 16.7; first version at 100: 10 / 48.8; these settings at 100: 44 / 34.4.
CHAOS_FREE_SHARE = 0.2  # at chaos 100, this share of the first steps runs...
CHAOS_EARLY_GUIDANCE = 1.0  # ...at this guidance (at chaos C: C/100 of the way from cfg to it)
CHAOS_NUDGE = 0.5  # at chaos 100, the embedding nudge's spread, as a share of the embedding's
CHAOS_COARSE_SHARE = 0.05  # at chaos 100, the share of the start noise's variance that is coarse
COARSE_GRID = 3  # the coarse noise: this many values a side, smoothly upsampled


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int], chaos: float) -> torch.Tensor:
    """Unit Gaussian latents, one image per seed; `chaos` (0–1) mixes in coarse noise.

    The coarse part (a 3×3 grid of values, smoothly upsampled) moves whole regions of the
    picture (where the subject sits, which colour dominates). Both parts are unit Gaussian at
    every element (the coarse one is divided by the interpolation's own spread at each
    position), and so is their mix: the scheduler sees the variance it expects everywhere.
    """
    channels, height, width = shape
    spread = _coarse_spread(height, width)
    images = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn((1, channels, height, width), generator=generator)
        if chaos > 0:
            coarse = torch.randn((1, channels, COARSE_GRID, COARSE_GRID), generator=generator)
            coarse = _upsample(coarse, height, width) / spread
            share = CHAOS_COARSE_SHARE * chaos
            noise = math.sqrt(1 - share) * noise + math.sqrt(share) * coarse
        images.append(noise)
    return torch.cat(images)


def _upsample(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=True)


def _coarse_spread(height: int, width: int) -> torch.Tensor:
    """Per position, the standard deviation of the upsampled coarse noise: the interpolation is
    linear in the grid's independent unit values, so it is the norm of each position's weights."""
    basis = torch.eye(COARSE_GRID * COARSE_GRID).reshape(-1, 1, COARSE_GRID, COARSE_GRID)
    weights = _upsample(basis, height, width)
    return weights.square().sum(dim=0, keepdim=True).sqrt()


def chaos_guidance(cfg: float, chaos: float, step: int, total: int) -> float:
    """The guidance for step `step` (0-based) of `total` under `--chaos` (0–1).

    Never 1 or below: diffusers decides once, from the first step's guidance, whether to run
    the unconditional half of the batch at all, and the later steps need it."""
    if cfg <= 1 or chaos <= 0 or step >= math.ceil(CHAOS_FREE_SHARE * chaos * total):
        return cfg
    return max(1.001, cfg + (CHAOS_EARLY_GUIDANCE - cfg) * chaos)


def perturb_embeddings(embeds: torch.Tensor, seeds: Sequence[int], chaos: float) -> torch.Tensor:
    """Each image's prompt embedding nudged by its own seed (`--chaos`): the prompt read a little differently."""
    if chaos <= 0:
        return embeds
    scale = CHAOS_NUDGE * chaos * embeds.std()
    nudges = [torch.randn(embeds.shape[1:], generator=torch.Generator("cpu").manual_seed(seed ^ 0x5EED))
              for seed in seeds]
    return embeds + scale * torch.stack(nudges).to(embeds.device, embeds.dtype)


class DenoiserTap:
    """Remembers the UNet's last input and output during a pipeline call (a forward hook).

    Every scheduler diffusers has feeds the UNet the variance-preserving latent x_t
    (Euler-type schedulers scale their sigma-space latents into it), so the clean-image
    estimate is x0 = (x_t - sqrt(1 - ᾱ_t)·ε) / sqrt(ᾱ_t) whatever the sampler.
    """

    def __init__(self, unet: torch.nn.Module, alphas_cumprod: torch.Tensor, prediction_type: str) -> None:
        self._unet = unet
        self._alphas = alphas_cumprod.double().cpu().numpy()
        self._prediction_type = prediction_type
        self._handle = None
        self.sample: torch.Tensor | None = None
        self.timestep: torch.Tensor | float | None = None  # read as a number only when an estimate is asked
        self.output: torch.Tensor | None = None

    def __enter__(self) -> DenoiserTap:
        self._handle = self._unet.register_forward_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, module, args, kwargs, output) -> None:
        self.sample = args[0] if args else kwargs["sample"]
        # kept as given: float() of a GPU tensor here would make the CPU wait for the GPU at every step
        self.timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        self.output = output[0] if isinstance(output, tuple) else output.sample

    def estimate_x0(self, images: int, guidance_scale: float) -> torch.Tensor:
        """The clean latents the last UNet call points at, for the first `images` of the batch."""
        if self.sample is None or self.output is None or self.timestep is None:
            raise RuntimeError("the UNet has not run yet")
        sample, output = self.sample, self.output
        sample = sample[:, :output.shape[1]]  # an inpainting UNet's input adds the mask and the masked picture
        if output.shape[0] == 2 * images:  # classifier-free guidance: [unconditional, conditional]
            uncond, cond = output.chunk(2)
            output = uncond + guidance_scale * (cond - uncond)
            sample = sample.chunk(2)[1]
        sample, output = sample[:images].float(), output[:images].float()
        timestep = float(self.timestep.flatten()[0]) if torch.is_tensor(self.timestep) else float(self.timestep)
        alpha = float(np.interp(timestep, np.arange(len(self._alphas)), self._alphas))
        a, s = math.sqrt(alpha), math.sqrt(1 - alpha)
        if self._prediction_type == "v_prediction":
            return a * sample - s * output
        if self._prediction_type == "sample":
            return output
        return (sample - s * output) / a


@contextlib.contextmanager
def seamless_tiling(enabled: bool, *modules: torch.nn.Module) -> Iterator[None]:
    """Circular padding in every padded Conv2d of `modules` while the block runs, then back."""
    if not enabled:
        yield
        return
    changed: list[tuple[torch.nn.Conv2d, str]] = []
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d) and any(p > 0 for p in _padding(layer)):
                changed.append((layer, layer.padding_mode))
                layer.padding_mode = "circular"
    try:
        yield
    finally:
        for layer, mode in changed:
            layer.padding_mode = mode


def _padding(layer: torch.nn.Conv2d) -> tuple[int, ...]:
    return layer.padding if isinstance(layer.padding, tuple) else (0,)  # "same"/"valid" strings: left alone
