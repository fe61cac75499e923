"""lm2vec's one options system: an options dataclass declares each option once, with
`field(default=..., metadata={"help": "..."})`, and the rest comes from it (as peft's config dataclasses and
transformers' HfArgumentParser do):

- a recipe section's keys and checks: the dataclass itself, a subclass of `Options` (its `checks()`; building one
  with values out of range raises one OptionValueError naming them all);
- `describe()` and `options_help()`: each option's name, type, default and help, for `--help` epilogs;
- `typer_options()`: a command's CLI options, one per field (`--max-articles` for `max_articles`), the
  dataclass built from the parsed values;
- `parse_value()`: the one conversion of a value (a TOML value, a `--set` string, a CLI flag's strings) to a field's
  type, used by recipes (`lm2vec.recipe.build_config`) and CLI options alike.

Our own dataclasses rather than pydantic or HfArgumentParser: they are what peft's and transformers' configs are, and
recipes, `--set` and CLI flags all need the same few conversions, written once here.

A subclass that only changes a field's default keeps the help of the class it inherits the field from."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Collection
from typing import Annotated, Any

from lm2vec.errors import LM2VecError


class OptionValueError(LM2VecError, ValueError):
    """A value that does not fit its option's type or range; the message names the option and the value."""


class Options:
    """The base of every options dataclass: `checks()` lists (passed, message) pairs, a subclass adding its own
    (`return [*super().checks(), ...]`); building one raises one OptionValueError naming every failed check, so a
    recipe's mistakes are reported together, not one per run. Write a check so that NaN fails it (`0 <= x < 1`).

    Not a dataclass itself, so that plain and frozen dataclasses alike inherit its `__post_init__`."""

    def checks(self) -> list[tuple[bool, str]]:
        return []

    def __post_init__(self) -> None:
        if failed := [message for passed, message in self.checks() if not passed]:
            raise OptionValueError(" ".join(failed))


@dataclasses.dataclass
class OptionDoc:
    name: str
    type: str
    default: str
    help: str


def field_help(options_class: type, name: str) -> str:
    """The help of field `name`: its `metadata["help"]`, else that of the nearest base class declaring it."""
    for klass in options_class.__mro__:
        declared = vars(klass).get("__dataclass_fields__", {})
        if name in declared and declared[name].metadata.get("help"):
            return declared[name].metadata["help"]
    return ""


def describe(options_class: type) -> list[OptionDoc]:
    """One OptionDoc per field of the dataclass `options_class`, in field order."""
    hints = typing.get_type_hints(options_class)
    docs = []
    for field in dataclasses.fields(options_class):
        default = _default(field)
        shown = "required" if default is dataclasses.MISSING else _toml(default)
        docs.append(OptionDoc(field.name, _type_name(hints[field.name]), shown, field_help(options_class, field.name)))
    return docs


def options_help(options_class: type, section: str, owned: Collection[str] = ()) -> str:
    """Paragraphs for a command's epilog: each option with its type, default and help."""
    lines = [f"Options ({options_class.__name__}), set with --set {section}.KEY=VALUE or a recipe's [{section}]:"]
    for doc in describe(options_class):
        head = f"{doc.name} ({doc.type}, default {doc.default})"
        detail = "; ".join(
            part for part in (doc.help, "with --recipe the run sets it" if doc.name in owned else "") if part
        )
        lines.append(f"{head}: {detail}" if detail else head)
    return "\n\n".join(lines)


