"""The NSFW check: which finished pictures a safety classifier flags.

It is diffusers' `StableDiffusionSafetyChecker` (a CLIP vision model and concept
embeddings, as shipped in the `safety_checker/` folder of Stable Diffusion 1.5), loaded
from a local folder named by `[moderation] safety_checker`. Only its verdict is used:
the pictures are kept as made, and what a server shows of a flagged one (blurred,
withheld) is the bot's decision (bot/delivery.py), made per channel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

log = logging.getLogger(__name__)


class SafetyChecker:
    def __init__(self, folder: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        folder = Path(folder)
        self.model = StableDiffusionSafetyChecker.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
        if (folder / "preprocessor_config.json").exists():
            self.processor = CLIPImageProcessor.from_pretrained(folder)
        else:  # the model's own input size, with CLIP's usual normalisation
            size = self.model.config.vision_config.image_size
            self.processor = CLIPImageProcessor(size={"shortest_edge": size},
                                                crop_size={"height": size, "width": size})
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        """Whether each picture shows one of the checker's concepts. Each is padded to a square first:
        CLIP's processor crops the middle square, which of a 4:1 picture is a quarter of it."""
        if not images:
            return []
        squares = [ImageOps.pad(image.convert("RGB"), (max(image.size),) * 2, color=(0, 0, 0)) for image in images]
        pixels = self.processor(images=squares, return_tensors="pt").pixel_values
        arrays = np.zeros((len(images), 1, 1, 3), dtype=np.float32)  # the checker blacks these out, not ours
        _, flagged = self.model(clip_input=pixels.to(self.device, self.dtype), images=arrays)
        return [bool(flag) for flag in flagged]
