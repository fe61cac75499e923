"""Models: loading a decoder bidirectionally, pooling, encoding, export.

The names below are imported on first use, so that a light submodule (`lm2vec.modeling.pruning`, which the CLI
imports for its help text) does not make `lm2vec data ...` import torch and transformers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lm2vec.modeling.bidirectional import StillCausalError, UnsupportedArchitectureError
    from lm2vec.modeling.config import EncoderConfig
    from lm2vec.modeling.encoder import LM2Vec
    from lm2vec.modeling.sources import ModelSourceError

_HOMES = {
    "EncoderConfig": "config",
    "LM2Vec": "encoder",
    "ModelSourceError": "sources",
    "StillCausalError": "bidirectional",
    "UnsupportedArchitectureError": "bidirectional",
}
__all__ = ["EncoderConfig", "LM2Vec", "ModelSourceError", "StillCausalError", "UnsupportedArchitectureError"]


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"lm2vec.modeling.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'lm2vec.modeling' has no attribute {name!r}")
