"""The dependency rules of DESIGN.md, checked on the source: a pure core, and two sides that never meet."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IO_MODULES = {
    "asyncio",
    "socket",
    "aiohttp",
    "websockets",
    "sqlite3",
    "asyncpg",
    "redis",
    "time",
    "threading",
    "uvloop",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", _sources("marketdata"), ids=lambda p: str(p.relative_to(REPO)))
def test_marketdata_is_pure(path: Path) -> None:
    imported = _imports(path)
    assert not imported & IO_MODULES, f"{path.name} imports I/O or clock modules: {imported & IO_MODULES}"
    assert not imported & {"bluefin_service", "bot"}, f"{path.name} imports an outer package"


@pytest.mark.parametrize("path", _sources("bot"), ids=lambda p: str(p.relative_to(REPO)))
def test_bot_never_imports_the_service(path: Path) -> None:
    assert "bluefin_service" not in _imports(path)


@pytest.mark.parametrize("path", _sources("bluefin_service"), ids=lambda p: str(p.relative_to(REPO)))
def test_service_never_imports_the_bot(path: Path) -> None:
    assert "bot" not in _imports(path)
