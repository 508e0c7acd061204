"""The synthetic world the built-in model is trained on: captioned pictures of coloured shapes.

Everything here is deterministic from a seed, so the training data can be regenerated
exactly. Captions use the words a user would type ("a small blue star in the top left
on a white background"); the same tables are used by the fidelity checks to read the
pictures back (see `analysis.py`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image, ImageDraw

Style = Literal["plain", "niji", "pixel"]

# Colours a shape may have. Orange was dropped: a trial run confused it with red.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (245, 215, 40),
    "purple": (125, 50, 170),
    "pink": (245, 140, 195),
    "cyan": (50, 205, 215),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
# Backgrounds may be any shape colour, or gray; plain ones are drawn more often.
PALETTE: dict[str, tuple[int, int, int]] = {**SHAPE_COLOURS, "gray": (128, 128, 128)}
BACKGROUND_WEIGHTS: dict[str, float] = {
    "white": 4.0,
    "black": 2.0,
    "gray": 2.0,
    **{name: 1.0 for name in SHAPE_COLOURS if name not in ("white", "black")},
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES: dict[str, float] = {"small": 0.12, "medium": 0.2, "large": 0.3}  # radius / short side
SIZE_WORDS = {"small": ("small", "tiny"), "medium": ("",), "large": ("large", "big")}
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
}
POSITION_PHRASES = {
    "center": "in the center",
    "top left": "in the top left",
    "top right": "in the top right",
    "bottom left": "in the bottom left",
    "bottom right": "in the bottom right",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
NUMBER_WORDS = {1: "a", 2: "two"}
OUTLINE_COLOUR = (30, 25, 40)
SUPERSAMPLE = 4
# pixel style: the picture is drawn this many times smaller, then enlarged in blocks.
# 8 px is two latent cells: 4-px blocks (one cell) were more than a UNet LoRA could draw.
PIXEL_BLOCK = 8


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    colour: str
    size: str = "medium"
    position: str = "center"


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[ShapeSpec, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------
# sampling a scene and its caption


def _pick_background(rng: random.Random, avoid: set[str] = frozenset()) -> str:
    names = [n for n in BACKGROUND_WEIGHTS if n not in avoid]
    return rng.choices(names, weights=[BACKGROUND_WEIGHTS[n] for n in names])[0]


def sample_example(rng: random.Random) -> tuple[Scene, str]:
    """One scene and a caption that describes it, in the words users type."""
    kind = rng.random()
    if kind < 0.10:  # background only: teaches background words on their own
        background = _pick_background(rng)
        template = rng.choice(("a {} background", "plain {} background", "{}", "{} background"))
        return Scene(background), template.format(background)
    if kind < 0.18:  # one word: teaches colour and shape words in isolation
        shape, colour = rng.choice(SHAPES), rng.choice(list(SHAPE_COLOURS))
        background = _pick_background(rng, avoid={colour})
        spec = ShapeSpec(shape, colour, rng.choice(list(SIZES)), "center")
        return Scene(background, (spec,)), rng.choice((colour, shape, f"{colour} {shape}"))
    if kind < 0.72:
        return _single_shape(rng)
    if kind < 0.86:
        return _two_same(rng)
    return _two_different(rng)


def _background_phrase(rng: random.Random, background: str) -> str:
    if rng.random() < 0.2:
        return ""
    return rng.choice((" on a {} background", " on {}", " on a {} background"))


def _with_background(rng: random.Random, caption: str, background: str) -> str:
    phrase = _background_phrase(rng, background)
    return caption + phrase.format(background) if phrase else caption


def _single_shape(rng: random.Random) -> tuple[Scene, str]:
    shape, colour = rng.choice(SHAPES), rng.choice(list(SHAPE_COLOURS))
    size = rng.choice(list(SIZES))
    position = "center" if rng.random() < 0.4 else rng.choice(list(POSITIONS))
    background = _pick_background(rng, avoid={colour})
    words = [rng.choice(SIZE_WORDS[size]), colour, shape]
    caption = "a " + " ".join(w for w in words if w)
    if position != "center" or rng.random() < 0.3:
        caption += " " + POSITION_PHRASES[position]
    caption = _with_background(rng, caption, background)
    return Scene(background, (ShapeSpec(shape, colour, size, position),)), caption


def _two_same(rng: random.Random) -> tuple[Scene, str]:
    shape, colour = rng.choice(SHAPES), rng.choice(list(SHAPE_COLOURS))
    size = rng.choice(("small", "medium"))
    first, second = rng.choice((("left", "right"), ("top", "bottom"), ("top left", "bottom right"),
                                ("top right", "bottom left")))
    background = _pick_background(rng, avoid={colour})
    caption = _with_background(rng, f"two {colour} {shape}s", background)
    specs = (ShapeSpec(shape, colour, size, first), ShapeSpec(shape, colour, size, second))
    return Scene(background, specs), caption


def _two_different(rng: random.Random) -> tuple[Scene, str]:
    shape_a, shape_b = rng.sample(SHAPES, 2) if rng.random() < 0.7 else [rng.choice(SHAPES)] * 2
    colour_a, colour_b = rng.sample(list(SHAPE_COLOURS), 2)
    size = rng.choice(("small", "medium"))
    background = _pick_background(rng, avoid={colour_a, colour_b})
    first, second = ("left", "right") if rng.random() < 0.75 else ("top", "bottom")
    caption = f"a {colour_a} {shape_a} and a {colour_b} {shape_b}"
    if rng.random() < 0.5:
        caption = f"a {colour_a} {shape_a} on the {first} and a {colour_b} {shape_b} on the {second}"
        if first == "top":
            caption = f"a {colour_a} {shape_a} at the top and a {colour_b} {shape_b} at the bottom"
    caption = _with_background(rng, caption, background)
    specs = (ShapeSpec(shape_a, colour_a, size, first), ShapeSpec(shape_b, colour_b, size, second))
    return Scene(background, specs), caption


# ---------------------------------------------------------------------------
# drawing


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.9
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)) + r * 0.15)
                for a in (-90, 30, 150)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = math.radians(-90 + i * 36)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    raise ValueError(f"unknown shape {shape!r}")


def pastel(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The niji style's fill: the colour mixed 45 % towards white."""
    return tuple(round(0.55 * c + 0.45 * 250) for c in rgb)  # type: ignore[return-value]


