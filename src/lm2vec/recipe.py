"""Recipes: one TOML file holds every stage's options, one `[section]` per stage, overridable from the CLI.

A section fills a stage's config dataclass field by field; `--set key=value` (or `section.key=value`) overrides
single fields, parsed with the field's type by `lm2vec.options.parse_value`, as CLI flags are. Unknown keys are
errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from lm2vec.errors import LM2VecError
from lm2vec.options import OptionValueError, parse_value

ConfigT = TypeVar("ConfigT")


class RecipeError(LM2VecError, ValueError):
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
    """`config_class` filled from `recipe[section]`, then from `key=value` overrides for that section.

    Every problem of the section (unknown keys, wrong types, values out of range) is reported in one RecipeError."""
    values = dict((recipe or {}).get(section, {}))
    for override in overrides:
        key, value = _split_override(override)
        if "." in key:
            override_section, key = key.split(".", 1)
            if override_section != section:
                continue
        values[key] = value
    known = {field.name for field in dataclasses.fields(config_class)}
    problems = []
    if unknown := sorted(set(values) - known):
        problems.append(f"has no option {', '.join(unknown)}; options: {', '.join(sorted(known))}.")
    coerced, refused = parse_values(config_class, values)
    problems += refused
    try:
        config = config_class(**coerced)  # the ranges of the well-typed values are checked even after a problem
    except ValueError as error:
        problems.append(str(error))
    except TypeError as error:  # a required field whose value was refused above is no news
        if not problems:
            problems.append(str(error))
    if problems:
        raise RecipeError(f"[{section}] " + " ".join(problems))
    return config


def parse_values(config_class: type, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The values of `config_class`'s fields among `values` parsed by their types (`--set` strings included), and
    the problems of those it refused; keys it has no field for are left out."""
    field_types = typing.get_type_hints(config_class)
    known = {field.name for field in dataclasses.fields(config_class)}
    parsed, problems = {}, []
    for key, value in values.items():
        if key in known:
            try:
                parsed[key] = parse_value(value, field_types[key], key)
            except OptionValueError as error:
                problems.append(str(error))
    return parsed, problems


def _split_override(override: str) -> tuple[str, str]:
    key, separator, value = override.partition("=")
    if not separator or not key.strip():
        raise RecipeError(f"Override {override!r} is not of the form key=value.")
    return key.strip(), value.strip()
