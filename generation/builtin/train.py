"""Train the built-in model from nothing on the synthetic world, on a CPU or a GPU.

    python -m bot train-builtin            # everything: data, VAE, UNet + text encoder, decoder, LoRAs, captioner
    python -m bot train-builtin --phase lora
    python -m bot train-builtin --device cuda

Phases run in order and each checkpoints into the work folder, so a stopped run
resumes where it was. The result is written with `save_pretrained` (safetensors) to
`generation/builtin/model/` and the LoRAs to `generation/builtin/loras/`. Step counts
are fixed (not time-based) so that a run is reproducible; on 2 CPU cores the whole run
takes about 2 hours (106 min measured with a 1,500-step decoder phase, which is now
4,000 steps; see MODEL_CARD.md). Random numbers are drawn
on the CPU whatever the device, so a GPU run sees the same batches and noise; its
results differ from a CPU run's only by floating-point rounding.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import LORA_DIR, MODEL_DIR
from .architecture import (
    MAX_TOKENS,
    build_inference_scheduler,
    build_text_encoder,
    build_training_scheduler,
    build_unet,
    build_vae,
    write_clip_tokenizer_files,
)
from .world import Style, make_examples

log = logging.getLogger(__name__)

BUCKETS: dict[tuple[int, int], float] = {(64, 64): 0.8, (48, 80): 0.1, (80, 48): 0.1}  # (h, w): share
LORA_STYLES: tuple[Style, ...] = ("niji", "pixel")
OFFSET_NOISE = 0.1


@dataclass(frozen=True)
class TrainingPlan:
    examples_square: int = 40_000
    examples_per_other_bucket: int = 8_000
    vae_steps: int = 2_400
    vae_lr: float = 3e-4
    decoder_steps: int = 4_000
    decoder_lr: float = 2e-4
    vae_batch: int = 16
    base_steps: int = 9_000
    base_batch: int = 32
    base_lr: float = 4e-4
    lora_steps: int = 1_500
    lora_batch: int = 16
    lora_lr: float = 5e-4
    lora_rank: int = 8
    caption_dropout: float = 0.1  # classifier-free guidance needs the empty prompt
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    checkpoint_every: int = 500
    seed: int = 1234


# ---------------------------------------------------------------------------
# data


def _images_to_tensor(images: list) -> torch.Tensor:
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def build_dataset(plan: TrainingPlan, style: Style = "plain", scale: float = 1.0) -> dict:
    """Captions and pixel tensors per aspect bucket, deterministic from the plan's seed."""
    dataset = {}
    for index, ((height, width), _share) in enumerate(BUCKETS.items()):
        count = plan.examples_square if (height, width) == (64, 64) else plan.examples_per_other_bucket
        count = max(64, int(count * scale))
        seed = plan.seed + 1000 * index + {"plain": 0, "niji": 1, "pixel": 2}[style] * 100_000
        examples = make_examples(count, seed=seed, width=width, height=height, style=style)
        dataset[(height, width)] = ([c for c, _ in examples], _images_to_tensor([i for _, i in examples]))
        log.info("rendered %d %s examples at %dx%d", count, style, width, height)
    return dataset


# Share of each style in the autoencoder's batches. The decoder phase leans on niji: the
# encoder keeps niji's pastel fills apart, but a decoder trained mostly on plain pictures
# draws them greyish or orange (VAE round trip of a niji square, mean error per channel:
# 13.5 after the VAE phase, 11.8 after 1,500 decoder steps on the VAE's mix, 6.9 after
# 4,000 on this one; plain pictures stay at 1 to 3).
VAE_STYLE_MIX: dict[Style, float] = {"plain": 0.6, "niji": 0.2, "pixel": 0.2}
DECODER_STYLE_MIX: dict[Style, float] = {"plain": 0.4, "niji": 0.4, "pixel": 0.2}


