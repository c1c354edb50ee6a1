"""The package's layers (docs/architecture.md): contracts and infrastructure below, stages above,
the CLI on top. Imports only go down; no stage imports another; shared contracts live once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import ROOT

from pipeline.cli import STAGES

PACKAGE = ROOT / "pipeline"

SHARED = ("core", "infra", "model", "views")
"""The shared layers under ``pipeline/``; every other sub-package is a stage."""

MAY_IMPORT: dict[str, set[str]] = {
    "core": {"core"},
    "infra": {"core", "infra"},
    "model": {"core", "model"},
    "views": {"core", "views"},
    "cli": {"core", "infra"},
}
"""Which layers a layer's modules may import (``pipeline/__init__.py``'s constants: all)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """``pipeline.core.io`` -> ``core``; ``pipeline.train.run`` -> ``train``; the package's own
    ``__init__`` -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imported_modules(path: Path) -> set[str]:
    """The package's modules ``path`` imports, anywhere in the file (lazy imports count)."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            named |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    found = set()
    for name in named:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):  # the longest prefix that is one of our modules
            if ".".join(parts[:end]) in MODULES:
                found.add(".".join(parts[:end]))
                break
    return found


IMPORTS = {module: imported_modules(path) for module, path in MODULES.items()}


def test_every_stage_is_a_package_entered_by_run():
    for stage, spec in STAGES.items():
        assert spec.module == f"pipeline.{stage}.run", stage
        assert (PACKAGE / stage / "run.py").is_file(), stage
    loose = {path.stem for path in PACKAGE.glob("*.py")}
    assert loose == {"__init__", "cli"}, "a loose module at the top of pipeline/"
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == set(STAGES) | set(SHARED)


@pytest.mark.parametrize("layer", [*STAGES, *SHARED, "cli"])
def test_imports_only_go_down(layer: str):
    allowed = MAY_IMPORT.get(layer, {*SHARED, layer})  # a stage: the shared layers and itself
    crossings = [
        f"{module} imports {imported}"
        for module, imports in IMPORTS.items()
        if layer_of(module) == layer
        for imported in imports
        if layer_of(imported) is not None and layer_of(imported) not in allowed
    ]
    assert not crossings


def test_no_import_circle():
    def visit(module: str, trail: tuple[str, ...]) -> None:
        if module in trail:
            circle = trail[trail.index(module) :] + (module,)
            raise AssertionError(" -> ".join(circle))
        if module not in done:
            for imported in IMPORTS[module] - {module}:
                if not module.startswith(imported + "."):  # a package's own __init__
                    visit(imported, (*trail, module))
            done.add(module)

    done: set[str] = set()
    for module in MODULES:
        visit(module, ())


def test_one_tracking_module():
    assert sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("tracking.py")) == [
        Path("infra/tracking.py")
    ]


def test_only_the_model_card_names_the_model_folders_files():
    home = PACKAGE / "core" / "model_card.py"
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    for name in ("model.json", "model.keras"):
        naming = [path for path in sources if name in path.read_text()]
        assert naming == [home], name


def test_shared_contracts_are_defined_once():
    sources = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
    for needle, home in [
        ('UNLABELLED = "unlabelled"', PACKAGE / "__init__.py"),
        ("class ShardRow", PACKAGE / "core" / "manifest.py"),
        ("class ModelCard", PACKAGE / "core" / "model_card.py"),
        ("class DecodeSettings", PACKAGE / "core" / "model_card.py"),
        ("decoded at {row.fps} fps", PACKAGE / "core" / "model_card.py"),
        ('"--direct_running_mode=', PACKAGE / "infra" / "beam.py"),
        ('f"trailer_{trailer_id}.mp4"', PACKAGE / "core" / "config.py"),
    ]:
        assert [path for path, text in sources.items() if needle in text] == [home], needle