def render(scene: Scene, width: int = 64, height: int = 64, *, style: Style = "plain",
           rng: random.Random | None = None) -> Image.Image:
    """Draw a scene. `rng` adds a little positional jitter (training data); None draws exactly."""
    scale = 1 if style == "pixel" else SUPERSAMPLE
    # pixel style: draw small without smoothing, then enlarge in blocks
    canvas_w, canvas_h = ((width // PIXEL_BLOCK, height // PIXEL_BLOCK) if style == "pixel"
                          else (width * scale, height * scale))
    image = Image.new("RGB", (canvas_w, canvas_h), PALETTE[scene.background])
    draw = ImageDraw.Draw(image)
    short = min(canvas_w, canvas_h)
    for spec in scene.shapes:
        fx, fy = POSITIONS[spec.position]
        if rng is not None:
            fx += rng.uniform(-0.04, 0.04)
            fy += rng.uniform(-0.04, 0.04)
        r = SIZES[spec.size] * short
        cx = min(max(fx * canvas_w, r), canvas_w - r)
        cy = min(max(fy * canvas_h, r), canvas_h - r)
        fill = SHAPE_COLOURS[spec.colour]
        outline, outline_width = None, 0
        if style == "niji":
            fill, outline, outline_width = pastel(fill), OUTLINE_COLOUR, max(1, round(0.045 * short))
        if spec.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=outline_width)
        else:
            points = _polygon(spec.shape, cx, cy, r)
            draw.polygon(points, fill=fill)
            if outline is not None:
                draw.line(points + points[:1], fill=outline, width=outline_width, joint="curve")
    if style == "pixel":
        return image.resize((width, height), Image.Resampling.NEAREST)
    return image.resize((width, height), Image.Resampling.LANCZOS)


def make_examples(count: int, *, seed: int, width: int = 64, height: int = 64,
                  style: Style = "plain") -> list[tuple[str, Image.Image]]:
    """`count` captioned pictures, the same for the same seed."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        scene, caption = sample_example(rng)
        examples.append((caption, render(scene, width, height, style=style, rng=rng)))
    return examples


def vocabulary() -> list[str]:
    """Every word the captions use: what the tokenizer must know as whole tokens."""
    words = set(PALETTE) | set(SHAPES) | {f"{s}s" for s in SHAPES}
    for phrases in SIZE_WORDS.values():
        words.update(p for p in phrases if p)
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    words.update(("a", "two", "and", "on", "the", "background", "plain"))
    return sorted(words)
