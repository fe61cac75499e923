"""Errors for bad evaluation data: each names the file and, where there is one, the line."""

from __future__ import annotations

from lm2vec.errors import LM2VecError
from lm2vec.readers import DataFileError

# Evaluation data that cannot be used (a missing file, a malformed line, an empty task ...) is reported with the
# error of lm2vec.readers, which reads the data files evaluation shares with training (STS pairs).
EvalDataError = DataFileError


class EvalConfigError(LM2VecError, ValueError):
    """A task registry, model spec or run manifest that cannot be understood."""
