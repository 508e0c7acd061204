"""The rooms of docs/architecture.md: which package may import which, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # package -> what its modules must never import
    "bot": ("cogs",),
    "cogs": ("web",),
    "generation": ("discord", "storage", "bot", "cogs", "web"),
    "storage": ("discord", "torch", "bot", "cogs", "web", "generation.engine"),
    "web": ("discord", "cogs", "torch", "diffusers", "generation.engine"),
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted(path for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_its_room_allows(package):
    broken = {f"{path.relative_to(ROOT)} imports {name}" for path in modules(package) for name in imports_of(path)
              for forbidden in FORBIDDEN[package] if name == forbidden or name.startswith(forbidden + ".")}
    assert not broken, sorted(broken)


def test_no_cog_imports_another_cog_and_cogs_utils_imports_none():
    broken = []
    for path in modules("cogs"):
        own = f"cogs.{path.stem}"
        for name in imports_of(path):
            if name.startswith("cogs.") and not name.startswith("cogs.utils") and name != own:
                broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not broken, broken
