"""Pooling token states into one vector, vectorised, for left or right padding.

`pool_mask` marks the tokens that may be pooled: real text tokens, neither padding nor instruction. Weighted
mean follows sentence-transformers: position weights count from the first non-padding token, so instruction
tokens are attended to and counted, but carry no weight.
"""

from __future__ import annotations

from typing import Literal

import torch

PoolingMode = Literal["mean", "weighted_mean", "last_token", "first_token"]
POOLING_MODES: tuple[str, ...] = ("mean", "weighted_mean", "last_token", "first_token")
# sentence-transformers' names for the same modes, used on export.
SENTENCE_TRANSFORMERS_MODES = {
    "mean": "mean",
    "weighted_mean": "weightedmean",
    "last_token": "lasttoken",
    "first_token": "cls",
}


def check_pooling_mode(mode: str) -> None:
    if mode not in POOLING_MODES:
        raise ValueError(f"Unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}.")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool `hidden` (batch, seq, dim) over the positions where `pool_mask` is set."""
    check_pooling_mode(mode)
    pool_mask = pool_mask.to(torch.bool) & attention_mask.to(torch.bool)
    if mode in ("last_token", "first_token"):
        positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(pool_mask)
        if mode == "last_token":
            index = torch.where(pool_mask, positions, -1).max(dim=1).values
        else:
            index = torch.where(pool_mask, positions, hidden.shape[1]).min(dim=1).values
        index = index.clamp(0, hidden.shape[1] - 1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    weights = pool_mask.to(torch.float32)
    if mode == "weighted_mean":
        weights = weights * attention_mask.to(torch.float32).cumsum(dim=1)
    summed = torch.einsum("bsd,bs->bd", hidden.float(), weights)
    return (summed / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)).to(hidden.dtype)
