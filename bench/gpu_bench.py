"""The engine on a GPU: SD 1.5- and SDXL-size pipelines (random weights) against bare diffusers, in one run.

    .venv/bin/python bench/gpu_bench.py [--steps 30] [--json PATH] [--budget-s 420]
    .venv/bin/python bench/gpu_bench.py --smoke [--json PATH]   # tiny models, CPU, float32, 2 steps

For each family (SD 1.5 at 512², SDXL at 1024²), built from its architecture's configs with
random weights (they cost what real ones cost), and each dtype (float16 and bfloat16 on
CUDA, float32 in the smoke run), a grid of 4 images at the family's guidance (batch 8 in
the UNet), it prints:

- seconds per grid through our Engine (the pipeline saved to a temporary folder once, a
  ModelCatalog naming it, `Engine(catalog, device, dtype).run(Imagine(...))`, previews off),
  and through the same pipeline object called directly in several setups: SDPA (diffusers'
  default), + VAE slicing, channels_last UNet and VAE, and channels_last + `torch.compile(unet)`
  (its warm-up reported on its own; skipped with the reason when it fails). The engine's
  overhead is engine / fastest bare setup (compiled included), and / fastest eager one;
- UNet MFU: the FLOPs of one UNet call at the grid's batch (FlopCounterMode) × UNet calls
  per second (timed alone, and the engine's whole grid: steps / grid seconds), against the
  GPU's peak dense fp16/bf16 TFLOPS (PEAK_TFLOPS; "unknown peak" for other GPUs);
- peak memory per setup beside generation/memory.py's `estimate_peak_bytes` for the same
  job. On CUDA: the weights plus `torch.cuda.max_memory_allocated` above what was resident
  before the call. On a CPU: the process's `ru_maxrss`, a high-water mark of the whole
  process that never goes down (so every setup shows the largest so far);
- preview cost: the engine with a preview every PREVIEW_EVERY steps vs none, in % of the grid;
- the first job: engine created → first grid done (reading the weights from the folder
  included; CUDA is already initialised by then) vs a warm grid.

A compact table ends the run; `--json PATH` writes every figure.

Time (the GPU run must end within 8 minutes, unattended): every setup is measured once after
one short warm-up (WARM_STEPS steps). Compiling comes last, after every other figure of every
family and dtype, float16 first and SDXL first (COMPILE_ORDER), each only while `--budget-s`
(420 s) allows it by a guess (GUESS_COMPILE_S, then the family's measured warm-up), and
abandoned by an alarm if it is still running when the budget is spent. Whatever would
overrun the budget is skipped with a printed note. A pass that fails (an out-of-memory, a
diffusers change) is noted with its traceback, the others go on, and the run exits with 1.
The SDXL pipeline is built directly on the device (each network made there and cast to the
dtype at once: nothing initialised on the CPU, which takes minutes for 3.5 B parameters) and
saved (safetensors, about 7 GB in float16) to a temporary folder that is removed once its
family is done ($TMPDIR chooses the disk).

--smoke runs every path but compiling on tiny models (tests/bench/test_gpu_bench.py runs it),
on one CPU thread, and also builds the full-size configs on the meta device to check them
against the published checkpoints' parameter counts and to count their UNets' FLOPs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a lighthouse on a cliff at dawn, oil painting"
GRID = 4
WARM_STEPS = 3  # steps of every warm-up call (a compile's included): the same shapes, a tenth of the time
UNET_TIMED_CALLS = 5  # UNet calls timed alone for the MFU (2 in the smoke run)
VERSION = "bench"  # the model version's name in the catalog
FAMILIES = ("sd15", "sdxl")
SCALING_FACTOR = {"sd15": 0.18215, "sdxl": 0.13025}
CLIP_VOCAB = 49408  # CLIP's; the built-in tokenizer's ids are all below it

# Peak dense (no sparsity) fp16/bf16 tensor TFLOPS, by a word in the device's name (SXM parts; first match wins).
PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),  # fp16 with fp32 accumulation
)

# What the published checkpoints hold, to check the configs below against (smoke run, on the meta device).
PUBLISHED_PARAMETERS = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}

# Seconds guessed before anything of a family has run on this machine (then measured figures are used).
GUESS_FAMILY_S = {"sd15": 60.0, "sdxl": 180.0}  # build, save, every dtype's figures but compile
GUESS_COMPILE_S = {"sd15": 90.0, "sdxl": 180.0}
# Compiling is tried in this order within a dtype: SDXL first, the model that matters most and the longest to compile.
COMPILE_ORDER = ("sdxl", "sd15")


# ---------------------------------------------------------------------------
# a result row, and the time budget


@dataclass
class Row:
    """Every figure of one family in one dtype."""

    family: str
    dtype: str
    width: int
    height: int
    steps: int
    guidance: float
    bare_grid_s: dict[str, float] = field(default_factory=dict)  # setup name -> seconds per grid
    peak_bytes: dict[str, int] = field(default_factory=dict)  # setup name ("engine" too) -> measured peak
    estimate_bytes: dict[str, int] = field(default_factory=dict)  # the same setups: estimate_peak_bytes
    engine_grid_s: float | None = None  # previews off
    engine_encode_s: float | None = None  # of that grid, encoding the prompt (GenerationResult.timings)
    preview_grid_s: float | None = None  # previews every `preview_every` steps
    preview_every: int = 0
    first_job_s: float | None = None  # Engine created -> first grid done, weights read from disk
    compile_warmup_s: float | None = None  # the first (short) compiled call: compiling included
    compile_note: str | None = None  # why there is no compiled figure
    unet_flops: int | None = None  # one UNet call at the grid's batch
    unet_calls_per_s: float | None = None  # UNet calls alone, eager, SDPA
    peak_tflops: float | None = None
    mfu_note: str | None = None  # why there is no MFU

    def fastest(self, eager_only: bool = False) -> tuple[str, float] | None:
        timed = {name: s for name, s in self.bare_grid_s.items() if not (eager_only and "compile" in name)}
        if not timed:
            return None
        name = min(timed, key=timed.__getitem__)
        return name, timed[name]

    def overhead(self, eager_only: bool = False) -> float | None:
        fastest = self.fastest(eager_only)
        return None if fastest is None or self.engine_grid_s is None else self.engine_grid_s / fastest[1]

    def unet_mfu_pct(self) -> float | None:
        if self.peak_tflops is None or self.unet_flops is None or self.unet_calls_per_s is None:
            return None
        return 100 * self.unet_flops * self.unet_calls_per_s / (self.peak_tflops * 1e12)

    def engine_mfu_pct(self) -> float | None:
        """The UNet's share of the GPU over the engine's whole grid (text encoding, VAE and Python included)."""
        if self.peak_tflops is None or self.unet_flops is None or self.engine_grid_s is None:
            return None
        return 100 * self.unet_flops * self.steps / self.engine_grid_s / (self.peak_tflops * 1e12)

    def preview_cost_pct(self) -> float | None:
        if self.preview_grid_s is None or self.engine_grid_s is None:
            return None
        return 100 * (self.preview_grid_s / self.engine_grid_s - 1)

    def as_json(self) -> dict[str, Any]:
        fastest, eager = self.fastest(), self.fastest(eager_only=True)
        return asdict(self) | {
            "bare_fastest_setup": fastest and fastest[0], "bare_fastest_s": fastest and fastest[1],
            "bare_fastest_eager_s": eager and eager[1], "overhead_ratio": self.overhead(),
            "overhead_vs_eager_ratio": self.overhead(eager_only=True), "unet_mfu_pct": self.unet_mfu_pct(),
            "engine_mfu_pct": self.engine_mfu_pct(), "preview_cost_pct": self.preview_cost_pct(),
            "first_job_ratio": (self.first_job_s / self.engine_grid_s
                                if self.first_job_s and self.engine_grid_s else None),
        }


@dataclass
class Budget:
    """The seconds the run may take; what would overrun is skipped with a printed note."""

    seconds: float
    started: float = field(default_factory=time.perf_counter)
    notes: list[str] = field(default_factory=list)
    failed: bool = False

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def allows(self, what: str, needs_s: float) -> bool:
        if needs_s <= self.left():
            return True
        self.note(f"skipped {what}: needs about {needs_s:.0f} s, {max(0.0, self.left()):.0f} s of the budget left")
        return False

    def note(self, text: str) -> None:
        print(f"  NOTE: {text}", flush=True)
        self.notes.append(text)

    def fail(self, text: str) -> None:
        """A failure is noted like a skip, and makes the run exit with status 1 at the end."""
        self.note(f"FAILED {text}")
        self.failed = True


# ---------------------------------------------------------------------------
# the pipelines: configs written out, random weights, built on the device


def unet_config(family: str, tiny: bool) -> dict[str, Any]:
    if family == "sd15" and not tiny:
        return {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                "block_out_channels": (320, 640, 1280, 1280),
                "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                     "DownBlock2D"),
                "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                "cross_attention_dim": 768, "attention_head_dim": 8}
    if family == "sdxl" and not tiny:
        return {"sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                "block_out_channels": (320, 640, 1280),
                "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20),
                "cross_attention_dim": 2048, "use_linear_projection": True, "addition_embed_type": "text_time",
                "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}
    if family == "sd15":  # tiny: 64² pictures, a CPU runs a grid in a fraction of a second
        return {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
                "block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 32,
                "attention_head_dim": 8, "norm_num_groups": 8}
    return {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,  # tiny SDXL (tiny_sdxl.py)
            "block_out_channels": (32, 64), "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "cross_attention_dim": 64,
            "attention_head_dim": (2, 4), "transformer_layers_per_block": (1, 1), "norm_num_groups": 8,
            "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 32 + 6 * 8}


def vae_config(family: str, tiny: bool) -> dict[str, Any]:
    config = {"in_channels": 3, "out_channels": 3, "latent_channels": 4,
              "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
              "scaling_factor": SCALING_FACTOR[family],
              "force_upcast": True}  # SDXL's pipeline decodes in float32 when the VAE is float16, as for the real one
    if tiny:
        return config | {"block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8,
                         "sample_size": 64}
    return config | {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
                     "sample_size": 512 if family == "sd15" else 1024}


def text_encoder_configs(family: str, tiny: bool, tokenizer) -> list[dict[str, Any]]:
    """One config per text encoder; the last of SDXL's has the projection (the pooled embedding)."""
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id, "max_position_embeddings": 77}
    if tiny:
        small = special | {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                           "num_hidden_layers": 2, "num_attention_heads": 2, "projection_dim": 32}
        return [small] if family == "sd15" else [small, small]
    clip_l = special | {"vocab_size": CLIP_VOCAB, "hidden_size": 768, "intermediate_size": 3072,
                        "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "quick_gelu"}
    if family == "sd15":
        return [clip_l]
    big_g = special | {"vocab_size": CLIP_VOCAB, "hidden_size": 1280, "intermediate_size": 5120,
                       "num_hidden_layers": 32, "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280}
    return [clip_l, big_g]


def build_pipeline(family: str, tiny: bool, device, dtype):
    """A text-to-image pipeline of the family with random weights, built on `device` (no copy from the CPU).

    Each network is made in float32 on the device and cast at once, so the largest float32 copy
    alive is one UNet's (10 GB for SDXL's). On the meta device nothing is allocated at all."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from generation.builtin import MODEL_DIR

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(MODEL_DIR / "tokenizer")
    configs = text_encoder_configs(family, tiny, tokenizer)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config(family, tiny)).to(dtype)
        vae = AutoencoderKL(**vae_config(family, tiny)).to(dtype)
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs[0])).to(dtype)
        text_encoder_2 = (CLIPTextModelWithProjection(CLIPTextConfig(**configs[1])).to(dtype)
                          if family == "sdxl" else None)
    # SDXL's scheduler; SD 1.5 ships PNDM, which costs the same per UNet call
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_modules(pipe) -> list:
    return [module for module in pipe.components.values() if isinstance(module, torch.nn.Module)]


def module_bytes(pipe) -> int:
    from generation.memory import module_bytes as count

    return count(*pipeline_modules(pipe))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def native_size(pipe) -> tuple[int, int]:
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


def catalog_for(family: str, folder: Path):
    from generation.catalog import ModelCatalog, ModelVersion

    return ModelCatalog(versions={VERSION: ModelVersion(VERSION, str(folder), family=family)}, default_version=VERSION,
                        lora_dir=folder / "loras")  # none


def grid_request(catalog, steps: int):
    """The bot's path: parse, then validate against the catalog (as tests/conftest.py's `request_for`)."""
    from generation.catalog import list_loras
    from generation.prompt import parse_prompt
    from generation.validation import validate_request

    (request,) = parse_prompt(f"{PROMPT} --steps {steps}")
    return validate_request(request, catalog, available_loras=list_loras(catalog.lora_dir))


# ---------------------------------------------------------------------------
# measuring


def free_memory(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(device, weights: int, call, rounds: int = 1) -> tuple[float, int]:
    """The fastest of `rounds` calls in seconds, and the peak memory they reached.

    CUDA: the weights plus the most allocated above what was resident before the call (the
    other pipelines that stay loaded are not counted). CPU: the process's ru_maxrss."""
    best, peak = math.inf, 0
    for _ in range(rounds):
        synchronize(device)
        if device.type == "cuda":
            resident = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        call()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
        if device.type == "cuda":
            peak = max(peak, weights + torch.cuda.max_memory_allocated(device) - resident)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return best, peak


def estimate(pipe, weights: int, size: tuple[int, int], guidance: float, slicing: bool, tiled: bool) -> int:
    from generation.memory import estimate_peak_bytes

    width, height = size
    return estimate_peak_bytes(weights=weights, images=GRID, width=width, height=height,
                               vae_factor=pipe.vae_scale_factor, dtype=pipe.unet.dtype, guidance=guidance > 1,
                               vae_slicing=slicing, vae_tiled=tiled, tile_side=width)


def bare_grid(pipe, steps: int, guidance: float, size: tuple[int, int]) -> None:
    """The grid as a diffusers user makes it: prompt strings, one call, the same seeds' CPU noise."""
    width, height = size
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(GRID)]
    pipe([PROMPT] * GRID, negative_prompt=[""] * GRID, num_inference_steps=steps, guidance_scale=guidance,
         width=width, height=height, generator=generators)