def build_style_datasets(plan: TrainingPlan, plain: dict | None = None) -> dict[Style, dict]:
    """Pictures in every style for the autoencoder: it must encode niji's pastel fills and
    dark outlines and pixel's blocks, or the style LoRAs cannot draw them."""
    return {"plain": plain if plain is not None else build_dataset(plan, "plain", scale=0.5),
            "niji": build_dataset(plan, "niji", scale=0.25), "pixel": build_dataset(plan, "pixel", scale=0.25)}


def _autoencoder_batch(styles: dict[Style, dict], mix: dict[Style, float], batch: int, rng: random.Random,
                       generator: torch.Generator) -> torch.Tensor:
    """A batch from one style and one aspect bucket, drawn by `mix` and `BUCKETS`."""
    keys = [(style, bucket) for style in styles for bucket in BUCKETS]
    weights = [mix[style] * BUCKETS[bucket] for style, bucket in keys]
    style, bucket = rng.choices(keys, weights)[0]
    pixels = styles[style][bucket][1]
    return pixels[torch.randint(0, len(pixels), (batch,), generator=generator)]


def build_tokenizer(directory: Path, seed: int):
    """Train BPE merges on the captions so every caption word is one token."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    captions = [caption for caption, _ in make_examples(20_000, seed=seed)]
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2, end_of_word_suffix="</w>",
                                  show_progress=False)
    tokenizer.train_from_iterator(captions, trainer)
    import json

    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    return write_clip_tokenizer_files(directory, merges)


def _tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                     return_tensors="pt").input_ids


# ---------------------------------------------------------------------------
# checkpoints


def _save_checkpoint(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict | None:
    return torch.load(path, weights_only=False, map_location=device) if path.exists() else None


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load a phase's checkpoint when there is one; the step to go on from."""
    if (ckpt := _load_checkpoint(path, next(model.parameters()).device)) is None:
        return 0
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["step"]


