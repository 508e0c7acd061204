"""The built-in model's components: a standard SD 1.5-shaped diffusers model, only small.

Kept apart from the training loop so tests and benchmarks can build the same
architecture (random weights) without importing the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

NATIVE_SIZE = 64
LATENT_DOWNSCALE = 4  # VAE: 64x64 pixels -> 4x16x16 latents
MAX_TOKENS = 77  # SD's window, so code written for SD works unchanged
TEXT_HIDDEN = 96

# SD 1.5's noise schedule, so schedulers and strengths behave as users expect.
NOISE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_HIDDEN * 4,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_HIDDEN,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_vae() -> AutoencoderKL:
    # 4 channels per norm group: with one channel per group (instance norm) a flat
    # background loses its colour, and this world is mostly flat backgrounds.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=NATIVE_SIZE,
    )
    # Start with a narrow posterior (std ~0.05) so sampled latents are near the mean from
    # the first step; img2img later encodes with `latent_dist.sample()` and needs it narrow.
    with torch.no_grad():
        vae.encoder.conv_out.weight[4:].mul_(0.01)
        vae.encoder.conv_out.bias[4:].fill_(-6.0)
    return vae


def build_unet() -> UNet2DConditionModel:
    # No cross-attention at the full 16x16 latent level: it nearly doubled step time
    # in a trial; layout and colour words are placed well enough from 8x8 and 4x4.
    return UNet2DConditionModel(
        sample_size=NATIVE_SIZE // LATENT_DOWNSCALE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def build_training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**NOISE_SCHEDULE, clip_sample=False)


def build_inference_scheduler() -> DDIMScheduler:
    # clip_sample=False: latents are not bounded to [-1, 1] like pixels.
    return DDIMScheduler(**NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def write_clip_tokenizer_files(directory: Path, merges: list[tuple[str, str]]) -> CLIPTokenizer:
    """Write vocab.json / merges.txt the way OpenAI's CLIP vocabulary is laid out.

    Every byte (as CLIP's byte-to-unicode table spells it) is a token on its own and
    with the end-of-word mark, so no input character is ever unknown; then one token
    per merge; then the two special tokens.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    directory.mkdir(parents=True, exist_ok=True)
    alphabet = list(bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    seen = set(vocab_list)
    for left, right in merges:
        token = left + right
        if token not in seen:
            seen.add(token)
            vocab_list.append(token)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(directory, model_max_length=MAX_TOKENS)
