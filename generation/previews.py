"""Cheap previews: the latents seen as colours, without the VAE ("approx cheap").

A full VAE decode for every preview costs about as much as several UNet steps at 512²
and 1024², and in float16 SDXL's VAE overflows (black previews) unless it is upcast.
The WebUI ("Approx cheap") and ComfyUI ("Latent2RGB") instead map each latent pixel to a
colour with one fixed linear map: a 4×3 matrix and a bias. That is what this module does.

Conventions (the same as ComfyUI's and the WebUI's):

- the input is the latents the UNet works on, i.e. the VAE's latents × `scaling_factor`
  (what `sampling.DenoiserTap.estimate_x0` returns) — not divided by it;
- the output is RGB in −1..1, the VAE's output range (−1 black, 1 white); `preview_image`
  clamps it and maps it to 0–255.

The built-in model's projection is fitted from its own VAE by
scripts/fit_preview_projection.py and kept beside the weights in
generation/builtin/model/preview_projection.json (refit it whenever the VAE is retrained).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from .builtin import MODEL_DIR

BUILTIN_PROJECTION_FILE = MODEL_DIR / "preview_projection.json"


@dataclass(frozen=True)
class LatentProjection:
    """A linear map from a latent pixel (one value per channel) to RGB in −1..1.

    `matrix` has one row per latent channel, each (R, G, B); `bias` is added after.
    It applies to UNet-space latents (VAE latents × scaling_factor). `smoothing` is the
    sigma, in latent pixels, of a Gaussian blur of the result (0: none): the built-in
    VAE's latents carry a fine texture its decoder smooths away; with the blur the fit's
    held-out error falls from 0.38 to 0.31 (see scripts/fit_preview_projection.py)."""

    name: str
    matrix: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    smoothing: float = 0.0

    @property
    def channels(self) -> int:
        return len(self.matrix)

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        """(…, channels, H, W) latents of any dtype → (…, 3, H, W) float32 RGB in about −1..1, unclamped.

        Computed in float32 on the latents' device, so float16 latents cannot overflow."""
        if latents.shape[-3] != self.channels:
            raise ValueError(f"the {self.name!r} projection takes {self.channels}-channel latents, "
                             f"not {latents.shape[-3]}")
        x = latents.detach().to(torch.float32)
        weight = torch.tensor(self.matrix, dtype=torch.float32, device=x.device)
        bias = torch.tensor(self.bias, dtype=torch.float32, device=x.device)
        return gaussian_blur(torch.einsum("...chw,cr->...rhw", x, weight), self.smoothing) + bias[:, None, None]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "matrix": [list(row) for row in self.matrix], "bias": list(self.bias),
                "smoothing": self.smoothing}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatentProjection:
        matrix = tuple(tuple(float(v) for v in row) for row in data["matrix"])
        bias = tuple(float(v) for v in data.get("bias", (0.0, 0.0, 0.0)))
        if not matrix or any(len(row) != 3 for row in matrix) or len(bias) != 3:
            raise ValueError("a latent projection is a channels × 3 matrix and a bias of 3")
        return cls(name=str(data.get("name", "fitted")), matrix=matrix, bias=bias,  # type: ignore[arg-type]
                   smoothing=float(data.get("smoothing", 0.0)))


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(…, C, H, W) blurred over H and W (edges repeated); unchanged when sigma is 0."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    shape = images.shape
    x = images.reshape(-1, 1, *shape[-2:])
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(shape)


# The published approximate factors, as ComfyUI ships them (comfy/latent_formats.py,
# classes SD15 and SDXL: `latent_rgb_factors`, `latent_rgb_factors_bias`; applied by
# latent_preview.py's Latent2RGBPreviewer to the sampler's x0, output clamped to −1..1).
# The WebUI's "Approx cheap" (modules/sd_vae_approx.py, cheap_approximation) uses the
# same kind of map with older SD 1.5 numbers and no bias.
SD15_PROJECTION = LatentProjection(
    name="sd15",
    matrix=(
        #   R        G        B
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
)
SDXL_PROJECTION = LatentProjection(
    name="sdxl",
    matrix=(
        #   R        G        B
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    bias=(0.1084, -0.0175, -0.0011),
)
FAMILY_PROJECTIONS: dict[str, LatentProjection] = {"sd15": SD15_PROJECTION, "sdxl": SDXL_PROJECTION}


def load_projection(path: Path) -> LatentProjection:
    return LatentProjection.from_json(json.loads(path.read_text(encoding="utf-8")))


@functools.lru_cache(maxsize=1)
def builtin_projection() -> LatentProjection:
    """The built-in model's fitted projection (scripts/fit_preview_projection.py writes it)."""
    if not BUILTIN_PROJECTION_FILE.is_file():
        raise FileNotFoundError(f"{BUILTIN_PROJECTION_FILE} is missing: run scripts/fit_preview_projection.py")
    return load_projection(BUILTIN_PROJECTION_FILE)


def projection_for(family: str, is_builtin: bool) -> LatentProjection:
    """The projection for a model: the built-in model's own fit, else its family's published factors."""
    if is_builtin:
        return builtin_projection()
    try:
        return FAMILY_PROJECTIONS[family]
    except KeyError:
        raise ValueError(f"no latent preview projection for model family {family!r}") from None


def preview_image(latents: torch.Tensor, projection: LatentProjection, side: int) -> Image.Image:
    """The first image of `latents` ((B, C, H, W) or (C, H, W), UNet space, any dtype or device)
    as an RGB picture whose longer side is `side` (upscaled bilinearly from one pixel per latent)."""
    if latents.ndim == 4:
        latents = latents[0]
    if latents.ndim != 3:
        raise ValueError(f"latents must be (B, C, H, W) or (C, H, W), not {tuple(latents.shape)}")
    rgb = projection.project(latents)
    rgb = torch.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)
    pixels = ((rgb + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(pixels, "RGB")
    height, width = pixels.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)