def set_memory_format(pipe, channels_last: bool) -> None:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    pipe.unet.to(memory_format=memory_format)
    pipe.vae.to(memory_format=memory_format)


def set_slicing(pipe, slicing: bool) -> None:
    if slicing:
        pipe.vae.enable_slicing()
    else:
        pipe.vae.disable_slicing()


def time_bare_setup(row: Row, pipe, device, name: str, slicing: bool, rounds: int) -> None:
    """One warm-up of WARM_STEPS steps, then the grid timed (and its memory) in this setup."""
    size, weights = (row.width, row.height), module_bytes(pipe)
    set_slicing(pipe, slicing)
    bare_grid(pipe, WARM_STEPS, row.guidance, size)
    seconds, peak = measured(device, weights, lambda: bare_grid(pipe, row.steps, row.guidance, size), rounds)
    record_setup(row, name, seconds, peak, estimate(pipe, weights, size, row.guidance, slicing, tiled=False))


def record_setup(row: Row, name: str, seconds: float, peak: int, estimated: int) -> None:
    row.bare_grid_s[name] = seconds
    row.peak_bytes[name] = peak
    row.estimate_bytes[name] = estimated
    print(f"  bare {name:<24} {seconds:8.3f} s per grid   peak {gib(peak)}, estimate {gib(estimated)}", flush=True)


