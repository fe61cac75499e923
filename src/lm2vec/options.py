"""What each option of an options dataclass is, for `--help`: its name, type, default and help.

The help is a field's `metadata["help"]` (`field(default=..., metadata={"help": "..."})`), else the comment on
its line or the comment lines just above it in the class's source."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import textwrap
import tokenize
import typing
from typing import Any


@dataclasses.dataclass
class OptionDoc:
    name: str
    type: str
    default: str
    help: str


def describe(options_class: type) -> list[OptionDoc]:
    """One OptionDoc per field of the dataclass `options_class`, in field order."""
    comments: dict[str, str] = {}
    for klass in reversed(options_class.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_field_comments(klass))
    hints = typing.get_type_hints(options_class)
    docs = []
    for field in dataclasses.fields(options_class):
        if field.default is not dataclasses.MISSING:
            default = _toml(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = _toml(field.default_factory())
        else:
            default = "required"
        help_text = field.metadata.get("help") or comments.get(field.name, "")
        docs.append(OptionDoc(field.name, _type_name(hints.get(field.name, Any)), default, help_text))
    return docs


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _toml(value: Any) -> str:
    return "none" if value is None else json.dumps(value)


def _field_comments(klass: type) -> dict[str, str]:
    """{field: its comment} from the source of `klass`: the comment on the field's line, after the comment lines
    right above it."""
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):
        return {}
    fields = set(getattr(klass, "__annotations__", {}))
    comments: dict[int, str] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                text = token.string.lstrip("#").strip()
                if not text.startswith(("fmt:", "noqa", "type:")):
                    comments[token.start[0]] = text
    except (tokenize.TokenError, SyntaxError):
        return {}
    result: dict[str, str] = {}
    block: list[str] = []
    for row, line in enumerate(source.splitlines(), start=1):
        if line.strip().startswith("#"):
            if row in comments:
                block.append(comments[row])
            continue
        match = re.match(r"    (\w+)\s*:", line)
        if match and match.group(1) in fields:
            parts = [*block, *([comments[row]] if row in comments else [])]
            if parts:
                result[match.group(1)] = " ".join(parts)
        block = []
    return result


def options_help(options_class: type, section: str, owned: typing.Collection[str] = ()) -> str:
    """Paragraphs for a command's epilog: each option with its type, default and help."""
    lines = [f"Options ({options_class.__name__}), set with --set {section}.KEY=VALUE or a recipe's [{section}]:"]
    for doc in describe(options_class):
        head = f"{doc.name} ({doc.type}, default {doc.default})"
        detail = " ".join(
            part for part in (doc.help, "With --recipe the run sets it." if doc.name in owned else "") if part
        )
        lines.append(f"{head}: {detail}" if detail else head)
    return "\n\n".join(lines)
