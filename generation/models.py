"""Loading the configured models, offline, and switching LoRAs on them per job.

One `LoadedModel` per `--version`: the text-to-image pipeline and the image-to-image
and inpainting pipelines made from it with `from_pipe` (one copy of the weights),
the prompt encoder, and the LoRA adapters loaded so far. Nothing here reaches the
network: hub ids must already be in the local cache, and a single-file checkpoint
takes its architecture from a local diffusers folder (`config` in config.toml),
because diffusers would otherwise guess a hub repository and try to download it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from safetensors.torch import load_file as load_safetensors

from .builtin import MODEL_DIR as BUILTIN_MODEL_DIR
from .catalog import ModelVersion
from .conditioning import PromptEncoder
from .memory import module_bytes

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
LATENT_CHANNELS = 4  # what a text-to-image UNet takes
INPAINT_CHANNELS = 9  # an inpainting UNet: latents, mask, masked picture's latents
MAX_LOADED_LORAS = 8  # adapters kept in memory per model; the least recently used goes first

# (steps at --quality 1, guidance at --stylize 100) when config.toml names none
FAMILY_DEFAULTS: dict[str, tuple[int, float]] = {"builtin": (20, 6.0), "sd15": (30, 7.0), "sdxl": (30, 6.0)}

_PIPELINES = {
    "sd15": (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline),
    "sdxl": (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline),
}


class ModelLoadError(RuntimeError):
    """A configured model could not be loaded; the message says what to fix in config.toml."""


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA for one job: the file's name in the LoRA folder and its strength."""

    name: str
    weight: float


class LoraAdapters:
    """peft adapters on one pipeline: each file loaded once, weighted per job, off between jobs."""

    def __init__(self, pipe: DiffusionPipeline, lora_dir: Path, capacity: int = MAX_LOADED_LORAS,
                 other_unets: Sequence[UNet2DConditionModel] = ()) -> None:
        self._pipe = pipe
        # UNets of the version that are not `pipe`'s (an inpainting checkpoint's): the LoRA's UNet part
        # goes into them as well; the text encoders are shared, so their part is in once
        self._other_unets = tuple(other_unets)
        self._dir = lora_dir
        self._capacity = capacity
        self._loaded: OrderedDict[str, str] = OrderedDict()  # file name -> adapter name
        self._loads = 0

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    def activate(self, choices: Sequence[LoraChoice]) -> None:
        """Exactly these adapters at these weights; none at all when `choices` is empty."""
        if not choices:
            if self._loaded:
                self._pipe.disable_lora()
                for unet in self._other_unets:
                    unet.disable_lora()
            return
        names = [self._ensure_loaded(choice.name) for choice in choices]
        weights = [choice.weight for choice in choices]
        self._pipe.enable_lora()
        self._pipe.set_adapters(names, adapter_weights=weights)
        for unet in self._other_unets:
            unet.enable_lora()
            unet.set_adapters(names, weights=weights)

    def deactivate(self) -> None:
        self.activate(())

    def _ensure_loaded(self, name: str) -> str:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        path = self._dir / f"{name}.safetensors"
        if not path.is_file():
            raise ModelLoadError(f"LoRA file {path} is missing")
        self._loads += 1
        adapter = f"lora{self._loads}_{name}".replace(".", "_")
        with warnings.catch_warnings():  # several adapters on one model is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            self._pipe.load_lora_weights(str(path), adapter_name=adapter)
            try:
                if self._other_unets:  # as load_lora_weights loads the pipeline's own UNet: keys, alphas, metadata
                    state_dict, alphas, metadata = self._pipe.lora_state_dict(str(path), return_lora_metadata=True)
                    for unet in self._other_unets:
                        self._pipe.load_lora_into_unet(dict(state_dict), network_alphas=alphas, unet=unet,
                                                       adapter_name=adapter, metadata=metadata, _pipeline=self._pipe)
            except Exception:  # half loaded: the adapter leaves every model it reached
                self._pipe.delete_adapters(adapter)
                for unet in self._other_unets:
                    with contextlib.suppress(ValueError, KeyError):
                        unet.delete_adapters(adapter)
                raise
        self._loaded[name] = adapter
        log.info("loaded LoRA %s as adapter %s", name, adapter)
        if len(self._loaded) > self._capacity:
            _, oldest = self._loaded.popitem(last=False)
            self._pipe.delete_adapters(oldest)
            for unet in self._other_unets:
                unet.delete_adapters(oldest)
        return adapter