def time_bare_setups(row: Row, pipe, device, rounds: int, budget: Budget) -> None:
    """SDPA with VAE slicing off and on, then channels_last with the better of the two."""
    time_bare_setup(row, pipe, device, "sdpa", slicing=False, rounds=rounds)
    grid_s = row.bare_grid_s["sdpa"] * rounds * 1.2
    if budget.allows(f"{row.family} {row.dtype} bare sdpa+slicing", grid_s):
        time_bare_setup(row, pipe, device, "sdpa+slicing", slicing=True, rounds=rounds)
    slicing = row.fastest()[0] == "sdpa+slicing"
    name = "channels_last" + ("+slicing" if slicing else "")
    if budget.allows(f"{row.family} {row.dtype} bare {name}", grid_s):
        set_memory_format(pipe, channels_last=True)
        try:
            time_bare_setup(row, pipe, device, name, slicing=slicing, rounds=rounds)
        finally:
            set_memory_format(pipe, channels_last=False)


def time_compiled(row: Row, pipe, device, backend: str, rounds: int, seconds_left: float) -> None:
    """channels_last + torch.compile(unet) with the better VAE slicing; the first (short) call compiles.

    Abandoned (a TimeoutError, reported like any failure) if still running after `seconds_left`."""
    slicing = "slicing" in row.fastest(eager_only=True)[0]
    name = "channels_last" + ("+slicing" if slicing else "") + "+compile"
    size, weights = (row.width, row.height), module_bytes(pipe)
    original = pipe.unet
    set_memory_format(pipe, channels_last=True)
    set_slicing(pipe, slicing)
    try:
        with deadline(seconds_left):
            pipe.unet = torch.compile(original, backend=backend)
            started = time.perf_counter()
            bare_grid(pipe, WARM_STEPS, row.guidance, size)
            synchronize(device)
            row.compile_warmup_s = time.perf_counter() - started
            print(f"  torch.compile ({backend}) warm-up, {WARM_STEPS} steps: {row.compile_warmup_s:.1f} s",
                  flush=True)
            seconds, peak = measured(device, weights, lambda: bare_grid(pipe, row.steps, row.guidance, size), rounds)
        record_setup(row, name, seconds, peak, estimate(pipe, weights, size, row.guidance, slicing, tiled=False))
    except Exception as error:  # whatever compiling throws, the rest of the figures stand
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        row.compile_note = f"failed: {type(error).__name__}: {reason}"
        print(f"  torch.compile skipped: {row.compile_note}", flush=True)
    finally:
        pipe.unet = original
        set_memory_format(pipe, channels_last=False)
        torch._dynamo.reset()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """A TimeoutError raised inside the block once `seconds` have passed (SIGALRM, so the main thread on Unix)."""
    def expire(signum, frame) -> None:
        raise TimeoutError(f"still running when the time budget ran out ({seconds:.0f} s)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def unet_inputs(pipe, batch: int, size: tuple[int, int], device, dtype) -> tuple[Any, Any, dict[str, Any]]:
    """Random inputs of one UNet call as the pipeline makes them: latents, timestep, text (and SDXL's added)
    conditioning."""
    config = pipe.unet.config
    width, height = size
    factor = pipe.vae_scale_factor
    sample = torch.randn(batch, config.in_channels, height // factor, width // factor, device=device, dtype=dtype)
    timestep = torch.tensor(500, device=device)
    kwargs: dict[str, Any] = {
        "encoder_hidden_states": torch.randn(batch, 77, config.cross_attention_dim, device=device, dtype=dtype)}
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        time_ids = torch.tensor([[height, width, 0, 0, height, width]] * batch, device=device, dtype=dtype)
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, device=device, dtype=dtype),
                                       "time_ids": time_ids}
    return sample, timestep, kwargs


