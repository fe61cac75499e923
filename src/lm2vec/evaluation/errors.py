"""Errors for bad evaluation data: each names the file and, where there is one, the line."""

from __future__ import annotations

from lm2vec.data.errors import DataError
from lm2vec.errors import LM2VecError

# Evaluation data that cannot be used (a missing file, a malformed line, an empty task ...) is reported with the
# error of lm2vec.data, whose readers read every data file evaluation uses.
EvalDataError = DataError


class EvalConfigError(LM2VecError, ValueError):
    """A task registry, model spec or run manifest that cannot be understood."""
