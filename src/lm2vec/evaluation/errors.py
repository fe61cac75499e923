"""Errors for bad evaluation data: each names the file and, where there is one, the line."""

from __future__ import annotations

from pathlib import Path

from lm2vec.errors import LM2VecError


class EvalDataError(LM2VecError, ValueError):
    """Evaluation data that cannot be used: a missing file, a malformed line, an empty task ..."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.line = line
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class EvalConfigError(LM2VecError, ValueError):
    """A task registry, model spec or run manifest that cannot be understood."""
