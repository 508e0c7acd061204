"""What the operator configured to generate with: model versions, niji, styles, samplers, LoRAs.

Plain frozen dataclasses, built by `bot.config` from config.toml, so that the
generation package never reads the settings file itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .memory import MemorySettings
from .prompt import normalise_sampler_name

ModelFamily = Literal["sd15", "sdxl"]
BUILTIN_SOURCE = "builtin"

# The WebUI sampler names users know (normalised), each mapped to a diffusers scheduler
# by the engine.
KNOWN_SAMPLERS = (
    "euler", "euler_a", "heun", "lms", "lms_karras", "ddim", "pndm", "unipc",
    "dpm++_2m", "dpm++_2m_karras", "dpm++_sde", "dpm++_sde_karras",
)


@dataclass(frozen=True)
class ModelVersion:
    """One `--version`: where its weights are and how prompts are dressed for it."""

    name: str
    source: str  # "builtin", a diffusers folder, a hub id already on disk, or one .safetensors file
    family: ModelFamily = "sd15"
    config: str | None = None  # single-file checkpoints: a local diffusers folder with the architecture
    style_suffix: str = ""  # added to the prompt unless `--style raw`
    style_lora: str | None = None  # applied unless `--style raw`
    style_lora_weight: float = 1.0
    steps: int | None = None  # at --quality 1; None: the family's default (FAMILY_DEFAULTS)
    cfg: float | None = None  # at --stylize 100; None: the family's default
    sampler: str | None = None  # a WebUI name; None: the scheduler saved with the model
    ip_adapter: str | None = None  # image prompts: an IP-Adapter weights file (else img2img from the pictures)
    ip_adapter_encoder: str | None = None  # its CLIP vision folder; None: `image_encoder/` beside the file
    dtype: str | None = None  # "float16", "bfloat16" or "float32"; None: float16 on a GPU, float32 on a CPU
    inpaint: str | None = None  # an inpainting checkpoint (9-channel UNet) for Vary (Region), zoom, pan, square

    @property
    def is_builtin(self) -> bool:
        return self.source == BUILTIN_SOURCE


@dataclass(frozen=True)
class NijiOption:
    """What `--niji [V]` selects: another model version, or the base model with a LoRA."""

    version: str
    model: str | None = None  # a name in ModelCatalog.versions
    lora: str | None = None
    lora_weight: float = 1.0


@dataclass(frozen=True)
class StyleOption:
    """A named `--style`: extra prompt words and/or a LoRA."""

    name: str
    suffix: str = ""
    lora: str | None = None
    lora_weight: float = 1.0


@dataclass(frozen=True)
class ModelCatalog:
    versions: dict[str, ModelVersion]
    default_version: str
    lora_dir: Path
    niji: dict[str, NijiOption] = field(default_factory=dict)
    niji_default: str | None = None
    styles: dict[str, StyleOption] = field(default_factory=dict)
    samplers: tuple[str, ...] = KNOWN_SAMPLERS
    describe_model: str = "builtin"  # /describe: the built-in captioner, or a BLIP folder
    memory: MemorySettings = field(default_factory=MemorySettings)

    def __post_init__(self) -> None:
        if self.default_version not in self.versions:
            raise ValueError(f"default_version {self.default_version!r} is not one of the versions "
                             f"{sorted(self.versions)}")
        if self.niji and self.niji_default not in self.niji:
            raise ValueError(f"niji default {self.niji_default!r} is not one of {sorted(self.niji)}")
        for version in self.versions.values():
            if version.sampler is not None and version.sampler not in KNOWN_SAMPLERS:
                raise ValueError(f"version {version.name!r}: unknown sampler {version.sampler!r}: "
                                 f"known ones are {list(KNOWN_SAMPLERS)}")
        unknown = [s for s in self.samplers if normalise_sampler_name(s) not in KNOWN_SAMPLERS]
        if unknown:
            raise ValueError(f"unknown samplers {unknown}: known ones are {list(KNOWN_SAMPLERS)}")


def list_loras(folder: Path) -> list[str]:
    """LoRA names a prompt may use: the `.safetensors` files in the folder, without suffix."""
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob("*.safetensors"))
