"""Errors the data pipeline reports to the user: each message names the file and, where known, the offset."""

from __future__ import annotations

from pathlib import Path

from lm2vec.errors import LM2VecError


class DataError(LM2VecError):
    """Bad input or a bad output directory; the CLI prints the message and exits non-zero."""


class UnknownLanguageError(DataError, ValueError):
    """`--lang` is not a language code that Wikipedia or ISO 639 knows."""


class DumpError(DataError):
    """The dump is unreadable: truncated, corrupt, malformed XML or not a MediaWiki dump at all."""


class OutputDirError(DataError):
    """The output directory already holds a run and neither resume nor overwrite was asked for."""


def require_file(path: Path, error: type[DataError] = DataError) -> None:
    """Raise `error` unless `path` is a readable file, saying whether it is missing or a folder."""
    if path.is_dir():
        raise error(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise error(f"{path}: no such file")