def unet_flops(pipe, batch: int, size: tuple[int, int], device, dtype) -> int:
    """FLOPs of one UNet call (FlopCounterMode). A CPU's fused attention kernel is not counted by it,
    so there (and on the meta device) attention runs as plain matrix products while counting."""
    sample, timestep, kwargs = unet_inputs(pipe, batch, size, device, dtype)
    attention = sdpa_kernel(SDPBackend.MATH) if device.type != "cuda" else contextlib.nullcontext()
    with torch.no_grad(), attention, FlopCounterMode(display=False) as counter:
        pipe.unet(sample, timestep, **kwargs)
    return counter.get_total_flops()


def unet_calls_per_s(pipe, batch: int, size: tuple[int, int], device, dtype, calls: int) -> float:
    sample, timestep, kwargs = unet_inputs(pipe, batch, size, device, dtype)
    with torch.no_grad():
        pipe.unet(sample, timestep, **kwargs)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        for _ in range(calls):
            pipe.unet(sample, timestep, **kwargs)
        synchronize(device)
    return calls / (time.perf_counter() - started)


def peak_tflops_for(device) -> tuple[float | None, str | None]:
    if device.type != "cuda":
        return None, f"none on {device.type}: peak TFLOPS are known only for the GPUs in PEAK_TFLOPS"
    name = torch.cuda.get_device_name(device)
    for word, tflops in PEAK_TFLOPS:
        if re.search(rf"\b{re.escape(word)}\b", name):
            return tflops, None
    return None, f"unknown peak for {name!r} (add it to PEAK_TFLOPS)"


