"""Recipes: one TOML file holds every stage's options, one `[section]` per stage, overridable from the CLI.

A section fills a stage's config dataclass field by field; `--set key=value` (or `section.key=value`) overrides
single fields, parsed with the field's type. Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")


class RecipeError(ValueError):
    """A recipe or an override does not fit the stage's options."""


def load_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{path}: {error}") from None


def build_config(
    config_class: type[ConfigT],
    section: str,
    recipe: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> ConfigT:
    """`config_class` filled from `recipe[section]`, then from `key=value` overrides for that section."""
    values = dict((recipe or {}).get(section, {}))
    for override in overrides:
        key, value = _split_override(override)
        if "." in key:
            override_section, key = key.split(".", 1)
            if override_section != section:
                continue
        values[key] = value
    field_types = typing.get_type_hints(config_class)
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(f"[{section}] has no option {', '.join(unknown)}; options: {', '.join(sorted(known))}.")
    try:
        return config_class(**{key: _coerce(value, field_types[key], key) for key, value in values.items()})
    except (TypeError, ValueError) as error:
        raise RecipeError(f"[{section}]: {error}") from None


def _split_override(override: str) -> tuple[str, str]:
    key, separator, value = override.partition("=")
    if not separator or not key.strip():
        raise RecipeError(f"Override {override!r} is not of the form key=value.")
    return key.strip(), value.strip()


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Values from TOML keep their type; strings from the command line are parsed by the field's type."""
    if not isinstance(value, str):
        return value
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        if value.lower() in ("none", "null", ""):
            return None
        annotation = options[0]
    if annotation is bool:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise RecipeError(f"{key}={value!r} is not a boolean.")
    if annotation in (int, float):
        try:
            return annotation(value)
        except ValueError:
            raise RecipeError(f"{key}={value!r} is not a number.") from None
    if typing.get_origin(annotation) in (list, tuple):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = [part.strip() for part in value.split(",") if part.strip()]
        return list(parsed) if isinstance(parsed, list) else [parsed]
    return value
