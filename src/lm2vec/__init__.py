"""lm2vec: turn any decoder-only LLM into a bidirectional text encoder (the LLM2Vec recipe)."""

from lm2vec.modeling import EncoderConfig, LM2Vec

__all__ = ["EncoderConfig", "LM2Vec"]
__version__ = "0.1.0"
