"""lm2vec: turn any decoder-only LLM into a bidirectional text encoder (the LLM2Vec recipe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lm2vec.errors import LM2VecError

__version__ = "0.1.0"
__all__ = ["EncoderConfig", "LM2Vec", "LM2VecError"]
_LAZY = ("EncoderConfig", "LM2Vec")

if TYPE_CHECKING:
    from lm2vec.modeling import EncoderConfig, LM2Vec


def __getattr__(name: str):
    # Lazy, so that `lm2vec data ...` and its worker processes do not pay for importing torch and transformers.
    if name in _LAZY:
        import lm2vec.modeling

        return getattr(lm2vec.modeling, name)
    raise AttributeError(f"module 'lm2vec' has no attribute {name!r}")
