"""Small pieces the engine adds around a diffusers pipeline call.

- `initial_noise`: one seed per image (CPU generators, so a seed gives the same picture
  on any device), plus `--chaos`'s low-frequency push that makes a grid's images
  differ in layout and colour, not only in detail;
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


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int], chaos: float) -> torch.Tensor:
    """Unit Gaussian latents, one image per seed; `chaos` (0–1) mixes in coarse noise.

    The coarse part (a 3×3 grid of values, smoothly upsampled) moves whole regions of the
    picture (where the subject sits, which colour dominates), which is what makes a grid
    with chaos look less alike. The mix keeps unit variance, so schedulers see ordinary noise.
    """
    channels, height, width = shape
    images = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn((1, channels, height, width), generator=generator)
        if chaos > 0:
            coarse = torch.randn((1, channels, 3, 3), generator=generator)
            coarse = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
            coarse = coarse / coarse.std().clamp_min(1e-6)
            share = 0.6 * chaos
            noise = math.sqrt(1 - share) * noise + math.sqrt(share) * coarse
        images.append(noise)
    return torch.cat(images)


def perturb_embeddings(embeds: torch.Tensor, seeds: Sequence[int], chaos: float) -> torch.Tensor:
    """Each image's prompt embedding nudged by its own seed (`--chaos`): the prompt read a little differently."""
    if chaos <= 0:
        return embeds
    scale = 0.25 * chaos * embeds.std()
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
