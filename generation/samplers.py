"""The WebUI sampler names users know, as diffusers schedulers.

The table follows diffusers' own "A1111 / k-diffusion equivalents" list. A new
scheduler is made for every job from the model's scheduler config, so no state
(step index, noise history) carries over from one job to the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "lms_karras": (LMSDiscreteScheduler, {"use_karras_sigmas": True}),
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "unipc": (UniPCMultistepScheduler, {}),
    "dpm++_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpm++_2m_karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++_sde": (DPMSolverSDEScheduler, {}),
    "dpm++_sde_karras": (DPMSolverSDEScheduler, {"use_karras_sigmas": True}),
}


# what the WebUI writes in its infotexts ("Sampler: DPM++ 2M Karras"), so PNG Info tools read ours
WEBUI_LABELS = {
    "euler": "Euler", "euler_a": "Euler a", "heun": "Heun", "lms": "LMS", "lms_karras": "LMS Karras",
    "ddim": "DDIM", "pndm": "PLMS",
    "unipc": "UniPC", "dpm++_2m": "DPM++ 2M", "dpm++_2m_karras": "DPM++ 2M Karras", "dpm++_sde": "DPM++ SDE",
    "dpm++_sde_karras": "DPM++ SDE Karras",
}


def sampler_name_of(scheduler: SchedulerMixin) -> str:
    """The WebUI name of a scheduler (the model's own one included), or its class name if it has none."""
    karras = bool(scheduler.config.get("use_karras_sigmas"))
    for name, (cls, overrides) in SAMPLERS.items():
        same_settings = all(scheduler.config.get(key) == value for key, value in overrides.items())
        if type(scheduler) is cls and same_settings and karras == overrides.get("use_karras_sigmas", False):
            return name
    return type(scheduler).__name__


def make_scheduler(name: str | None, model_scheduler: SchedulerMixin, seeds: Sequence[int] = ()) -> SchedulerMixin:
    """A fresh scheduler for one job: `name` from the table, or the model's own kind (None).

    The SDE samplers draw fresh noise at every step from a Brownian tree; seeded with the
    images' own seeds (one tree per image), the same seed gives the same picture, alone
    or in a grid, as with every other sampler."""
    cls, overrides = (type(model_scheduler), {}) if name is None else SAMPLERS[name]
    if issubclass(cls, DPMSolverSDEScheduler) and seeds:
        overrides = {**overrides, "noise_sampler_seed": list(seeds)}
    return cls.from_config(model_scheduler.config, **overrides)