def time_unet(row: Row, pipe, device, dtype, calls: int) -> None:
    batch = GRID * (2 if row.guidance > 1 else 1)
    size = (row.width, row.height)
    row.unet_flops = unet_flops(pipe, batch, size, device, dtype)
    row.unet_calls_per_s = unet_calls_per_s(pipe, batch, size, device, dtype, calls)
    row.peak_tflops, row.mfu_note = peak_tflops_for(device)
    mfu = row.unet_mfu_pct()
    print(f"  UNet, batch {batch}: {tflop(row.unet_flops)} per call, {row.unet_calls_per_s:.2f} calls/s, "
          f"MFU {row.mfu_note if mfu is None else f'{mfu:.1f} %'}", flush=True)


def time_engine(row: Row, catalog, device, dtype, rounds: int, budget: Budget) -> None:
    """First job (engine created → grid done, weights read), then warm grids without and with previews."""
    from generation.engine import Engine, Imagine

    request = grid_request(catalog, row.steps)
    memory = catalog.memory
    started = time.perf_counter()
    engine = Engine(catalog, device=device, dtype=dtype, preview_every=0)
    engine.run(Imagine(request, seed=0))
    synchronize(device)
    row.first_job_s = time.perf_counter() - started
    print(f"  engine first job (load + grid): {row.first_job_s:8.3f} s", flush=True)
    model = engine.model(VERSION)
    pipe, weights, size = model.text2img, model.weight_bytes, (row.width, row.height)
    timings: dict[str, float] = {}

    def grid() -> None:
        timings.update(engine.run(Imagine(request, seed=0)).timings)

    row.engine_grid_s, row.peak_bytes["engine"] = measured(device, weights, grid)
    row.engine_encode_s = timings.get("encode")
    with_previews = budget.allows(f"{row.family} {row.dtype} engine with previews", row.engine_grid_s * rounds * 2.5)
    if with_previews:  # rounds alternate previews on and off, so both see the same machine
        engine.preview_every = row.preview_every
        row.preview_grid_s, _ = measured(device, weights, grid)
        for _ in range(rounds - 1):
            engine.preview_every = 0
            row.engine_grid_s = min(row.engine_grid_s, measured(device, weights, grid)[0])
            engine.preview_every = row.preview_every
            row.preview_grid_s = min(row.preview_grid_s, measured(device, weights, grid)[0])
    threshold = memory.vae_tiling_above_megapixels  # as Engine decides it
    tiled = bool(threshold) and row.width * row.height > threshold * 1e6
    row.estimate_bytes["engine"] = estimate(pipe, weights, size, row.guidance, memory.vae_slicing, tiled)
    print(f"  engine, no previews          {row.engine_grid_s:8.3f} s per grid   peak {gib(row.peak_bytes['engine'])}, "
          f"estimate {gib(row.estimate_bytes['engine'])}", flush=True)
    if with_previews:
        print(f"  engine, preview every {row.preview_every} steps {row.preview_grid_s:8.3f} s per grid   "
              f"({row.preview_cost_pct():+.1f} %)", flush=True)


