"""How far the int8 ONNX file may stray from fp32 (`lm2vec.modeling.onnx.quantize_within_tolerance`); apart from
lm2vec.modeling.onnx so that the command line and the export stage's options name it without importing torch."""

from lm2vec.errors import LM2VecError

# The int8 graph's text vectors (means of the token states) on the calibration texts must keep this mean cosine to the
# fp32 graph's; where they do not, the lowest layers stay fp32.
INT8_MIN_COSINE = 0.99
INT8_MIN_COSINE_HELP = (
    "the int8 ONNX file's text vectors must keep this mean cosine to fp32's on 64 calibration sentences, else its "
    "lowest layers stay fp32 (at most half); 0 makes every layer int8, unchecked"
)


def valid_int8_min_cosine(value: float) -> bool:
    return 0.0 <= value <= 1.0


def int8_min_cosine_message(value: float) -> str:
    return f"int8_min_cosine must be in [0, 1], got {value}."


class Int8ToleranceError(LM2VecError, ValueError):
    """An int8_min_cosine outside [0, 1]."""


def check_int8_min_cosine(value: float) -> None:
    if not valid_int8_min_cosine(value):
        raise Int8ToleranceError(int8_min_cosine_message(value))
