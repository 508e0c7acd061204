"""One engine on the built-in model for all engine tests (loading it once keeps the suite short)."""

from __future__ import annotations

import pytest
from helpers.catalogs import builtin_catalog

from generation.catalog import ModelCatalog, list_loras
from generation.prompt import GenerationRequest, parse_prompt
from generation.validation import validate_request


@pytest.fixture(scope="session")
def catalog() -> ModelCatalog:
    return builtin_catalog()


@pytest.fixture(scope="session")
def engine(catalog):
    from generation.engine import Engine

    return Engine(catalog)


@pytest.fixture(scope="session")
def request_for(catalog):
    """Parse and validate a prompt as the bot does: `request_for("a red circle --ar 16:9")`."""
    def make(text: str) -> GenerationRequest:
        (request,) = parse_prompt(text)
        return validate_request(request, catalog, available_loras=list_loras(catalog.lora_dir))
    return make
