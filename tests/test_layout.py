"""The seams between stages: no stage imports another, and shared contracts live in one place."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

from pipeline.cli import STAGES

PACKAGE = ROOT / "pipeline"


def stage_of(module: str) -> str | None:
    """The stage a ``pipeline.<name>...`` module belongs to, if any."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" and parts[1] in STAGES else None


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def test_no_stage_imports_another_stage():
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own = stage_of(module)
        for imported in imported_modules(path):
            other = stage_of(imported)
            if own and other and other != own:
                crossings.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not crossings


def test_shared_contracts_are_defined_once():
    sources = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
    for needle, home in [
        ('UNLABELLED = "unlabelled"', PACKAGE / "__init__.py"),
        ("class ShardRow", PACKAGE / "manifest.py"),
        ('"--direct_running_mode=', PACKAGE / "beam.py"),
        ('f"trailer_{trailer_id}.mp4"', PACKAGE / "config.py"),
    ]:
        assert [path for path, text in sources.items() if needle in text] == [home], needle
