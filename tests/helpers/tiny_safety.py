"""A safety checker (diffusers' `StableDiffusionSafetyChecker` format) built from a config, with
its first concept set so that it flags the pictures it is shown as flagged and none of the
others: the NSFW path, driven end to end with pictures the built-in model really makes.

A random CLIP tells no colour from another by itself, so the concept is fitted: the pooled
output gets one constant channel (the bias of a linear rule) and the projection keeps one
direction, the least-squares fit of "flagged or not" over the pictures given. A picture's
embedding is then +e0 or -e0, so its cosine with the concept e0 is +1 (flagged) or -1, far
from the threshold the checker rounds against."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

FLAGGED_COLOUR = "red"
# what the `safety_checker` fixture (tests/conftest.py) is fitted on: the built-in model's pictures
FLAGGED_PROMPTS = ("a red circle --seed 3",)
OTHER_PROMPTS = ("a blue square --seed 3", "a green star --seed 3", "a yellow triangle --seed 3")


def world_pictures(colours: tuple[str, ...]) -> list[Image.Image]:
    from generation.builtin.world import Scene, ShapeSpec, render

    return [render(Scene(background, (ShapeSpec(shape, colour, size),)), 64, 64)
            for colour in colours for shape in ("circle", "square", "triangle", "star")
            for background in ("white", "black") for size in ("small", "large")]


def build_tiny_safety_checker(folder: Path, flagged: list[Image.Image] | None = None,
                              others: list[Image.Image] | None = None) -> Path:
    """Flags the `flagged` pictures and not the `others` (by default drawn red shapes, and drawn
    shapes of the other colours); RuntimeError if no linear rule tells them apart."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
                     "vocab_size": 100},
        vision_config={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
                       "image_size": 32, "patch_size": 8},
        projection_dim=64)
    torch.manual_seed(0)
    model = StableDiffusionSafetyChecker(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})

    vision = model.vision_model
    norm = getattr(vision, "vision_model", vision).post_layernorm  # nested in older transformers
    with torch.no_grad():
        norm.weight[0], norm.bias[0] = 0.0, 1.0

    def pooled(pictures: list[Image.Image]) -> torch.Tensor:
        with torch.no_grad():
            return model.vision_model(processor(images=pictures, return_tensors="pt").pixel_values)[1]

    bad = pooled(flagged or world_pictures((FLAGGED_COLOUR,)))
    good = pooled(others or world_pictures(("blue", "green", "yellow", "cyan", "purple", "white", "black")))
    labels = torch.cat([torch.ones(len(bad)), -torch.ones(len(good))])
    rule = torch.linalg.lstsq(torch.cat([bad, good]), labels[:, None]).solution[:, 0]
    if (bad @ rule).min() <= 0 or (good @ rule).max() >= 0:
        raise RuntimeError("this tiny checker cannot tell the flagged pictures apart")
    with torch.no_grad():
        model.visual_projection.weight.zero_()
        model.visual_projection.weight[0] = rule
        model.concept_embeds.zero_()
        model.concept_embeds[:, 1] = 1.0  # the other concepts: orthogonal to every embedding, never reached
        model.concept_embeds[0, 0] = 1.0
        model.concept_embeds_weights.fill_(0.5)
        model.special_care_embeds.zero_()
        model.special_care_embeds[:, 1] = 1.0
        model.special_care_embeds_weights.fill_(0.5)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