# ---------------------------------------------------------------------------
# one family, every dtype


def bench_family(family: str, args, device, dtypes: list, budget: Budget, rows: list[Row]):
    """Build and save the family's pipeline, then every dtype's figures but compile; returns the pipeline."""
    from generation.models import FAMILY_DEFAULTS

    started = time.perf_counter()
    pipe = build_pipeline(family, args.smoke, device, dtypes[0])
    synchronize(device)
    print(f"{family}: built on {device} in {time.perf_counter() - started:.1f} s, weights {gib(module_bytes(pipe))}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix=f"gpu_bench_{family}_") as folder:
        started = time.perf_counter()
        pipe.save_pretrained(folder, safe_serialization=True)
        print(f"{family}: saved to {folder} in {time.perf_counter() - started:.1f} s", flush=True)
        catalog = catalog_for(family, Path(folder))
        previous: Row | None = None
        for dtype in dtypes:
            guess = (GUESS_FAMILY_S[family] / len(dtypes) if previous is None or previous.engine_grid_s is None
                     else 12 * previous.engine_grid_s)
            if not args.smoke and not budget.allows(f"{family} {dtype_name(dtype)}", guess):
                continue
            pipe.to(dtype=dtype)
            width, height = native_size(pipe)
            row = Row(family, dtype_name(dtype), width, height, args.steps, guidance=FAMILY_DEFAULTS[family][1],
                      preview_every=args.preview_every)
            print(f"{family} {row.dtype}, {width}x{height}, grid of {GRID}, {args.steps} steps, "
                  f"guidance {row.guidance}:", flush=True)
            rows.append(row)
            try:
                time_bare_setups(row, pipe, device, args.rounds, budget)
                time_unet(row, pipe, device, dtype, args.unet_calls)
                time_engine(row, catalog, device, dtype, args.rounds, budget)
            except Exception as error:  # one failed pass costs its own figures, not the whole run's
                traceback.print_exc()
                budget.fail(f"{family} {row.dtype}: {type(error).__name__}: {error}")
            free_memory(device)  # the engine's copy of the weights
            previous = row
    free_memory(device)
    return pipe


def compile_all(rows: list[Row], pipes: dict, device, dtypes: list, args, budget: Budget) -> None:
    """torch.compile for each row while the budget allows: the first dtype's rows first, in COMPILE_ORDER."""
    measured_s: dict[str, float] = {}  # a family's last warm-up, a better guess than GUESS_COMPILE_S
    names = [dtype_name(dtype) for dtype in dtypes]
    for row in sorted(rows, key=lambda row: (names.index(row.dtype), COMPILE_ORDER.index(row.family))):
        if args.smoke and args.compile_backend is None:
            row.compile_note = "skipped: --smoke (compiling takes minutes on a CPU)"
        elif args.no_compile:
            row.compile_note = "skipped: --no-compile"
        elif row.fastest() is None or row.family not in pipes:
            row.compile_note = "skipped: its eager pass failed"
        if row.compile_note:
            print(f"{row.family} {row.dtype}: torch.compile {row.compile_note}", flush=True)
            continue
        needs = measured_s.get(row.family, GUESS_COMPILE_S[row.family]) + 2 * row.fastest()[1]
        if not budget.allows(f"{row.family} {row.dtype} torch.compile", needs):
            row.compile_note = "skipped: would overrun the time budget"
            continue
        print(f"{row.family} {row.dtype}, channels_last + torch.compile(unet):", flush=True)
        pipe = pipes[row.family]
        pipe.to(dtype=getattr(torch, row.dtype))
        time_compiled(row, pipe, device, args.compile_backend or "inductor", args.rounds, budget.left())
        if row.compile_warmup_s is not None:
            measured_s[row.family] = row.compile_warmup_s


def check_full_size_configs() -> dict[str, Any]:
    """Smoke run: the full-size configs built on the meta device (nothing allocated), their parameters
    against the published checkpoints', and the FLOPs of one UNet call at the grid's batch."""
    from generation.models import FAMILY_DEFAULTS

    meta = torch.device("meta")
    figures: dict[str, Any] = {}
    for family in FAMILIES:
        pipe = build_pipeline(family, tiny=False, device=meta, dtype=torch.float16)
        parameters = {name: sum(p.numel() for p in module.parameters())
                      for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}
        batch = GRID * (2 if FAMILY_DEFAULTS[family][1] > 1 else 1)
        flops = unet_flops(pipe, batch, native_size(pipe), meta, torch.float16)
        matches = parameters == PUBLISHED_PARAMETERS[family]
        figures[family] = {"parameters": parameters, "matches_published": matches, "unet_flops": flops,
                           "size": native_size(pipe)}
        print(f"full-size {family} config (meta device): {sum(parameters.values()) / 1e9:.3f} B parameters "
              f"({'as published' if matches else 'NOT as published: ' + str(parameters)}), "
              f"UNet at batch {batch}, {native_size(pipe)[0]}²: {tflop(flops)} per call", flush=True)
    return figures


# ---------------------------------------------------------------------------
# printing


def gib(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1024**3:.2f} GiB" if size >= 1024**3 else f"{size / 1024**2:.0f} MiB"


def tflop(flops: int | None) -> str:
    if flops is None:
        return "-"
    return f"{flops / 1e12:.2f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.3f} GFLOP"


def figure(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, fmt) + suffix


def print_table(header: list[str], lines: list[list[str]]) -> None:
    """Columns as wide as their widest cell; the first left-aligned, the others right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    for cells in (header, *lines):
        print("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))))


def print_tables(rows: list[Row], device) -> None:
    lines = []
    for row in rows:
        fastest = row.fastest()
        compiled = next((s for name, s in row.bare_grid_s.items() if "compile" in name), None)
        first = "-"
        if row.first_job_s is not None and row.engine_grid_s:
            first = f"{row.first_job_s:.2f} ({row.first_job_s / row.engine_grid_s:.1f}x)"
        lines.append([
            f"{row.family} {row.dtype}", figure(row.engine_grid_s, ".3f"),
            "-" if fastest is None else f"{fastest[1]:.3f} {fastest[0]}",
            figure(row.overhead(), ".3f", "x"), figure(row.overhead(eager_only=True), ".3f", "x"),
            figure(compiled, ".3f"), figure(row.compile_warmup_s, ".1f"), tflop(row.unet_flops),
            figure(row.unet_mfu_pct(), ".1f", " %"), figure(row.engine_mfu_pct(), ".1f", " %"),
            figure(row.preview_cost_pct(), "+.1f", " %"), first,
        ])
    print()
    print_table(["model", "engine s", "fastest bare s, setup", "overhead", "vs eager", "compiled s", "warm-up s",
                 "UNet/call", "MFU UNet", "MFU engine", "previews", "first job s"], lines)
    print("engine s: seconds per grid of 4 through Engine.run, previews off. overhead: engine / fastest bare setup; "
          "vs eager: / fastest without compile.\nMFU UNet: UNet FLOPs x calls/s alone; MFU engine: UNet FLOPs x steps "
          "over the engine's grid. previews: previews on vs off, % of the grid.\nfirst job: Engine() to the first "
          "grid done (weights read from disk), and that over a warm grid.")
    for note in sorted({row.mfu_note for row in rows if row.mfu_note}):
        print(f"MFU: {note}")
    peak = "ru_maxrss (whole process, high-water)" if device.type == "cpu" else "weights + max allocated"
    lines = [[f"{row.family} {row.dtype}", setup, gib(size), gib(row.estimate_bytes.get(setup))]
             for row in rows for setup, size in row.peak_bytes.items()]
    print()
    print_table(["model", "setup", f"peak: {peak}", "estimate_peak_bytes"], lines)


# ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, float32, 2 steps (a minute)")
    parser.add_argument("--steps", type=int, help="denoising steps per grid (default 30; 2 with --smoke)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip what would take the run past this")
    parser.add_argument("--families", default=",".join(FAMILIES), help="sd15,sdxl")
    parser.add_argument("--dtypes", help="default float16,bfloat16 (float32 with --smoke)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile-backend", help="torch.compile backend (default inductor; --smoke skips compiling "
                                                  "unless one is named, e.g. eager to try the code path)")
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.smoke else 30)
    args.dtypes = args.dtypes or ("float32" if args.smoke else "float16,bfloat16")
    args.rounds = 3 if args.smoke else 1  # tiny grids: the fastest of three, so noise does not swamp them
    args.unet_calls = 2 if args.smoke else UNET_TIMED_CALLS
    args.preview_every = 0  # set in main, from the engine's PREVIEW_EVERY
    return args


def main() -> None:
    args = parse_args()
    budget = Budget(args.budget_s)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: every file is made here
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # NaN pictures of random weights
    import diffusers
    import transformers

    from generation.engine import PREVIEW_EVERY

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if args.smoke:  # tiny grids on a shared CPU: one thread, or OpenMP's spinning threads make them ten times slower
        torch.set_num_threads(1)

    # a preview must fall inside the run (none is made at the last step)
    args.preview_every = min(PREVIEW_EVERY, max(1, args.steps - 1))
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        sys.exit("no CUDA device: run with --smoke for the CPU check")
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    families = [name for name in args.families.split(",") if name]
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"gpu_bench: {what}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{'smoke (tiny models)' if args.smoke else 'SD 1.5 / SDXL-size models'}, {args.steps} steps, "
          f"preview every {args.preview_every}, budget {args.budget_s:.0f} s", flush=True)

    full_size = check_full_size_configs() if args.smoke else None
    rows: list[Row] = []
    pipes: dict[str, Any] = {}

    def write_figures() -> None:  # after each family too: a run that dies later keeps what it measured
        if args.json:
            figures = {"device": what, "torch": torch.__version__, "diffusers": diffusers.__version__,
                       "smoke": args.smoke, "steps": args.steps, "grid": GRID, "budget_s": args.budget_s,
                       "elapsed_s": time.perf_counter() - budget.started, "notes": budget.notes,
                       "full_size_configs": full_size, "rows": [row.as_json() for row in rows]}
            args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")

    for family in families:
        if args.smoke or budget.allows(f"{family} (all of it)", GUESS_FAMILY_S[family]):
            try:
                pipes[family] = bench_family(family, args, device, dtypes, budget, rows)
            except Exception as error:  # building or saving it: the other family's figures still come
                traceback.print_exc()
                budget.fail(f"{family}: {type(error).__name__}: {error}")
                free_memory(device)
            write_figures()
    compile_all(rows, pipes, device, dtypes, args, budget)
    write_figures()
    print_tables(rows, device)
    print(f"\ntotal {time.perf_counter() - budget.started:.0f} s (budget {args.budget_s:.0f} s)")
    for note in budget.notes:
        print(f"note: {note}")
    if budget.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
