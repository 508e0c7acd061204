"""Catalogs for tests: what config.toml would give."""

from __future__ import annotations

from generation.catalog import ModelCatalog, ModelVersion, NijiOption, StyleOption


def builtin_catalog(**versions: ModelVersion) -> ModelCatalog:
    """config.toml's defaults: the built-in model, niji as a LoRA, a pixel style."""
    from generation.builtin import LORA_DIR

    return ModelCatalog(
        versions={"builtin": ModelVersion("builtin", "builtin"), **versions},
        default_version="builtin",
        lora_dir=LORA_DIR,
        niji={"6": NijiOption("6", lora="niji")},
        niji_default="6",
        styles={"pixel": StyleOption("pixel", lora="pixel")},
    )