class ImagePromptAdapter:
    """An IP-Adapter: image prompts steer the text-to-image pipeline through the UNet's
    cross-attention instead of starting from the pictures' pixels.

    Read from disk once; attached to the pipeline only for the jobs that use it, because
    a UNet carrying one refuses every call made without image embeddings (and the
    image-to-image and inpainting pipelines share that UNet)."""

    def __init__(self, weights: Path, encoder_dir: Path, *, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.state_dict = _read_ip_adapter(weights)
        try:
            encoder = CLIPVisionModelWithProjection.from_pretrained(encoder_dir, local_files_only=True, dtype=dtype)
        except OSError as error:
            raise ModelLoadError(f"IP-Adapter image encoder: cannot load {encoder_dir}: {error}") from error
        self.image_encoder = encoder.to(device).eval()
        side = encoder.config.image_size
        self.feature_extractor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size=side)

    @contextlib.contextmanager
    def attached(self, pipe: DiffusionPipeline, scale: float) -> Iterator[None]:
        """The adapter in `pipe`'s UNet at `scale` (0 = the text alone) for the block, whatever happens."""
        try:  # a load that fails half-way is undone too
            pipe.register_modules(image_encoder=self.image_encoder, feature_extractor=self.feature_extractor)
            pipe.load_ip_adapter(self.state_dict, subfolder="", weight_name="", image_encoder_folder=None)
            pipe.set_ip_adapter_scale(scale)
            yield
        finally:
            pipe.unload_ip_adapter()


def load_inpaint_unet(version: ModelVersion, *, dtype: torch.dtype) -> UNet2DConditionModel:
    """The UNet of a version's `inpaint` checkpoint (9 input channels: the noisy latents, the mask,
    the masked picture's latents): a diffusers folder (a pipeline or just the UNet), or one file
    whose architecture comes from the version's `config` folder."""
    assert version.inpaint is not None
    source = version.inpaint
    common: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    try:
        if source.endswith(SINGLE_FILE_SUFFIXES):
            if version.config is None:
                raise ModelLoadError(f"version {version.name!r}: a single-file inpainting checkpoint needs `config`, "
                                     f"a local diffusers folder with the version's architecture")
            unet = UNet2DConditionModel.from_single_file(source, config=version.config, subfolder="unet",
                                                         num_in_channels=INPAINT_CHANNELS, **common)
        else:
            folder = Path(source)
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet" if (folder / "unet").is_dir()
                                                        else None, **common)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"version {version.name!r}: cannot load the inpainting checkpoint {source}: "
                             f"{error}") from error
    if unet.config.in_channels != INPAINT_CHANNELS:
        raise ModelLoadError(f"version {version.name!r}: {source} is not an inpainting checkpoint (its UNet takes "
                             f"{unet.config.in_channels} channels, an inpainting one {INPAINT_CHANNELS})")
    return unet


