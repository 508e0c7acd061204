"""What a finished generation hands back: the pictures and how they were made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class GenerationResult:
    images: tuple[Image.Image, ...]
    seeds: tuple[int, ...]
    # the effective settings (steps, cfg, size, sampler, model, LoRAs), as stored and shown
    parameters: dict[str, Any] = field(default_factory=dict)
    # one A1111-style "parameters" text per image, written into its PNG
    infotexts: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    # per image, whether the safety checker flagged it (empty: not checked)
    flagged: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if len(self.images) != len(self.seeds):
            raise ValueError(f"images and seeds differ in number: {len(self.images)} != {len(self.seeds)}")
        if self.infotexts and len(self.infotexts) != len(self.images):
            raise ValueError(f"one infotext per image expected, got {len(self.infotexts)} for {len(self.images)}")
