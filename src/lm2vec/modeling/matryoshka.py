"""Matryoshka embeddings: a model trained with the loss on prefixes of its vectors can be cut to those sizes.

A prefix is only meaningful at the sizes the model was trained for, so `check_dimensions` accepts exactly those
(and the full size); cut vectors are renormalised, as the OpenAI API's `dimensions` returns them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def supported_dimensions(matryoshka_dims: Sequence[int], full: int) -> list[int]:
    return sorted({*matryoshka_dims, full})


def check_dimensions(dimensions: int, matryoshka_dims: Sequence[int], full: int) -> None:
    supported = supported_dimensions(matryoshka_dims, full)
    if dimensions not in supported:
        trained = (
            "was trained for " + ", ".join(map(str, supported)) if matryoshka_dims else "has no Matryoshka training"
        )
        raise ValueError(f"dimensions={dimensions} is not supported: this model gives {full} dimensions and {trained}.")


def truncate(vectors: torch.Tensor | np.ndarray, dimensions: int) -> torch.Tensor | np.ndarray:
    """The first `dimensions` components of each row, L2-normalised again."""
    if isinstance(vectors, np.ndarray):
        return truncate(torch.from_numpy(vectors), dimensions).numpy()
    return F.normalize(vectors[..., :dimensions].float(), dim=-1)
