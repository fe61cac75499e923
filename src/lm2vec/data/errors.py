"""The one error of lm2vec's inputs and of the data pipeline: its message names the file and, where known, the line
or offset."""

from __future__ import annotations

from pathlib import Path

from lm2vec.errors import LM2VecError


class DataError(LM2VecError, ValueError):
    """Input that cannot be used (a missing file, a malformed line, an empty file ...) or a bad output directory; the
    CLI prints the message and exits 2. With `path` (and `line`) the message starts with `PATH:` (`PATH:LINE:`)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.line = line
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class UnknownLanguageError(DataError):
    """`--lang` is not a language code that Wikipedia or ISO 639 knows."""


class DumpError(DataError):
    """The dump is unreadable: truncated, corrupt, malformed XML or not a MediaWiki dump at all."""


class OutputDirError(DataError):
    """The output directory already holds a run and neither resume nor overwrite was asked for."""


def require_file(path: str | Path, error: type[DataError] = DataError) -> Path:
    """`path` if it is a file; else `error` saying whether it is missing, a folder or something else."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "not a file" if path.exists() else "file not found"
        raise error(problem, path)
    return path