def _read_ip_adapter(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """An IP-Adapter file (the h94 layout: `image_proj.*` and `ip_adapter.*` tensors) as diffusers wants it."""
    if not path.is_file():
        raise ModelLoadError(f"IP-Adapter file {path} is missing")
    if path.suffix == ".safetensors":
        groups: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, tensor in load_safetensors(path).items():
            group, _, name = key.partition(".")
            if group in groups:
                groups[group][name] = tensor
    else:
        groups = torch.load(path, map_location="cpu", weights_only=True)
    if not (isinstance(groups, dict) and groups.get("image_proj") and groups.get("ip_adapter")):
        raise ModelLoadError(f"{path} is not an IP-Adapter (no image_proj and ip_adapter weights)")
    return groups


@dataclass
class LoadedModel:
    """One `--version`, ready to run: three pipelines over one set of weights."""

    version: ModelVersion
    text2img: DiffusionPipeline
    img2img: DiffusionPipeline
    inpaint: DiffusionPipeline
    encoder: PromptEncoder
    loras: LoraAdapters
    base_scheduler: SchedulerMixin  # as saved with the model; jobs get a fresh one (samplers.make_scheduler)
    default_steps: int
    default_cfg: float
    ip_adapter: ImagePromptAdapter | None = None  # image prompts through an IP-Adapter when configured

    @property
    def native_side(self) -> int:
        """The side the model was trained at: 512 for SD 1.5, 1024 for SDXL, 64 for the built-in one."""
        return int(self.text2img.unet.config.sample_size) * self.text2img.vae_scale_factor

    @property
    def alignment(self) -> int:
        """Sides must be multiples of this: VAE factor x the UNet's downsamplings."""
        downsamplings = len(self.text2img.unet.config.block_out_channels) - 1
        return self.text2img.vae_scale_factor * 2**downsamplings

    @property
    def device(self) -> torch.device:
        return self.text2img.unet.device

    @property
    def weight_bytes(self) -> int:
        """The memory its weights take (the pipelines share them; an IP-Adapter's encoder counts)."""
        modules = [m for m in self.text2img.components.values() if isinstance(m, torch.nn.Module)]
        if self.ip_adapter is not None:
            modules.append(self.ip_adapter.image_encoder)
        return module_bytes(*modules)


def load_model(version: ModelVersion, lora_dir: Path, *, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load one configured version with no network access; `ModelLoadError` says what is wrong."""
    text2img_cls, img2img_cls, inpaint_cls = _PIPELINES[version.family]
    source = str(BUILTIN_MODEL_DIR) if version.is_builtin else version.source
    common: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if version.family == "sd15":
        common |= {"safety_checker": None, "requires_safety_checker": False}
    try:
        if source.endswith(SINGLE_FILE_SUFFIXES):
            if version.config is None:
                raise ModelLoadError(
                    f"version {version.name!r}: a single-file checkpoint needs `config`, a local diffusers "
                    f"folder with the same architecture (nothing is downloaded)")
            pipe = text2img_cls.from_single_file(source, config=version.config, **common)
        else:
            pipe = text2img_cls.from_pretrained(source, **common)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"version {version.name!r}: cannot load {source}: {error}") from error
    if pipe.unet.config.in_channels != LATENT_CHANNELS:
        raise ModelLoadError(
            f"version {version.name!r}: {source} is an inpainting checkpoint (its UNet takes "
            f"{pipe.unet.config.in_channels} channels): give an ordinary checkpoint as `source` and this one as "
            f"`inpaint`")
    if torch.device(device).type != "cpu":
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)  # the engine reports progress itself
    # from_pipe casts the shared weights to its `dtype` argument, float32 when none is given
    img2img = img2img_cls.from_pipe(pipe, dtype=pipe.dtype)
    if version.inpaint:  # its own UNet; the text encoders, VAE and tokenizers stay shared
        inpaint_unet = load_inpaint_unet(version, dtype=pipe.dtype).to(pipe.device)
        inpaint = inpaint_cls.from_pipe(pipe, unet=inpaint_unet, dtype=pipe.dtype)
    else:
        inpaint = inpaint_cls.from_pipe(pipe, dtype=pipe.dtype)
    for derived in (img2img, inpaint):
        derived.set_progress_bar_config(disable=True)
    ip_adapter = None
    if version.ip_adapter:
        weights = Path(version.ip_adapter)
        encoder_dir = (Path(version.ip_adapter_encoder) if version.ip_adapter_encoder
                       else weights.parent / "image_encoder")  # the h94/IP-Adapter layout
        ip_adapter = ImagePromptAdapter(weights, encoder_dir, device=pipe.device, dtype=pipe.dtype)
    family_steps, family_cfg = FAMILY_DEFAULTS["builtin" if version.is_builtin else version.family]
    return LoadedModel(
        version=version,
        text2img=pipe,
        img2img=img2img,
        inpaint=inpaint,
        encoder=PromptEncoder(pipe),
        loras=LoraAdapters(pipe, lora_dir, other_unets=[inpaint.unet] if inpaint.unet is not pipe.unet else []),
        base_scheduler=pipe.scheduler,
        default_steps=version.steps or family_steps,
        default_cfg=version.cfg if version.cfg is not None else family_cfg,
        ip_adapter=ip_adapter,
    )
