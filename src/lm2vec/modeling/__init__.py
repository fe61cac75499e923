from lm2vec.modeling.bidirectional import StillCausalError, UnsupportedArchitectureError
from lm2vec.modeling.config import EncoderConfig
from lm2vec.modeling.encoder import LM2Vec
from lm2vec.modeling.sources import ModelSourceError

__all__ = ["EncoderConfig", "LM2Vec", "ModelSourceError", "StillCausalError", "UnsupportedArchitectureError"]
