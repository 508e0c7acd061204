"""A parsed request checked against what the server has configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from generation.catalog import ModelCatalog, ModelVersion, NijiOption, StyleOption, list_loras
from generation.prompt import PromptError, parse_prompt
from generation.validation import validate_request


@pytest.fixture
def catalog(tmp_path: Path) -> ModelCatalog:
    return ModelCatalog(
        versions={"builtin": ModelVersion("builtin", "builtin"), "6": ModelVersion("6", "/models/six")},
        default_version="builtin",
        lora_dir=tmp_path,
        niji={"6": NijiOption("6", lora="niji")},
        niji_default="6",
        styles={"pixel": StyleOption("pixel", lora="pixel")},
        samplers=("euler", "euler_a", "dpm++_2m_karras"),
    )


def check(prompt: str, catalog: ModelCatalog, loras=("niji", "pixel"), images: int = 0):
    (request,) = parse_prompt(prompt)
    return validate_request(request, catalog, available_loras=loras, attached_images=images)


def check_error(prompt: str, catalog: ModelCatalog, **kwargs) -> str:
    with pytest.raises(PromptError) as caught:
        check(prompt, catalog, **kwargs)
    return str(caught.value)


def test_the_default_version_is_resolved(catalog):
    assert check("a cat", catalog).params.version == "builtin"
    assert check("a cat --v 6", catalog).params.version == "6"


def test_niji_resolves_to_its_configured_version(catalog):
    request = check("a cat --niji", catalog)
    assert request.params.niji == "6" and request.params.version is None
    assert check("a cat --niji 6", catalog).params.niji == "6"


@pytest.mark.parametrize(("prompt", "message"), [
    ("a cat --v 7", "unknown version --v 7: available: 6, builtin"),
    ("a cat --v biltin", "unknown version --v biltin: did you mean `builtin`? available: 6, builtin"),
    ("a cat --niji 5", "unknown niji version --niji 5: available: 6"),
    ("a cat --style pixl", "unknown style --style pixl: did you mean `pixel`? available: pixel, raw"),
    ("a cat --sampler heun", "unknown sampler --sampler heun: available: dpm++_2m_karras, euler, euler_a"),
    ("a cat <lora:pixl:1>", "unknown LoRA `pixl`: did you mean `pixel`? available: niji, pixel"),
    ("a cat --iw 2", "--iw sets how strongly image prompts steer, but this prompt has no image: "
                     "start the prompt with an image link or attach one"),
])
def test_what_the_server_cannot_honour_is_refused(prompt, message, catalog):
    assert check_error(prompt, catalog) == message


def test_iw_with_an_attachment_is_fine(catalog):
    assert check("a cat --iw 2", catalog, images=1).params.image_weight == 2


def test_raw_style_is_always_known(catalog):
    assert check("a cat --style raw", catalog).params.style == "raw"


def test_niji_without_a_niji_model(catalog, tmp_path):
    bare = ModelCatalog(versions=catalog.versions, default_version="builtin", lora_dir=tmp_path)
    assert check_error("a cat --niji", bare) == (
        "--niji needs an anime model or LoRA, and this server has none configured")


def test_no_loras_installed(catalog):
    assert check_error("a cat <lora:pixel>", catalog, loras=()) == (
        "unknown LoRA `pixel`: this server has no LoRAs installed")


def test_loras_are_listed_from_the_folder(tmp_path):
    (tmp_path / "b.safetensors").write_bytes(b"")
    (tmp_path / "a.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a LoRA")
    assert list_loras(tmp_path) == ["a", "b"]
    assert list_loras(tmp_path / "missing") == []


def test_a_catalog_with_a_missing_default_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="default_version 'sdxl' is not one of the versions"):
        ModelCatalog(versions={"builtin": ModelVersion("builtin", "builtin")}, default_version="sdxl",
                     lora_dir=tmp_path)