# --- CLI options from a dataclass ---------------------------------------------------------------------------------
def typer_options(**groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator giving a typer command one CLI option per field of each options dataclass in `groups`
    (parameter name -> class), built from the fields: `--kebab-name`, the field's type and default, its help;
    a bool is `--x/--no-x`, a list a repeatable option whose values may also be comma-separated, `X | None` may
    be left out. The command is called with each parameter set to its dataclass, built from the parsed values;
    a value the dataclass refuses (its `checks()`) is `error: MESSAGE`, exit status 2.

        @app.command()
        @typer_options(config=WikiConfig)
        def wiki(dump: Path, config: WikiConfig) -> None: ..."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        owners: dict[str, str] = {}
        parameters: list[inspect.Parameter] = []
        for name, parameter in signature.parameters.items():
            if name not in groups:
                annotation = parameter.annotation
                if isinstance(annotation, str):  # `from __future__ import annotations`
                    annotation = eval(annotation, command.__globals__)  # noqa: S307 - the command's own annotation
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
                continue
            for field in dataclasses.fields(groups[name]):
                if field.name in owners or field.name in signature.parameters:
                    raise TypeError(f"{command.__name__}: option {field.name!r} is declared twice")
                owners[field.name] = name
                parameters.append(_parameter(groups[name], field))
        if missing := set(groups) - set(signature.parameters):
            raise TypeError(f"{command.__name__} has no parameter {', '.join(sorted(missing))}")

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            from lm2vec.console import user_errors

            fields: dict[str, dict[str, Any]] = {group: {} for group in groups}
            for name, group in owners.items():
                fields[group][name] = values.pop(name)
            with user_errors(ValueError):
                built = {
                    group: groups[group](**_converted(groups[group], settings)) for group, settings in fields.items()
                }
            return command(**values, **built)

        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


def _parameter(options_class: type, field: dataclasses.Field) -> inspect.Parameter:
    import typer

    annotation = typing.get_type_hints(options_class)[field.name]
    base, optional = _unwrap_optional(annotation)
    default = _default(field)
    help_text = field_help(options_class, field.name)
    flag = "--" + field.name.replace("_", "-")
    envvar = field.metadata.get("envvar")  # a secret (an API key) is better kept out of the process list
    if typing.get_origin(base) is list:
        # Repeatable; each value may hold several, comma-separated: converted to the item type afterwards.
        annotation = list[str] | None
        option = typer.Option(flag, help=help_text, envvar=envvar, show_default=_toml(default) if default else False)
        default = None
    elif base is bool:
        option = typer.Option(f"{flag}/--no-{field.name.replace('_', '-')}", help=help_text, envvar=envvar)
    else:
        option = typer.Option(flag, help=help_text, envvar=envvar)
        annotation = base | None if optional else base
    empty = inspect.Parameter.empty
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[annotation, option],
        default=empty if default is dataclasses.MISSING else default,
    )


def _converted(options_class: type, settings: dict[str, Any]) -> dict[str, Any]:
    """List options from their strings (None: not given, the field's default) to the field's type."""
    hints = typing.get_type_hints(options_class)
    result = {}
    for name, value in settings.items():
        if typing.get_origin(_unwrap_optional(hints[name])[0]) is list:
            if value is None:
                continue
            value = parse_value(",".join(value), hints[name], "--" + name.replace("_", "-"))
        result[name] = value
    return result


def parse_value(value: Any, annotation: Any, name: str) -> Any:
    """`value` as the type `annotation`: a TOML value is checked against it, a string (`--set`, a CLI flag) is
    parsed by it first (true/false, numbers, a JSON list or comma-separated items). OptionValueError otherwise."""
    base, optional = _unwrap_optional(annotation)
    if optional and isinstance(value, str) and value.lower() in ("none", "null", ""):
        return None
    if typing.get_origin(base) in (typing.Union, types.UnionType):  # `str | list[str]`: one path or several
        many = [arg for arg in typing.get_args(base) if typing.get_origin(arg) in (list, tuple)]
        (one,) = [arg for arg in typing.get_args(base) if arg not in many]
        if many and (isinstance(value, list) or isinstance(value, str) and value.startswith("[")):
            return parse_value(value, many[0], name)
        return parse_value(value, one, name)
    if isinstance(value, str) and base is not str:
        value = _parse_string(value, base, name)
    if typing.get_origin(base) in (list, tuple):
        (item_type,) = typing.get_args(base)[:1] or (Any,)
        if not isinstance(value, list):
            raise OptionValueError(f"{name}={value!r} is not a list of {getattr(item_type, '__name__', 'values')}.")
        return [parse_value(item, item_type, name) for item in value] if item_type is not Any else value
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(base)
    if expected is not None and (not isinstance(value, expected) or isinstance(value, bool) and base is not bool):
        kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[base]
        raise OptionValueError(f"{name}={value!r} is not {kind}.")
    return float(value) if base is float else value


def _parse_string(value: str, annotation: Any, name: str) -> Any:
    if annotation is bool:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise OptionValueError(f"{name}={value!r} is not a boolean.")
    if annotation in (int, float):
        try:
            return annotation(value)
        except ValueError:
            kind = "an integer" if annotation is int else "a number"
            raise OptionValueError(f"{name}={value!r} is not {kind}.") from None
    if typing.get_origin(annotation) in (list, tuple):
        if not value.startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise OptionValueError(f"{name}={value!r} is not a JSON list ({error.msg}).") from None
    return value


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None`, else (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return annotation, False


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _toml(value: Any) -> str:
    return "none" if value is None else json.dumps(value)
