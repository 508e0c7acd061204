"""What a job costs in memory: which models stay loaded, how the VAE decodes, and whether a
job fits at all, so that one that cannot is refused with a message instead of killed.

The estimate is deliberately simple and on the safe side: the weights of the model,
plus the UNet's activations (a fixed number of values per latent pixel of every image
in the batch, classifier-free guidance doubling it), plus the VAE decoder's (a fixed
number of values per output pixel of every picture decoded at once). The two
constants come from the widest tensors those networks keep alive: the SD 1.5 UNet's
GEGLU feed-forward (2,560 channels at full latent resolution) with the skip
connections held for the up path; the VAE decoder's last up blocks (256 and 128
channels at full picture resolution, a few of them live at once). bench/gpu_bench.py
prints the estimate beside the peak it measures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: bot.config reads MemorySettings without it
    import torch

GIB = 1024**3
UNET_VALUES_PER_LATENT_PIXEL = 10_000  # per image in the UNet's batch
VAE_VALUES_PER_PIXEL = 800  # per picture decoded at once
HEADROOM = 1.1  # allocator fragmentation, the text encoders' and schedulers' small tensors



class JobTooLarge(ValueError):
    """A job whose estimated peak memory exceeds the budget; the message is for its owner."""


@dataclass(frozen=True)
class MemorySettings:
    """`[models]` memory settings in config.toml."""

    vae_slicing: bool = True  # decode a grid one picture at a time (same pictures, a quarter of the peak)
    vae_tiling_above_megapixels: float = 1.5  # decode larger pictures in overlapping tiles (0: never)
    max_resident_gib: float = 0.0  # models kept loaded together, by their weights' size (0: one at a time)
    budget_gib: float = 0.0  # what a job may use at its peak (0: the device's memory)


def torch_dtype(name: str) -> torch.dtype:
    """A version's `dtype` setting ("float16", "bfloat16", "float32") as a torch dtype."""
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def device_memory_bytes(device: torch.device) -> int:
    """The memory of the device jobs run on: the GPU's, or this machine's RAM."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def module_bytes(*modules: torch.nn.Module | None) -> int:
    """The parameters and buffers of `modules`, each tensor counted once (pipelines share them)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        if module is None:
            continue
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
    return total


def estimate_peak_bytes(*, weights: int, images: int, width: int, height: int, vae_factor: int,
                        dtype: torch.dtype, guidance: bool, vae_slicing: bool, vae_tiled: bool,
                        tile_side: int) -> int:
    """The peak of one pipeline call making `images` pictures of `width`×`height`."""
    value = dtype.itemsize
    latent_pixels = (width // vae_factor) * (height // vae_factor)
    unet = images * (2 if guidance else 1) * latent_pixels * UNET_VALUES_PER_LATENT_PIXEL * value
    decoded_pixels = min(width * height, tile_side * tile_side) if vae_tiled else width * height
    vae = (1 if vae_slicing else images) * decoded_pixels * VAE_VALUES_PER_PIXEL * 4  # decodes upcast to float32
    return int((weights + max(unet, vae)) * HEADROOM)


def too_large_message(needed: int, budget: int) -> str:
    return (f"this job would need about {_gib(needed)} GiB of memory and the server has {_gib(budget)} GiB "
            f"for one: try a smaller size (an --ar closer to 1:1, or upscale a smaller picture)")


def _gib(size: int) -> str:
    return f"{size / GIB:.1f}" if size < 10 * GIB else f"{size / GIB:.0f}"
