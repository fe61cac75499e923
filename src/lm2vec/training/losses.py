"""Contrastive losses: InfoNCE over cosine similarities with in-batch (and cross-process) negatives, and CoSENT
over graded pairs.

Under `torchrun`/`accelerate launch` each process holds a slice of the global batch. The documents of every
process are gathered so that each query sees all of them as negatives; the gather is differentiable in full
(its backward all-reduces the gradient and keeps each process's own slice), and each process averages the
loss over its own queries. With DDP averaging the parameter gradients, loss and gradients equal those of one
process holding the whole global batch (tests/test_contrastive_distributed.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lm2vec.modeling.matryoshka import supported_dimensions


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather rows of different counts per process; backward sums every process's gradient for the local rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        count = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        counts = [int(c.item()) for c in counts]
        longest = max(counts)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        parts[rank] = tensor  # the local rows exactly as computed
        ctx.counts, ctx.rank = counts, rank
        return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.counts[: ctx.rank])
        return grad[start : start + ctx.counts[ctx.rank]]


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows, in rank order, and the offset of this process's rows; a no-op in one process."""
    if not distributed():
        return tensor, 0
    gathered = _GatherWithGrad.apply(tensor)
    counts = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device))
    return gathered, int(sum(int(c.item()) for c in counts[: dist.get_rank()]))


def info_nce(
    queries: torch.Tensor, documents: torch.Tensor, positives: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """Cross-entropy over cosine similarities / temperature; `positives[i]` is the index of query i's document.
    Every other document (other queries' positives, hard negatives) is a negative."""
    scores = F.normalize(queries.float(), dim=-1) @ F.normalize(documents.float(), dim=-1).T
    return F.cross_entropy(scores / temperature, positives)


def cosent(
    queries: torch.Tensor, documents: torch.Tensor, scores: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """CoSENT (Su 2022): log(1 + sum over pairs i, j with scores[i] > scores[j] of exp((cos_j - cos_i) / t)), where
    cos_i is the cosine of queries[i] and documents[i]: the pairs' cosines are pushed into their scores' order.
    Unlike a regression on the scores it needs no scale, and unlike InfoNCE it learns from low-scored pairs too."""
    cosines = F.cosine_similarity(queries.float(), documents.float(), dim=-1) / temperature
    above = scores[:, None] > scores[None, :]  # [i, j]: pair i should score above pair j
    differences = (cosines[None, :] - cosines[:, None])[above]
    return torch.logsumexp(torch.cat([differences.new_zeros(1), differences]), dim=0)


def contrastive_loss(
    queries: torch.Tensor,
    documents: torch.Tensor,
    temperature: float = 0.05,
    gather: bool = True,
    matryoshka_dims: Sequence[int] = (),
    query_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE for a batch laid out as documents = [positive of query 0..n-1, then any hard negatives].

    With `gather` (and more than one process) the documents of all processes are the candidates. With
    `matryoshka_dims` the loss is summed over the full vectors and their prefixes of those sizes (each
    renormalised by the cosine), so the prefixes are embeddings of their own. With `query_mask` only the queries
    it marks are trained (their document is a positive); the others' documents are still candidates. A batch
    with no such query has a loss of zero (with a graph, so every process runs the same backward)."""
    n = queries.shape[0]
    positives = torch.arange(n, device=queries.device)
    if gather and distributed():
        documents, offset = gather_with_grad(documents)
        positives = positives + offset
    if query_mask is not None:
        if not bool(query_mask.any()):
            return (queries.sum() + documents.sum()) * 0.0
        queries, positives = queries[query_mask], positives[query_mask]
    dims = supported_dimensions(matryoshka_dims, queries.shape[-1])
    return sum(info_nce(queries[:, :d], documents[:, :d], positives, temperature) for d in dims)
