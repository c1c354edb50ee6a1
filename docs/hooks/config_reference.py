"""The configuration reference, ``reference/config.md``, written from the schema at build time.

An MkDocs hook (``mkdocs.yml``: ``hooks``): it walks the pydantic models of
``pipeline/core/config.py`` (every section, nested ones included), so a key added there appears
here with its type, default, allowed range and description, and the page cannot disagree with
what ``load_config`` checks. ``tests/test_docs.py`` compares the keys it lists with the loader's.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipeline.core.config import Config

PAGE = "reference/config.md"
_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length >="),
)


@dataclass(frozen=True)
class Key:
    """One config key as the reference lists it."""

    dotted: str
    type: str
    default: str
    range: str
    help: str | None


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"[{', '.join(_type_name(a) for a in args)}]"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"


def _range(field: FieldInfo) -> str:
    return ", ".join(
        f"{symbol} {getattr(bound, attr)}"
        for bound in field.metadata
        for kind, attr, symbol in _BOUNDS
        if isinstance(bound, kind)
    )


def _sections(
    model: type[BaseModel] = Config, prefix: str = ""
) -> Iterator[tuple[str, type[BaseModel]]]:
    """Each section's dotted name and model, a section before the sections nested in it."""
    yield prefix, model
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            yield from _sections(field.annotation, f"{prefix}{field.alias or name}.")


def keys(model: type[BaseModel], prefix: str) -> list[Key]:
    """The keys of one section (``prefix`` its dotted name and a dot), nested sections left out."""
    return [
        Key(
            f"{prefix}{field.alias or name}",
            _type_name(field.annotation),
            _default(field),
            _range(field),
            field.description,
        )
        for name, field in model.model_fields.items()
        if not _is_section(field.annotation)
    ]


def all_keys() -> list[Key]:
    """Every key of every section, in the schema's order."""
    return [key for prefix, model in _sections() for key in keys(model, prefix)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole page, in Markdown."""
    lines = [
        "# Configuration reference",
        "",
        "Every key a config file (`configs/pipeline.yaml`, `configs/smoke.yaml`, or your own) may",
        "hold, written from the schema in `pipeline/core/config.py` each time the manual is built:",
        "`load_config` accepts exactly these. A key left out takes its default; any other key, a",
        "value of another type or out of range stops a stage with one line naming the file and",
        "the key (see [Configuration](../configuration.md)). Override one on the command line",
        "with `--set section.key=value`.",
    ]
    for prefix, model in _sections():
        title = prefix.rstrip(".") or "top level"
        lines += ["", f"## `{title}`" if prefix else "## Top level", ""]
        if prefix and model.__doc__:
            paragraphs = inspect.cleandoc(model.__doc__).replace("``", "`").split("\n\n")
            for paragraph in paragraphs:
                lines += [" ".join(paragraph.split()), ""]
        lines += [
            "| key | type | default | range | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| `{key.dotted}` | {_cell(key.type)} | {_cell(key.default)} | {_cell(key.range)} "
            f"| {_cell(key.help or '')} |"
            for key in keys(model, prefix)
        ]
        nested = [
            f"{prefix}{field.alias or name}"
            for name, field in model.model_fields.items()
            if _is_section(field.annotation)
        ]
        if nested and prefix:
            links = (f"[`{name}`](#{name.replace('.', '')})" for name in nested)
            lines += ["", "Nested: " + ", ".join(links) + "."]
    return "\n".join(lines) + "\n"


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
