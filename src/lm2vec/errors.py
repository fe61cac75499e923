"""The one base class of lm2vec's own errors."""

from __future__ import annotations


class LM2VecError(Exception):
    """The base of every error the CLI reports as `error: ...` with exit 2: a problem the user can fix (a bad
    recipe, input file, model source, output folder ...), worded for the user.

    Each family keeps its builtin base as well (`RecipeError` is still a `ValueError`, `ModelSourceError` an
    `OSError` ...), so code that catches the builtin keeps working; `except LM2VecError` catches them all."""


__all__ = ["LM2VecError"]
