"""The contrastive model pieces: attention dropout, the training embedding, sub-batches and the (GradCache) loss."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from lm2vec.modeling.encoder import LM2Vec
from lm2vec.modeling.matryoshka import supported_dimensions
from lm2vec.modeling.pooling import pool
from lm2vec.training.contrastive.options import ContrastiveOptions
from lm2vec.training.lora import recomputing_norm_outputs
from lm2vec.training.losses import contrastive_loss, cosent


def set_attention_dropout(backbone: nn.Module, p: float) -> float:
    """Set the attention dropout of every attention module (the float `attention_dropout` that SDPA and eager
    attention read in train mode) and of the config; returns the config's previous value."""
    config = backbone.config
    previous = float(getattr(config, "attention_dropout", 0.0) or 0.0)
    if hasattr(config, "attention_dropout"):
        config.attention_dropout = p
    found = False
    for module in backbone.modules():
        if isinstance(getattr(module, "attention_dropout", None), float | int) and not isinstance(
            module.attention_dropout, bool
        ):
            module.attention_dropout = p
            found = True
    if not found and p > 0:
        raise ValueError(f"{type(backbone).__name__} has no attention module with an `attention_dropout` to set.")
    return previous


def embed(encoder: LM2Vec, backbone: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """`LM2Vec.forward`'s sentence embedding, run through `backbone` (the LoRA-wrapped, possibly DDP-wrapped
    training model): the same call and the same `pool` with the encoder's pooling config."""
    with recomputing_norm_outputs():  # norm outputs kept by add_lora's fused layers are recomputed, not stored
        hidden = backbone(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).last_hidden_state
    return pool(hidden, features["attention_mask"], features["pool_mask"], encoder.config.pooling)


def mini_batches(features: dict[str, torch.Tensor], size: int) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Split a collated batch into length-sorted sub-batches, each trimmed to its own longest row.

    Returns (row indices, sub-batch) pairs; with size 0 one sub-batch holds every row in order."""
    rows = features["input_ids"].shape[0]
    keys = ("input_ids", "attention_mask", "pool_mask")
    if size <= 0 or size >= rows:
        return [(torch.arange(rows), {k: features[k] for k in keys})]
    lengths = features["attention_mask"].sum(1).cpu()
    order = torch.argsort(lengths, descending=True, stable=True)
    result = []
    for start in range(0, rows, size):
        index = order[start : start + size]
        longest = int(lengths[index].max())
        device_index = index.to(features["input_ids"].device)
        result.append((index, {k: features[k][device_index, :longest] for k in keys}))
    return result


class RandomState:
    """The CPU (and current CUDA device's) random state, to replay dropout exactly when a sub-batch is re-run."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


def _no_sync(model: nn.Module, sync: bool):
    return model.no_sync() if not sync and hasattr(model, "no_sync") else nullcontext()


def batch_loss(
    encoder: LM2Vec, backbone: nn.Module, features: dict[str, torch.Tensor], options: ContrastiveOptions
) -> torch.Tensor:
    """The contrastive loss of one collated batch; with `options.cached` the returned loss is detached from the
    model and back-propagates through it (sub-batch by sub-batch) when `.backward()` reaches it."""
    n = int(features["n_queries"])
    parts = mini_batches(features, options.mini_batch_size)
    rows = features["input_ids"].shape[0]

    def assemble(embeddings: list[torch.Tensor]) -> torch.Tensor:
        out = embeddings[0].new_empty((rows, embeddings[0].shape[-1]))
        for (index, _), part in zip(parts, embeddings, strict=True):
            out = out.index_put((index.to(out.device),), part)
        return out

    positive_queries = features.get("positive_queries")
    if positive_queries is not None and bool(positive_queries.all()):
        positive_queries = None
    cosent_weight = getattr(options, "cosent_weight", 0.0) if "scores" in features else 0.0

    def loss_of(all_rows: torch.Tensor) -> torch.Tensor:
        queries, documents = all_rows[:n], all_rows[n:]
        loss = contrastive_loss(
            queries,
            documents,
            options.temperature,
            options.gather_across_processes,
            options.matryoshka_dims,
            positive_queries,
        )
        if cosent_weight:
            scored = ~torch.isnan(features["scores"]).to(queries.device)
            scores = features["scores"].to(queries.device)[scored]
            for d in supported_dimensions(options.matryoshka_dims, queries.shape[-1]):
                pairs = queries[scored, :d], documents[:n][scored, :d]
                loss = loss + cosent_weight * cosent(*pairs, scores, options.temperature)
        return loss

    if not options.cached or not torch.is_grad_enabled():
        return loss_of(assemble([embed(encoder, backbone, part) for _, part in parts]))

    states, cached = [], []
    with torch.no_grad():
        for _, part in parts:
            states.append(RandomState())
            cached.append(embed(encoder, backbone, part))
    after = RandomState()
    reps = assemble(cached).detach().requires_grad_()
    with torch.enable_grad():
        loss = loss_of(reps)
        loss.backward()
    gradients = reps.grad
    loss = loss.detach().requires_grad_()

    def backward_hook(grad_output: torch.Tensor) -> None:
        with torch.enable_grad():
            for number, ((index, part), state) in enumerate(zip(parts, states, strict=True)):
                state.restore()
                with _no_sync(backbone, sync=number == len(parts) - 1):
                    embedding = embed(encoder, backbone, part)
                    grad = gradients[index.to(gradients.device)].to(embedding.dtype)
                    surrogate = (embedding * grad).sum() * grad_output.to(embedding.dtype)
                    surrogate.backward()
        after.restore()

    loss.register_hook(backward_hook)
    return loss
