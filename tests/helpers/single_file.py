"""Write a diffusers SD 1.5-layout pipeline as one original-format (LDM) `.safetensors` file.

This is the layout Civitai checkpoints ship in, so the test can load it back with
`from_single_file` exactly as an operator's checkpoint would be loaded.
Key names follow the original CompVis/stability repositories' module paths.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    return key


def _unet_key(key: str, layers_per_block: int) -> str:
    parts = key.split(".")
    per_level = layers_per_block + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for new, old in fixed.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    if parts[0] == "down_blocks":
        level = int(parts[1])
        if parts[2] == "downsamplers":
            return f"input_blocks.{per_level * (level + 1)}.0.op." + ".".join(parts[5:])
        index = per_level * level + int(parts[3]) + 1
        inner = ".".join(parts[4:])
        if parts[2] == "resnets":
            return f"input_blocks.{index}.0." + _rename(inner, _RESNET)
        return f"input_blocks.{index}.1." + inner
    if parts[0] == "mid_block":
        inner = ".".join(parts[3:])
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}." + _rename(inner, _RESNET)
        return "middle_block.1." + inner
    if parts[0] == "up_blocks":
        level = int(parts[1])
        if parts[2] == "upsamplers":
            return f"output_blocks.{per_level * level + layers_per_block}.UPSAMPLE." + ".".join(parts[4:])
        index = per_level * level + int(parts[3])
        inner = ".".join(parts[4:])
        if parts[2] == "resnets":
            return f"output_blocks.{index}.0." + _rename(inner, _RESNET)
        return f"output_blocks.{index}.1." + inner
    raise KeyError(key)


def _vae_key(key: str, levels: int) -> str:
    parts = key.split(".")
    side = parts[0]
    if parts[1] in ("down_blocks", "up_blocks"):
        level = int(parts[2]) if side == "encoder" else levels - 1 - int(parts[2])
        group = "down" if side == "encoder" else "up"
        if parts[3] in ("downsamplers", "upsamplers"):
            name = "downsample" if side == "encoder" else "upsample"
            return f"{side}.{group}.{level}.{name}." + ".".join(parts[5:])
        inner = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
        return f"{side}.{group}.{level}.block.{parts[4]}.{inner}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            inner = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(parts[3]) + 1}.{inner}"
        return f"{side}.mid.attn_1." + _rename(".".join(parts[4:]), _VAE_ATTENTION)
    if parts[1] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(parts[2:])
    return key


def save_as_single_file(pipe, path: Path) -> None:
    """The pipeline's UNet, VAE and text encoder under the original checkpoint's key names."""
    state: dict[str, torch.Tensor] = {}
    unet = pipe.unet
    up_with_attention = [hasattr(block, "attentions") for block in unet.up_blocks]
    layers = unet.config.layers_per_block
    for key, tensor in unet.state_dict().items():
        ldm = _unet_key(key, layers)
        if ".UPSAMPLE." in ldm:  # after the resnet (.0) and, in attention levels, the attention (.1)
            level = int(key.split(".")[1])
            ldm = ldm.replace(".UPSAMPLE.", ".2." if up_with_attention[level] else ".1.")
        state["model.diffusion_model." + ldm] = tensor.contiguous()
    levels = len(pipe.vae.config.block_out_channels)
    for key, tensor in pipe.vae.state_dict().items():
        ldm = _vae_key(key, levels)
        if ".mid.attn_1." in ldm and tensor.dim() == 2:  # the original uses 1x1 convolutions
            tensor = tensor[:, :, None, None]
        state["first_stage_model." + ldm] = tensor.contiguous()
    for key, tensor in pipe.text_encoder.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key  # transformers >= 5.6 flattened it
        state["cond_stage_model.transformer." + key] = tensor.contiguous()
    save_file(state, str(path))
