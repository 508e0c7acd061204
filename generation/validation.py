"""Checks a parsed request against what this server can actually do.

The parser knows the language; this step knows the configuration: which versions,
niji options, styles, samplers and LoRAs exist. A parameter the language accepts but
the configured models cannot honour is refused here, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from rapidfuzz import fuzz, process

from .catalog import ModelCatalog
from .prompt import GenerationRequest, PromptError, shortened


def validate_request(request: GenerationRequest, catalog: ModelCatalog, *,
                     available_loras: Collection[str], attached_images: int = 0) -> GenerationRequest:
    """The request with its model resolved (`version`, or `niji` as a version string), or a `PromptError`."""
    params = request.params
    version = params.version
    if version is not None and version not in catalog.versions:
        raise PromptError(f"unknown version --v {shortened(version, 40)}: {_choices(version, catalog.versions)}")
    if params.niji is not None:
        if not catalog.niji:
            raise PromptError("--niji needs an anime model or LoRA, and this server has none configured")
        niji_version = catalog.niji_default if params.niji is True else str(params.niji)
        if niji_version not in catalog.niji:
            raise PromptError(f"unknown niji version --niji {shortened(str(params.niji), 40)}: "
                              f"{_choices(str(params.niji), catalog.niji)}")
    if params.style is not None and params.style != "raw" and params.style not in catalog.styles:
        raise PromptError(f"unknown style --style {shortened(params.style, 40)}: "
                          f"{_choices(params.style, ['raw', *catalog.styles])}")
    if params.sampler is not None and params.sampler not in catalog.samplers:
        raise PromptError(f"unknown sampler --sampler {shortened(params.sampler, 40)}: "
                          f"{_choices(params.sampler, catalog.samplers)}")
    for lora in request.loras:
        if lora.name not in available_loras:
            if not available_loras:
                raise PromptError(f"unknown LoRA `{shortened(lora.name, 40)}`: this server has no LoRAs installed")
            raise PromptError(f"unknown LoRA `{shortened(lora.name, 40)}`: {_choices(lora.name, available_loras)}")
    if not request.image_urls and not attached_images and params.image_weight != 1.0:
        raise PromptError("--iw sets how strongly image prompts steer, but this prompt has no image: "
                          "start the prompt with an image link or attach one")
    if params.niji is not None:
        params = replace(params, niji=niji_version)
    elif version is None:
        params = replace(params, version=catalog.default_version)
    return replace(request, params=params)


def _choices(given: str, options: Collection[str]) -> str:
    names = sorted(options)
    match = process.extractOne(given, names, scorer=fuzz.ratio, score_cutoff=60)
    hint = f"did you mean `{match[0]}`? " if match is not None else ""
    return f"{hint}available: {', '.join(names)}"
