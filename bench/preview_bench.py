"""What a preview costs: a full VAE decode (the engine today) vs the latent projection.

    .venv/bin/python bench/preview_bench.py [--quick]

Side by side in one run, on
- the built-in model (64 px: 16×16 latents, its own UNet and VAE, its fitted projection);
- an SD 1.5-size UNet and VAE built from SD 1.5's configs with random weights (512²:
  64×64 latents, the published SD 1.5 projection). Timing does not depend on the weights.

Prints, per model: ms per UNet step at batch 8 (4 images × classifier-free guidance),
ms per preview by full decode (decode the first image's x0, postprocess, shrink to at
most 256 px: the engine's `_preview`), ms per projected preview (`preview_image`, 256 px),
and what previews every 5 steps cost next to a 30-step grid: 5 previews (steps 5–25;
none at the last step) over 30 UNet steps + the final decode of the 4 pictures.

Times are the best of a few calls. The SD 1.5 UNet step is the slow part on a CPU (a
minute or more at batch 8 on 2 cores), so it runs once, after a warm-up at batch 1, and
its VAE decodes twice with no warm-up; `--quick` measures SD 1.5 at 256² (32×32
latents) instead, and says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREVIEW_EVERY, GRID_STEPS, GRID_IMAGES, PREVIEW_SIDE = 5, 30, 4, 256

# SD 1.5's unet/config.json and vae/config.json (runwayml/stable-diffusion-v1-5), written out
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32, "norm_eps": 1e-5,
    "act_fn": "silu", "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
    "mid_block_scale_factor": 1,
}
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32, "act_fn": "silu",
    "sample_size": 512, "scaling_factor": 0.18215,
}
SD15_TEXT_TOKENS = 77


def timed(call: Callable[[], object], repeats: int, warmups: int = 1) -> float:
    """Milliseconds of the best of `repeats` calls after `warmups` untimed ones (the best: the
    machine's other load only ever adds time)."""
    for _ in range(warmups):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def full_decode_preview(vae, processor, latents):
    """The engine's `_preview`: the first image's x0 decoded by the VAE, shrunk to at most 256 px."""
    decoded = vae.decode(latents[:1].to(vae.dtype) / vae.config.scaling_factor).sample
    image = processor.postprocess(decoded.float(), output_type="pil")[0]
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return image


def measure(name: str, unet, vae, processor, projection, latent_side: int, context: int,
            *, unet_repeats: int, unet_warmup_batch: int | None, preview_repeats: int) -> dict[str, float]:
    import torch

    from generation.previews import preview_image

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((8, 4, latent_side, latent_side), generator=generator)
    text = torch.randn((8, SD15_TEXT_TOKENS, context), generator=generator)
    timestep = torch.tensor(500)
    x0 = latents[:4] * 0.8  # the first image's clean estimate is all a preview reads

    def unet_step(batch: int = 8) -> None:
        unet(latents[:batch], timestep, encoder_hidden_states=text[:batch])

    if unet_warmup_batch is not None:  # prime the kernels cheaply, then time batch 8
        unet_step(unet_warmup_batch)
        step_ms = timed(unet_step, unet_repeats, warmups=0)
    else:
        step_ms = timed(unet_step, unet_repeats)
    decode_ms = timed(lambda: full_decode_preview(vae, processor, x0), preview_repeats,
                      warmups=0 if unet_warmup_batch is not None else 1)
    project_ms = timed(lambda: preview_image(x0, projection, PREVIEW_SIDE), max(preview_repeats, 20))
    previews = len(range(PREVIEW_EVERY, GRID_STEPS, PREVIEW_EVERY))  # 5, 10, 15, 20, 25
    grid_ms = GRID_STEPS * step_ms + GRID_IMAGES * decode_ms  # the final pictures are decoded either way
    result = {"step": step_ms, "decode": decode_ms, "project": project_ms,
              "decode_share": 100 * previews * decode_ms / grid_ms,
              "project_share": 100 * previews * project_ms / grid_ms}
    print(f"\n{name}")
    print(f"  UNet step, batch 8 (4 images x CFG): {step_ms:10.1f} ms")
    print(f"  preview by full VAE decode:          {decode_ms:10.1f} ms  (= {decode_ms / step_ms:.2f} UNet steps)")
    print(f"  preview by latent projection:        {project_ms:10.2f} ms  (= {project_ms / step_ms:.4f} UNet steps)")
    print(f"  previews every {PREVIEW_EVERY} steps cost {result['decode_share']:.1f} % of a {GRID_STEPS}-step grid "
          f"by full decode, {result['project_share']:.3f} % by projection "
          f"({previews} previews; grid = {GRID_STEPS} steps + {GRID_IMAGES} final decodes = {grid_ms / 1000:.1f} s)")
    return result


def builtin(quick: bool) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from generation.builtin import MODEL_DIR
    from generation.previews import projection_for

    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    side = pipe.unet.config.sample_size
    with torch.inference_mode():
        measure(f"built-in model, {side * pipe.vae_scale_factor}x{side * pipe.vae_scale_factor} "
                f"({side}x{side} latents)", pipe.unet, pipe.vae, pipe.image_processor,
                projection_for("sd15", is_builtin=True), side, pipe.unet.config.cross_attention_dim,
                unet_repeats=5 if quick else 20, unet_warmup_batch=None, preview_repeats=5 if quick else 20)


def sd15(quick: bool) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.image_processor import VaeImageProcessor

    from generation.previews import projection_for

    started = time.perf_counter()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    vae = AutoencoderKL(**SD15_VAE).eval()
    processor = VaeImageProcessor(vae_scale_factor=8)
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(f"\n(SD 1.5-size UNet {params:.0f} M parameters and VAE built in {time.perf_counter() - started:.0f} s)")
    side = 32 if quick else 64
    with torch.inference_mode():
        measure(f"SD 1.5 size, random weights, {side * 8}x{side * 8} ({side}x{side} latents)"
                + (" [--quick: not 512²]" if quick else ""), unet, vae, processor,
                projection_for("sd15", is_builtin=False), side, SD15_UNET["cross_attention_dim"],
                unet_repeats=1, unet_warmup_batch=1, preview_repeats=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; SD 1.5 at 256² instead of 512²")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 on the CPU"
          + (", --quick" if args.quick else ""))
    builtin(args.quick)
    sd15(args.quick)
    print(f"\n({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
