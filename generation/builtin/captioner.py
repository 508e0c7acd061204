"""The built-in captioner: /describe for the built-in model's world of coloured shapes.

A small convolutional network reads a picture (resized to 48×48) and predicts the
background colour, how many shapes there are, and for each of up to two shapes (left or
top one first) its shape, colour, size and position. `suggestions()` turns that into four
prompts in the words the built-in model was trained on.

Trained on the synthetic world (`python -m bot train-builtin --phase captioner`, about
seven minutes on one core), with blur and noise so that it also reads the model's softer pictures.
Weights: generation/builtin/captioner/ (safetensors, 1 MB).
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from . import BUILTIN_DIR
from .world import PALETTE, POSITION_PHRASES, POSITIONS, SHAPE_COLOURS, SHAPES, SIZES, render, sample_example

log = logging.getLogger(__name__)

CAPTIONER_DIR = BUILTIN_DIR / "captioner"
SIDE = 48
BACKGROUNDS = tuple(PALETTE)
COLOURS = tuple(SHAPE_COLOURS)
SIZE_NAMES = tuple(SIZES)
POSITION_NAMES = tuple(POSITIONS)
SLOTS = 2
# per slot: the class lists, each with a last class meaning "no shape here"
SLOT_HEADS = {"shape": len(SHAPES) + 1, "colour": len(COLOURS) + 1, "size": len(SIZE_NAMES) + 1,
              "position": len(POSITION_NAMES) + 1}


class CaptionerNet(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.SiLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1, stride=2), nn.GroupNorm(4, c_out), nn.SiLU())

        self.features = nn.Sequential(block(5, width), block(width, width * 2), block(width * 2, width * 2),
                                      block(width * 2, width * 4))  # 48 -> 3
        self.flat = nn.Sequential(nn.Flatten(), nn.Linear(width * 4 * 9, 256), nn.SiLU())
        self.background = nn.Linear(256, len(BACKGROUNDS))
        self.count = nn.Linear(256, SLOTS + 1)
        self.slots = nn.ModuleDict({name: nn.Linear(256, SLOTS * size) for name, size in SLOT_HEADS.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, _, height, width = pixels.shape
        ys = torch.linspace(-1, 1, height).view(1, 1, height, 1).expand(batch, 1, height, width)
        xs = torch.linspace(-1, 1, width).view(1, 1, 1, width).expand(batch, 1, height, width)
        hidden = self.flat(self.features(torch.cat([pixels, xs, ys], dim=1)))  # coordinates: for positions
        out = {"background": self.background(hidden), "count": self.count(hidden)}
        for name, head in self.slots.items():
            out[name] = head(hidden).view(batch, SLOTS, SLOT_HEADS[name])
        return out


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    arrays = [np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32)
              for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1


@dataclass(frozen=True)
class ShapeReading:
    shape: str
    colour: str
    size: str
    position: str
    alternatives: tuple[str, ...]  # other shapes, most likely first
    other_colours: tuple[str, ...]


@dataclass(frozen=True)
class Reading:
    background: str
    shapes: tuple[ShapeReading, ...]


class Captioner:
    """The trained network, and the words it gives a picture."""

    def __init__(self, directory: Path = CAPTIONER_DIR) -> None:
        config = json.loads((directory / "config.json").read_text())
        self.net = CaptionerNet(config["width"])
        self.net.load_state_dict(load_file(directory / "model.safetensors"))
        self.net.eval()

    @torch.no_grad()
    def read(self, image: Image.Image) -> Reading:
        out = self.net(to_tensor([image]))
        background = BACKGROUNDS[int(out["background"][0].argmax())]
        count = int(out["count"][0].argmax())
        shapes = []
        for slot in range(count):
            shape_order = out["shape"][0, slot, :-1].argsort(descending=True).tolist()
            colour_order = out["colour"][0, slot, :-1].argsort(descending=True).tolist()
            shapes.append(ShapeReading(
                SHAPES[shape_order[0]], COLOURS[colour_order[0]], SIZE_NAMES[int(out["size"][0, slot, :-1].argmax())],
                POSITION_NAMES[int(out["position"][0, slot, :-1].argmax())],
                tuple(SHAPES[i] for i in shape_order[1:]), tuple(COLOURS[i] for i in colour_order[1:])))
        return Reading(background, tuple(shapes))

    def suggestions(self, image: Image.Image, count: int = 4) -> list[str]:
        """Prompts that would make a picture like this one, the most detailed first."""
        return prompts_for(self.read(image))[:count]


def _one(spec: ShapeReading, *, detailed: bool) -> str:
    size = {"small": "small ", "large": "large "}.get(spec.size, "") if detailed else ""
    where = f" {POSITION_PHRASES[spec.position]}" if detailed and spec.position != "center" else ""
    return f"a {size}{spec.colour} {spec.shape}{where}"


def prompts_for(reading: Reading) -> list[str]:
    background, shapes = reading.background, reading.shapes
    if not shapes:
        candidates = [f"plain {background} background", f"a {background} background", background,
                      f"an empty {background} background"]
    elif len(shapes) == 2 and (shapes[0].shape, shapes[0].colour) == (shapes[1].shape, shapes[1].colour):
        spec = shapes[0]
        candidates = [f"two {spec.colour} {spec.shape}s on a {background} background",
                      f"two {spec.colour} {spec.shape}s on {background}",
                      f"two {spec.colour} {spec.alternatives[0]}s on a {background} background",
                      f"two {spec.other_colours[0]} {spec.shape}s on a {background} background"]
    elif len(shapes) == 2:
        first, second = shapes
        candidates = [f"{_one(first, detailed=False)} and {_one(second, detailed=False)} on a {background} background",
                      f"{_one(first, detailed=False)} and {_one(second, detailed=False)}",
                      f"a {first.colour} {first.shape} on the left and a {second.colour} {second.shape} on the right",
                      f"{_one(second, detailed=False)} and {_one(first, detailed=False)} on {background}"]
    else:
        spec = shapes[0]
        candidates = [f"{_one(spec, detailed=True)} on a {background} background",
                      f"{_one(spec, detailed=False)} on {background}",
                      f"a {spec.colour} {spec.alternatives[0]} on a {background} background",
                      f"a {spec.other_colours[0]} {spec.shape} on a {background} background"]
    unique = list(dict.fromkeys(candidates))
    return unique + [f"{unique[0]}, simple shapes"] * (4 - len(unique))


# ---------------------------------------------------------------------------
# training


def _labels(scene) -> dict[str, list[int]]:
    labels = {"background": BACKGROUNDS.index(scene.background), "count": len(scene.shapes)}
    for name, table in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZE_NAMES), ("position", POSITION_NAMES)):
        values = [table.index(getattr(spec, name)) for spec in scene.shapes]
        labels[name] = values + [len(table)] * (SLOTS - len(values))
    return labels


def _soften(image: Image.Image, rng: random.Random) -> Image.Image:
    """Blur and noise like the diffusion model's pictures, so the captioner reads those too."""
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.6)))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 8), (image.height, image.width, 3))
    return Image.fromarray(np.uint8(np.clip(np.asarray(image, np.float32) + noise, 0, 255)))


