"""Vectorised pooling against a plain per-row reference, for left and right padding."""

from __future__ import annotations

import pytest
import torch

from lm2vec.modeling.pooling import POOLING_MODES, pool


def reference_pool(hidden: torch.Tensor, attention: torch.Tensor, pooled: torch.Tensor, mode: str) -> torch.Tensor:
    rows = []
    for h, a, p in zip(hidden, attention.bool(), pooled.bool(), strict=True):
        positions = [i for i in range(len(h)) if a[i] and p[i]]
        if mode == "mean":
            rows.append(h[positions].mean(dim=0))
        elif mode == "weighted_mean":
            first_real = int(a.nonzero()[0])
            weights = torch.tensor([i - first_real + 1 for i in positions], dtype=h.dtype)
            rows.append((h[positions] * weights[:, None]).sum(dim=0) / weights.sum())
        elif mode == "last_token":
            rows.append(h[positions[-1]])
        else:
            rows.append(h[positions[0]])
    return torch.stack(rows)


def padded_batch(side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four rows of lengths 5, 3, 1 and 4 with 0, 2, 0 and 1 instruction tokens, padded on `side` to 6."""
    lengths, instructions = [5, 3, 1, 4], [0, 2, 0, 1]
    hidden = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0))
    attention = torch.zeros(4, 6, dtype=torch.long)
    pooled = torch.zeros(4, 6, dtype=torch.bool)
    for row, (n, k) in enumerate(zip(lengths, instructions, strict=True)):
        start = 0 if side == "right" else 6 - n
        attention[row, start : start + n] = 1
        pooled[row, start + k : start + n] = True
    return hidden, attention, pooled


@pytest.mark.parametrize("mode", POOLING_MODES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_matches_reference(mode: str, side: str) -> None:
    hidden, attention, pooled = padded_batch(side)
    torch.testing.assert_close(pool(hidden, attention, pooled, mode), reference_pool(hidden, attention, pooled, mode))


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_left_and_right_padding_agree(mode: str) -> None:
    right_hidden, right_attention, right_pooled = padded_batch("right")
    left_hidden, left_attention, left_pooled = padded_batch("left")
    # Move each row's real tokens to the same places the left-padded batch has them.
    for row in range(4):
        n = int(right_attention[row].sum())
        left_hidden[row, 6 - n :] = right_hidden[row, :n]
    torch.testing.assert_close(
        pool(right_hidden, right_attention, right_pooled, mode), pool(left_hidden, left_attention, left_pooled, mode)
    )


def test_padding_and_instruction_values_do_not_leak() -> None:
    hidden, attention, pooled = padded_batch("right")
    poisoned = hidden.clone()
    poisoned[~(attention.bool() & pooled)] = 1e6
    for mode in POOLING_MODES:
        torch.testing.assert_close(pool(poisoned, attention, pooled, mode), pool(hidden, attention, pooled, mode))


def test_unknown_mode_is_refused() -> None:
    hidden, attention, pooled = padded_batch("right")
    with pytest.raises(ValueError, match="Unknown pooling mode 'max'"):
        pool(hidden, attention, pooled, "max")