class EMA:
    """Exponential moving average of weights: what gets exported, for smoother samples."""

    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for m in modules for p in m.parameters()]

    @torch.no_grad()
    def update(self, modules: list[torch.nn.Module], step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        params = [p for m in modules for p in m.parameters()]
        torch._foreach_lerp_(self.shadow, [p.detach() for p in params], 1 - decay)

    @torch.no_grad()
    def copy_to(self, modules: list[torch.nn.Module]) -> None:
        for shadow, p in zip(self.shadow, [p for m in modules for p in m.parameters()], strict=True):
            p.copy_(shadow)


# ---------------------------------------------------------------------------
# phases


def train_vae(plan: TrainingPlan, work: Path, styles: dict[Style, dict], device: torch.device):
    """Autoencoder: reconstruction (MSE + L1) with a small KL term, as SD's VAE minus the GAN."""
    vae = build_vae().to(device)
    final = work / "vae"
    if (final / "config.json").exists():
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(final).to(device)
    ckpt_path = work / "vae.ckpt"
    optimizer = torch.optim.AdamW(vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)
    start = _resume(ckpt_path, vae, optimizer)
    generator = torch.Generator().manual_seed(plan.seed)
    rng = random.Random(plan.seed + start)
    vae.train()
    progress = tqdm(range(start, plan.vae_steps), initial=start, total=plan.vae_steps, desc="vae")
    for step in progress:
        lr = plan.vae_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / plan.vae_steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = _autoencoder_batch(styles, VAE_STYLE_MIX, plan.vae_batch, rng, generator).to(device)
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        loss = F.mse_loss(recon, batch) + 0.5 * F.l1_loss(recon, batch) + 1e-6 * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % plan.checkpoint_every == 0:
            _save_checkpoint(ckpt_path, model=vae.state_dict(), optimizer=optimizer.state_dict(), step=step + 1)
            log.info("vae step %d loss %.4f", step + 1, loss.item())
    vae.eval()
    with torch.no_grad():  # SD's convention: scale latents to unit variance
        sample = styles["plain"][(64, 64)][1][:512]
        std = torch.cat([vae.encode(b.to(device)).latent_dist.sample(generator) for b in sample.split(128)]).std()
    vae.register_to_config(scaling_factor=float(1.0 / std))
    log.info("vae scaling factor %.4f", 1.0 / std)
    vae.save_pretrained(final)
    return vae


def _edge_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between image gradients: keeps edges, points of stars and pixel blocks sharp."""
    def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]

    (rx, ry), (tx, ty) = gradients(recon), gradients(target)
    return F.l1_loss(rx, tx) + F.l1_loss(ry, ty)


def train_decoder(plan: TrainingPlan, work: Path, device: torch.device):
    """Sharpen the decoder with the encoder frozen (as SD's ft-MSE VAE was made).

    The latent space does not move, so the UNet trained on it is unaffected. Its batches
    lean on niji (`DECODER_STYLE_MIX`), whose pastel fills a decoder fed mostly plain
    pictures draws greyish.
    """
    from diffusers import AutoencoderKL

    final = work / "vae-decoder"
    if (final / "config.json").exists():
        return AutoencoderKL.from_pretrained(final)
    vae = AutoencoderKL.from_pretrained(work / "vae").to(device)
    vae.requires_grad_(False)
    trainable = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=plan.decoder_lr, weight_decay=0.0)
    ckpt_path = work / "decoder.ckpt"
    start = _resume(ckpt_path, vae, optimizer)
    styles = build_style_datasets(plan)
    generator = torch.Generator().manual_seed(plan.seed + 7 + start)
    rng = random.Random(plan.seed + 7 + start)
    vae.decoder.train()
    progress = tqdm(range(start, plan.decoder_steps), initial=start, total=plan.decoder_steps, desc="decoder")
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = plan.decoder_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / plan.decoder_steps)))
        batch = _autoencoder_batch(styles, DECODER_STYLE_MIX, plan.vae_batch, rng, generator).to(device)
        with torch.no_grad():
            latents = vae.encode(batch).latent_dist.sample(generator)
        recon = vae.decode(latents).sample
        loss = F.mse_loss(recon, batch) + 0.5 * F.l1_loss(recon, batch) + _edge_loss(recon, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % plan.checkpoint_every == 0:
            _save_checkpoint(ckpt_path, model=vae.state_dict(), optimizer=optimizer.state_dict(), step=step + 1)
            log.info("decoder step %d loss %.4f", step + 1, loss.item())
    vae.eval()
    vae.to("cpu").save_pretrained(final)
    return vae


@torch.no_grad()
def encode_dataset(vae, dataset: dict) -> dict:
    """Posterior mean and std of every picture (kept on the CPU), so training samples
    latents without the encoder."""
    vae.eval()
    device = next(vae.parameters()).device
    encoded = {}
    for key, (captions, pixels) in dataset.items():
        means, stds = [], []
        for batch in tqdm(pixels.split(256), desc=f"encode {key}"):
            dist = vae.encode(batch.to(device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
        encoded[key] = (captions, torch.cat(means), torch.cat(stds))
    return encoded


def _min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / snr


def _noisy_batch(vae, scheduler, latents_mean, latents_std, generator, device: torch.device,
                 offset_noise: float = OFFSET_NOISE):
    """Noised latents for a batch, drawn on the CPU and moved to `device`.

    Offset noise (a random shift per picture and channel) stops the model from reading
    the background colour off the signal that leaks through SD's schedule at the last
    timestep, which is absent at inference: without it the background follows the
    starting noise instead of the prompt."""
    latents = (latents_mean + latents_std * torch.randn(latents_mean.shape, generator=generator))
    latents = latents * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    noise += offset_noise * torch.randn((*latents.shape[:2], 1, 1), generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    return noisy.to(device), noise.to(device), timesteps.to(device)


def train_base(plan: TrainingPlan, work: Path, tokenizer, vae, encoded: dict, device: torch.device) -> None:
    """UNet and text encoder together, from scratch, with caption dropout for guidance."""
    unet, text_encoder = build_unet().to(device), build_text_encoder(tokenizer).to(device)
    modules = [unet, text_encoder]
    scheduler = build_training_scheduler()
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=plan.base_lr, weight_decay=1e-2)
    ema = EMA(modules, plan.ema_decay)
    ckpt_path, start = work / "base.ckpt", 0
    if (ckpt := _load_checkpoint(ckpt_path, device)) is not None:
        unet.load_state_dict(ckpt["unet"])
        text_encoder.load_state_dict(ckpt["text_encoder"])
        optimizer.load_state_dict(ckpt["optimizer"])
        ema.shadow = ckpt["ema"]
        start = ckpt["step"]
    tokens = {key: _tokenize(tokenizer, captions) for key, (captions, _, _) in encoded.items()}
    empty = _tokenize(tokenizer, [""])[0]
    generator = torch.Generator().manual_seed(plan.seed + start)
    rng = random.Random(plan.seed + start)
    bucket_keys, bucket_weights = list(BUCKETS), list(BUCKETS.values())
    for module in modules:
        module.train()
    progress = tqdm(range(start, plan.base_steps), initial=start, total=plan.base_steps, desc="unet")
    for step in progress:
        warmup = min(1.0, (step + 1) / 300)
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / plan.base_steps))
        for group in optimizer.param_groups:
            group["lr"] = plan.base_lr * warmup * decay
        key = rng.choices(bucket_keys, bucket_weights)[0]
        _, means, stds = encoded[key]
        index = torch.randint(0, len(means), (plan.base_batch,), generator=generator)
        input_ids = tokens[key][index].clone()
        drop = torch.rand(plan.base_batch, generator=generator) < plan.caption_dropout
        input_ids[drop] = empty
        noisy, noise, timesteps = _noisy_batch(vae, scheduler, means[index], stds[index], generator, device)
        hidden = text_encoder(input_ids.to(device))[0]
        prediction = unet(noisy, timesteps, hidden).sample
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * _min_snr_weights(scheduler, timesteps, plan.min_snr_gamma)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(modules, step)
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % plan.checkpoint_every == 0 or step + 1 == plan.base_steps:
            _save_checkpoint(ckpt_path, unet=unet.state_dict(), text_encoder=text_encoder.state_dict(),
                             optimizer=optimizer.state_dict(), ema=ema.shadow, step=step + 1)
            log.info("unet step %d loss %.4f", step + 1, loss.item())
        if (step + 1) % 1000 == 0 and step + 1 < plan.base_steps:
            _export(work / "preview-model", tokenizer, vae, unet, text_encoder, ema)
    _export(MODEL_DIR, tokenizer, vae, unet, text_encoder, ema)


def _export(directory: Path, tokenizer, vae, unet, text_encoder, ema: EMA) -> None:
    """Write the EMA weights as a standard diffusers folder (what from_pretrained reads)."""
    import copy

    from diffusers import StableDiffusionPipeline

    vae = copy.deepcopy(vae).to("cpu")

    unet_copy, text_copy = build_unet(), build_text_encoder(tokenizer)
    unet_copy.load_state_dict(unet.state_dict())
    text_copy.load_state_dict(text_encoder.state_dict())
    ema.copy_to([unet_copy, text_copy])
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_copy, tokenizer=tokenizer, unet=unet_copy,
        scheduler=build_inference_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):  # for tools that read CLIP's classic files
        shutil.copy(Path(tokenizer.name_or_path) / name, directory / "tokenizer" / name)
    log.info("exported model to %s", directory)


def train_lora(plan: TrainingPlan, work: Path, style: Style, device: torch.device) -> None:
    """A style LoRA on the shipped model: same captions, pictures drawn in `style`."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True).to(device)
    unet, vae, tokenizer, text_encoder = pipe.unet, pipe.vae, pipe.tokenizer, pipe.text_encoder
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    unet.add_adapter(LoraConfig(
        r=plan.lora_rank, lora_alpha=plan.lora_rank, init_lora_weights="gaussian",
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2"],
    ))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lora_lr, weight_decay=0.0)
    encoded = encode_dataset(vae, build_dataset(plan, style, scale=0.4))
    tokens = {key: _tokenize(tokenizer, captions) for key, (captions, _, _) in encoded.items()}
    with torch.no_grad():
        hidden = {key: torch.cat([text_encoder(t.to(device))[0].cpu() for t in ids.split(512)])
                  for key, ids in tokens.items()}
        empty = text_encoder(_tokenize(tokenizer, [""]).to(device))[0][0].cpu()
    scheduler = build_training_scheduler()
    generator = torch.Generator().manual_seed(plan.seed)
    rng = random.Random(plan.seed)
    bucket_keys, bucket_weights = list(BUCKETS), list(BUCKETS.values())
    unet.train()
    for step in tqdm(range(plan.lora_steps), desc=f"lora {style}"):
        for group in optimizer.param_groups:
            group["lr"] = plan.lora_lr * min(1.0, (step + 1) / 100)
        key = rng.choices(bucket_keys, bucket_weights)[0]
        _, means, stds = encoded[key]
        index = torch.randint(0, len(means), (plan.lora_batch,), generator=generator)
        condition = hidden[key][index].clone()
        drop = torch.rand(plan.lora_batch, generator=generator) < plan.caption_dropout
        condition[drop] = empty
        noisy, noise, timesteps = _noisy_batch(vae, scheduler, means[index], stds[index], generator, device)
        prediction = unet(noisy, timesteps, condition.to(device)).sample
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * _min_snr_weights(scheduler, timesteps, plan.min_snr_gamma)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 250 == 0:
            log.info("lora %s step %d loss %.4f", style, step + 1, loss.item())
    unet.to("cpu")
    layers = get_peft_model_state_dict(unet)  # peft keys (lora_A/lora_B), what load_lora_weights reads
    LORA_DIR.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(LORA_DIR, unet_lora_layers=layers,
                                              weight_name=f"{style}.safetensors")
    log.info("saved LoRA %s", LORA_DIR / f"{style}.safetensors")


def _device(text: str) -> torch.device:
    try:
        return torch.device(text)
    except RuntimeError as error:  # argparse reports only ValueError and TypeError by itself
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="train-builtin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=("all", "base", "decoder", "lora", "captioner"), default="all",
                        help="base: tokenizer, VAE, UNet and text encoder, then the decoder; "
                             "decoder: sharpen the VAE decoder only; lora: the style LoRAs; "
                             "captioner: the /describe network")
    parser.add_argument("--work-dir", type=Path, default=Path(".cache/train-builtin"),
                        help="checkpoints and intermediate files (resumed from when present)")
    parser.add_argument("--device", type=_device, default=torch.device("cpu"),
                        help="where to train: cpu (default), cuda, cuda:1, mps")
    args = parser.parse_args(argv)
    device: torch.device = args.device
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    plan = TrainingPlan()
    torch.manual_seed(plan.seed)
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.phase in ("all", "base"):
        tokenizer = build_tokenizer(work / "tokenizer", plan.seed)
        encoded_path = work / "encoded.pt"
        if (cached := _load_checkpoint(encoded_path)) is not None and (work / "vae" / "config.json").exists():
            vae = train_vae(plan, work, styles={}, device=device)  # loads the finished VAE
            encoded = {tuple(int(n) for n in key.split("x")): value for key, value in cached.items()}
        else:
            dataset = build_dataset(plan)
            vae = train_vae(plan, work, build_style_datasets(plan, plain=dataset), device)
            encoded = encode_dataset(vae, dataset)
            _save_checkpoint(encoded_path, **{f"{h}x{w}": value for (h, w), value in encoded.items()})
            del dataset
        train_base(plan, work, tokenizer, vae, encoded, device)
    if args.phase in ("all", "base", "decoder"):
        train_decoder(plan, work, device).save_pretrained(MODEL_DIR / "vae")
    if args.phase in ("all", "lora"):
        for style in LORA_STYLES:
            train_lora(plan, work, style, device)
    if args.phase in ("all", "captioner"):
        from .captioner import train as train_captioner

        train_captioner(device=device)
    log.info("done in %.1f minutes", (time.monotonic() - started) / 60)


if __name__ == "__main__":
    main()