def make_dataset(count: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rng = random.Random(seed)
    images, labels = [], []
    for _ in range(count):
        scene, _caption = sample_example(rng)
        width, height = rng.choice(((64, 64), (64, 64), (80, 48), (48, 80)))
        images.append(_soften(render(scene, width, height, rng=rng), rng))
        labels.append(_labels(scene))
    stacked = {key: torch.tensor([label[key] for label in labels]) for key in labels[0]}
    return to_tensor(images), stacked


def train(steps: int = 2000, batch: int = 64, examples: int = 24_000, seed: int = 99, width: int = 16,
          directory: Path = CAPTIONER_DIR, device: torch.device | str = "cpu") -> float:
    """Train and save; returns the held-out accuracy of the first shape's shape."""
    torch.manual_seed(seed)
    pixels, labels = make_dataset(examples, seed)
    held_pixels, held_labels = make_dataset(1000, seed + 1)
    net = CaptionerNet(width).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for step in tqdm(range(steps), desc="captioner"):
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        index = torch.randint(0, len(pixels), (batch,), generator=generator)
        out = net(pixels[index].to(device))
        target = {name: value[index].to(device) for name, value in labels.items()}
        loss = F.cross_entropy(out["background"], target["background"]) + F.cross_entropy(
            out["count"], target["count"])
        for name in SLOT_HEADS:
            loss = loss + F.cross_entropy(out[name].flatten(0, 1), target[name].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval().to("cpu")
    with torch.no_grad():
        out = net(held_pixels)
    has_shape = held_labels["count"] > 0
    accuracy = float((out["shape"][:, 0].argmax(-1) == held_labels["shape"][:, 0])[has_shape].float().mean())
    directory.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in net.state_dict().items()}, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"width": width, "side": SIDE, "held_out_shape_accuracy":
                                                       round(accuracy, 3)}, indent=2) + "\n")
    log.info("captioner saved to %s (held-out shape accuracy %.3f)", directory, accuracy)
    return accuracy
