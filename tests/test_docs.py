"""The manual (``mkdocs.yml``, ``docs/``): it builds strictly, its configuration reference lists
exactly the keys the loader accepts, each with a description, and the command examples it marks
as checked print what the commands print today."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from mkdocs.commands.build import build
from mkdocs.config import load_config as load_mkdocs_config

import pipeline.cli
import pipeline.views.summary
from pipeline.core.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCREENSHOT = DOCS / "images" / "docs-home.png"
"""The manual's home page as the test browser shows it, pictured in the manual itself."""
CHECKED = re.compile(r"<!-- checked:[^>]*-->\n```console\n(.*?)```", re.S)
# argparse wraps --help to the terminal's width: the pages show it at this one.
HELP_COLUMNS = "100"
# The commands a checked example may run, in-process: help and config errors come before any
# stage import, and the summary reads the committed metrics.
COMMANDS = {
    "trailers": pipeline.cli.main,
    "python -m pipeline.views.summary": pipeline.views.summary.main,
}


def _reference():
    """docs/hooks/config_reference.py, the MkDocs hook that writes the reference page."""
    spec = importlib.util.spec_from_file_location(
        "config_reference", DOCS / "hooks" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclass looks its module up there
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def _yaml_keys(node: dict, prefix: str = "", leaves: frozenset[str] = frozenset()) -> set[str]:
    """The dotted keys a config file sets (an empty mapping, ``runner_options: {}``, is one, and
    so is a mapping that is one key's value, one of ``leaves``)."""
    keys = set()
    for name, value in node.items():
        if isinstance(value, dict) and value and f"{prefix}{name}" not in leaves:
            keys |= _yaml_keys(value, f"{prefix}{name}.", leaves)
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_manual_builds_strictly_and_its_home_renders(tmp_path, monkeypatch, caplog, browser):
    """What ``make docs-build`` runs: a broken link or anchor, a page missing from the nav or a
    nav entry without its page, a snippet whose file is gone each fail the build. The home page
    then renders in the test browser with its navigation; with ``TRAILERS_SCREENSHOTS=1``
    (``make screenshots``) it is saved as the manual's picture of itself."""
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    # Strict mode counts the warnings MkDocs logs: they must get through whatever level the
    # process's logging was left at.
    caplog.set_level(logging.WARNING, logger="mkdocs")
    config = load_mkdocs_config(
        config_file=str(ROOT / "mkdocs.yml"), strict=True, site_dir=str(tmp_path / "site")
    )
    build(config)
    page = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "decode.max_failed_fraction" in page
    home = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        home.goto((tmp_path / "site" / "index.html").as_uri())
        navigation = home.get_by_role("navigation", name="Navigation")
        for title in ("Getting started", "Bring your own trailers", "Decode", "Predict"):
            assert navigation.get_by_role("link", name=title, exact=True).count() >= 1, title
        shot = SCREENSHOT if os.environ.get("TRAILERS_SCREENSHOTS") == "1" else tmp_path / "h.png"
        home.screenshot(path=shot)
    finally:
        home.close()


def test_reference_lists_every_key_load_config_accepts(tmp_path):
    reference = {key.dotted: key for key in _reference().all_keys()}

    for config_file in ("configs/pipeline.yaml", "configs/smoke.yaml"):
        shipped = _yaml_keys(
            yaml.safe_load((ROOT / config_file).read_text()), leaves=frozenset(reference)
        )
        assert shipped <= set(reference), f"{config_file}: not in the reference"
    assert set(reference) >= _yaml_keys(
        Config().model_dump(by_alias=True), leaves=frozenset(reference)
    )
    # The loader accepts every listed key, and the listed default is the schema's own.
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    overrides = [f"{name}={key.default.strip('`')}" for name, key in reference.items()]
    assert load_config(empty, overrides) == Config()


def test_every_key_has_a_description():
    """A key merged without ``Field(description=...)`` would show an empty cell in the manual."""
    missing = [key.dotted for key in _reference().all_keys() if not key.help]
    assert not missing, f"give these keys a description in pipeline/core/config.py: {missing}"


def _examples() -> list:
    """(page, command, what it prints) of every checked ``console`` block in the manual."""
    examples = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for block in CHECKED.findall(page.read_text()):
            for example in re.split(r"^(?=\$ )", block, flags=re.M):
                if example:
                    command, _, output = example.partition("\n")
                    where = str(page.relative_to(DOCS if page.parent != ROOT else ROOT))
                    examples.append(
                        pytest.param(where, command[2:], output, id=f"{where}: {command[2:]}")
                    )
    return examples


def test_the_manual_has_checked_examples():
    pages = {example.values[0] for example in _examples()}
    stages = {f"stages/{stage}.md" for stage in pipeline.cli.STAGES}
    assert stages | {"configuration.md", "getting-started.md", "README.md"} <= pages


@pytest.mark.parametrize(("page", "command", "output"), _examples())
def test_checked_example_prints_what_the_page_shows(page, command, output, capsys, monkeypatch):
    program = next((name for name in COMMANDS if command.startswith(f"{name} ")), None)
    assert program, f"{page}: {command!r} is none of the commands checked here: {list(COMMANDS)}"
    argv = shlex.split(command.removeprefix(program))
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", HELP_COLUMNS)
    monkeypatch.setattr(pipeline.cli, "configure", lambda verbosity: None)
    with contextlib.suppress(SystemExit):  # --help
        COMMANDS[program](argv)
    printed = capsys.readouterr()
    assert printed.out + printed.err == output, f"{page}: {command}"
