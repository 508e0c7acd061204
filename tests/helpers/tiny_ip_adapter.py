"""A tiny IP-Adapter for a given UNet, built from a config (nothing can be downloaded here).

Written in the layout of h94/IP-Adapter, so the code under test reads it exactly as it
reads the real files: `ip-adapter.safetensors` (`image_proj.*` and `ip_adapter.*`
tensors) with `image_encoder/` (a CLIP vision model) beside it. The weights are random
but seeded: what it does to a picture is arbitrary, and it depends on the picture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

IMAGE_EMBED_DIM = 32
IMAGE_TOKENS = 4  # what diffusers expects of a plain IP-Adapter


def write_tiny_ip_adapter(folder: Path, unet: torch.nn.Module, seed: int = 0) -> Path:
    """Write the adapter for `unet`; returns the weights file."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=IMAGE_EMBED_DIM))
    encoder.save_pretrained(folder / "image_encoder")

    cross = unet.config.cross_attention_dim
    tensors = {
        "image_proj.proj.weight": torch.randn(IMAGE_TOKENS * cross, IMAGE_EMBED_DIM, generator=generator) * 0.2,
        "image_proj.proj.bias": torch.zeros(IMAGE_TOKENS * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    # one pair of projections per cross-attention layer, numbered 1, 3, 5… in the UNet's order
    cross_attention = [name.removesuffix(".processor") for name in unet.attn_processors
                       if name.endswith("attn2.processor")]
    for number, name in enumerate(cross_attention):
        inner = unet.get_submodule(name).to_k.out_features
        for projection in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{2 * number + 1}.{projection}.weight"] = (
                torch.randn(inner, cross, generator=generator) / cross**0.5)
    weights = folder / "ip-adapter.safetensors"
    save_file(tensors, weights)
    return weights
