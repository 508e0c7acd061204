"""Fit the built-in model's latent-to-RGB preview projection from its own VAE.

    .venv/bin/python scripts/fit_preview_projection.py [--prompts 48] [--steps 20] [--out PATH]

Latents are gathered the way previews will see them, in the UNet's space (the VAE's
latents × scaling_factor, what `DenoiserTap.estimate_x0` returns):

- pictures the built-in model makes from captions of its world: the final latents and
  the clean estimates (x0) at every 5th step, which are what previews show;
- pictures encoded by the VAE (mean of the latent distribution): rendered scenes of
  the world, solid colours (the palette and random ones) and gradients.

Each set of latents is decoded by the VAE (clamped to −1..1, as pictures are), and each
latent pixel is paired with the mean RGB of the vae_scale_factor × vae_scale_factor
patch it covers. `numpy.linalg.lstsq` solves RGB = blur(latent) · M + b, the blur being
the projection's `smoothing` (a Gaussian of sigma 1 latent pixel by default: this VAE's
latents carry a fine texture that its decoder smooths away; without the blur the fit's
held-out RMS was 0.38 instead of 0.31, and its colours washed out); a quarter of the
pictures is held out to report the fit's residual on pictures it did not see. The
result goes to generation/builtin/model/preview_projection.json (see generation/previews.py).
Refit whenever the built-in VAE is retrained.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREVIEW_EVERY = 5  # the engine's preview interval: the x0 estimates previews show


def load_pipeline():
    from diffusers import StableDiffusionPipeline

    from generation.builtin import MODEL_DIR

    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generated_latents(pipe, captions: list[str], steps: int, seed: int, batch: int = 8):
    """(final latents, x0 estimates every PREVIEW_EVERY steps), both (N, C, h, w) in UNet space."""
    import torch

    from generation.sampling import DenoiserTap

    finals, estimates = [], []
    cfg = 6.0
    for start in range(0, len(captions), batch):
        chunk = captions[start:start + batch]
        generators = [torch.Generator().manual_seed(seed + start + k) for k in range(len(chunk))]

        def on_step_end(pipe, step_index, timestep, kwargs, chunk=chunk):
            if (step_index + 1) % PREVIEW_EVERY == 0 and step_index + 1 < steps:
                estimates.append(tap.estimate_x0(len(chunk), cfg))
            return {}

        with DenoiserTap(pipe.unet, pipe.scheduler.alphas_cumprod, pipe.scheduler.config.prediction_type) as tap:
            output = pipe(chunk, negative_prompt=[""] * len(chunk), num_inference_steps=steps, guidance_scale=cfg,
                          generator=generators, output_type="latent", callback_on_step_end=on_step_end)
        finals.append(output.images.float())
    return torch.cat(finals), torch.cat(estimates)


def test_pictures(count: int, seed: int, side: int):
    """Rendered scenes, solid colours and gradients: (N, 3, side, side) in −1..1."""
    import numpy as np
    import torch

    from generation.builtin.world import PALETTE, make_examples

    rng = random.Random(seed)
    arrays = [np.asarray(image, dtype=np.float32) / 255 for _, image in make_examples(count, seed=seed,
                                                                                        width=side, height=side)]
    colours = [np.array(rgb, dtype=np.float32) / 255 for rgb in PALETTE.values()]
    colours += [np.array([rng.random() for _ in range(3)], dtype=np.float32) for _ in range(count // 2)]
    arrays += [np.broadcast_to(c, (side, side, 3)).copy() for c in colours]
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    for _ in range(count // 2):
        a, b = (np.array([rng.random() for _ in range(3)], dtype=np.float32) for _ in range(2))
        t = ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
        arrays.append(np.broadcast_to(a + (b - a) * t, (side, side, 3)).copy())
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) * 2 - 1


def decoded_patches(vae, latents):
    """The mean decoded RGB (−1..1) of the patch each latent pixel covers: (N, 3, h, w)."""
    import torch
    import torch.nn.functional as F

    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    out = []
    for chunk in latents.split(16):
        decoded = vae.decode(chunk / vae.config.scaling_factor).sample.clamp(-1, 1)
        out.append(F.avg_pool2d(decoded, factor))
    return torch.cat(out)


def encoded_latents(vae, pictures):
    import torch

    return torch.cat([vae.encode(chunk).latent_dist.mean * vae.config.scaling_factor
                      for chunk in pictures.split(16)])


def rows(latents, targets):
    """Latent pixels (N, C) and their patch colours (N, 3)."""
    channels = latents.shape[1]
    return (latents.permute(0, 2, 3, 1).reshape(-1, channels).double().numpy(),
            targets.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy())


def compact_json(record: dict) -> str:
    """Indented JSON with each innermost list (a matrix row, the bias) on one line."""
    text = json.dumps(record, indent=2)
    return re.sub(r"\[\s+([^\[\]{}]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=48, help="captions the built-in model paints")
    parser.add_argument("--pictures", type=int, default=48, help="rendered scenes encoded by the VAE")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--smoothing", type=float, default=1.0, help="Gaussian sigma in latent pixels (0: none)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    import numpy as np
    import torch

    from generation.builtin.world import make_examples
    from generation.previews import BUILTIN_PROJECTION_FILE, LatentProjection, gaussian_blur

    out = args.out or BUILTIN_PROJECTION_FILE
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    pipe = load_pipeline()
    vae = pipe.vae
    side = int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
    captions = [caption for caption, _ in make_examples(args.prompts, seed=args.seed + 1)]
    with torch.inference_mode():
        finals, estimates = generated_latents(pipe, captions, args.steps, args.seed)
        encoded = encoded_latents(vae, test_pictures(args.pictures, args.seed + 2, side))
        sets = {"generated (final)": finals, "generated (x0 at previews)": estimates, "encoded pictures": encoded}
        targets = {name: decoded_patches(vae, latents) for name, latents in sets.items()}

    # hold out every fourth picture of each set
    train_x, train_y, held = [], [], {}
    for name, latents in sets.items():
        keep = torch.arange(len(latents)) % 4 != 3
        latents = gaussian_blur(latents, args.smoothing)  # = blurring the projection's output: it is linear
        x, y = rows(latents[keep], targets[name][keep])
        train_x.append(x)
        train_y.append(y)
        held[name] = rows(latents[~keep], targets[name][~keep])
    x, y = np.concatenate(train_x), np.concatenate(train_y)
    design = np.hstack([x, np.ones((len(x), 1))])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    matrix, bias = solution[:-1], solution[-1]

    def rms(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.sqrt(np.mean((x @ matrix + bias - y) ** 2)))

    train_rms = rms(x, y)
    all_held = [np.concatenate([h[i] for h in held.values()]) for i in (0, 1)]
    held_rms = rms(*all_held)
    per_set = {name: rms(*pair) for name, pair in held.items()}
    projection = LatentProjection(name="builtin", matrix=tuple(tuple(round(float(v), 5) for v in row)
                                                              for row in matrix),
                                  bias=tuple(round(float(v), 5) for v in bias),  # type: ignore[arg-type]
                                  smoothing=args.smoothing)
    record = projection.as_json() | {
        "about": "latent-to-RGB preview projection of the built-in model, fitted by "
                 "scripts/fit_preview_projection.py; input: UNet-space latents (VAE latents x scaling_factor), "
                 "rows = latent channels, columns = R, G, B; output RGB in -1..1, then a Gaussian blur of sigma "
                 "`smoothing` latent pixels",
        "fit": {
            "vae_scale_factor": pipe.vae_scale_factor, "scaling_factor": vae.config.scaling_factor,
            "latent_pixels": len(x), "rms_train": round(train_rms, 5), "rms_held_out": round(held_rms, 5),
            "rms_held_out_per_set": {name: round(value, 5) for name, value in per_set.items()},
            "prompts": args.prompts, "pictures": args.pictures, "steps": args.steps, "seed": args.seed,
        },
    }
    out.write_text(compact_json(record), encoding="utf-8")

    print(f"smoothing: Gaussian sigma {args.smoothing} latent pixels")
    print(f"latent pixels: {len(x)} fitted, {len(all_held[0])} held out "
          f"(VAE factor {pipe.vae_scale_factor}, scaling_factor {vae.config.scaling_factor:.5f})")
    print("matrix (rows: latent channels; R G B):")
    for row in matrix:
        print("   " + "  ".join(f"{v:+.4f}" for v in row))
    print("bias:  " + "  ".join(f"{v:+.4f}" for v in bias))
    print(f"residual RMS (RGB in -1..1): fit {train_rms:.4f}, held out {held_rms:.4f} "
          f"(= {held_rms * 127.5:.1f} of 255)")
    for name, value in per_set.items():
        print(f"  held out, {name}: {value:.4f} (= {value * 127.5:.1f} of 255)")
    r2 = 1 - held_rms**2 / float(np.mean((all_held[1] - all_held[1].mean(axis=0)) ** 2))
    print(f"held-out R^2: {r2:.3f}; wrote {out} in {time.perf_counter() - started:.0f} s")
    assert math.isfinite(held_rms)


if __name__ == "__main__":
    main()
