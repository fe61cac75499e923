"""Errors the data pipeline reports to the user: each message names the file and, where known, the offset."""

from __future__ import annotations


class DataError(Exception):
    """Bad input or a bad output directory; the CLI prints the message and exits non-zero."""


class UnknownLanguageError(DataError, ValueError):
    """`--lang` is not a language code that Wikipedia or ISO 639 knows."""


class DumpError(DataError):
    """The dump is unreadable: truncated, corrupt, malformed XML or not a MediaWiki dump at all."""


class OutputDirError(DataError):
    """The output directory already holds a run and neither resume nor overwrite was asked for."""
