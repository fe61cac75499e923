"""Hard-negative mining: for each (query, positive) pair, the corpus texts the encoder ranks highest for the query
that are neither the positive nor so close to it that they are probably also relevant.

As in sentence-transformers' `mine_hard_negatives`, a candidate is kept only if its score is below the positive's
by `margin` (absolute) and below `(1 - relative_margin)` times it; texts equal to the query or the positive (after
case and whitespace folding) are never negatives. The output is the supervised stage's JSONL with `negatives`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lm2vec.artifacts import check_output_file, write_jsonl_atomic
from lm2vec.console import on_terminal
from lm2vec.data.formats import SupervisedPair, read_supervised_pairs
from lm2vec.data.readers import load_texts
from lm2vec.options import Options

if TYPE_CHECKING:  # the options import light, for the `lm2vec mine` command line
    import torch

    from lm2vec.modeling.encoder import LM2Vec


@dataclass
class MiningOptions(Options):
    num_negatives: int = field(default=3, metadata={"help": "negatives mined per pair"})
    margin: float = field(default=0.0, metadata={"help": "a negative scores at most positive - margin"})
    relative_margin: float = field(default=0.05, metadata={"help": "... and at most positive * (1 - relative_margin)"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass"})
    query_chunk: int = field(default=256, metadata={"help": "queries scored against the whole corpus at once"})

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (self.num_negatives >= 1, f"num_negatives must be at least 1, got {self.num_negatives}."),
            (0.0 <= self.relative_margin < 1.0, f"relative_margin must be in [0, 1), got {self.relative_margin}."),
            (self.margin >= 0, f"margin must be >= 0, got {self.margin}."),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}."),
            (self.query_chunk >= 1, f"query_chunk must be at least 1, got {self.query_chunk}."),
        ]


def fold(text: str) -> str:
    """Case and whitespace folded: texts that differ only so are duplicates."""
    return " ".join(text.lower().split())


def select_negatives(
    scores: np.ndarray, positive_scores: np.ndarray, excluded: Sequence[set[int]], options: MiningOptions
) -> list[list[int]]:
    """Per query (row of `scores` over the corpus), the highest-scoring corpus indices that are not excluded and
    score below the positive by both margins; fewer than `num_negatives` when too few qualify."""
    limits = np.minimum(positive_scores - options.margin, positive_scores * (1 - options.relative_margin))
    chosen = []
    for row, limit, skip in zip(scores, limits, excluded, strict=True):
        picked: list[int] = []
        for index in np.argsort(-row, kind="stable"):
            if row[index] > limit or int(index) in skip:
                continue
            picked.append(int(index))
            if len(picked) == options.num_negatives:
                break
        chosen.append(picked)
    return chosen


def encoded(encoder: LM2Vec, texts: Sequence[str | tuple[str, str]], batch_size: int) -> torch.Tensor:
    """The texts' L2-normalised embeddings (CPU). Under torchrun each process encodes an equal share and they
    exchange the vectors: N processes mine N times faster than each mining everything, and pick the same negatives."""
    import torch
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    # Mining a dump's pairs takes minutes to hours: a bar on the terminal (one, from the first process), none in logs.
    encode = dict(
        batch_size=batch_size, normalize=True, convert_to="torch", show_progress_bar=on_terminal() and not rank
    )
    if not distributed:
        return encoder.encode(list(texts), **encode)
    share = -(-len(texts) // world)
    own = encoder.encode(list(texts[rank * share : (rank + 1) * share]), **encode)
    # NCCL exchanges CUDA tensors only; equal shapes, so the last share is padded.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros(share, encoder.get_sentence_embedding_dimension(), device=device)
    padded[: len(own)] = own.to(device)
    shares = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shares, padded)
    return torch.cat(shares)[: len(texts)].cpu()


def mine_hard_negatives(
    encoder: LM2Vec, records: list[dict[str, Any]], corpus: Sequence[str], options: MiningOptions
) -> list[dict[str, Any]]:
    """The records with mined negatives appended to any they already had (queries carry their instruction)."""
    import torch

    queries = [(r["instruction"], r["query"]) if r["instruction"] else r["query"] for r in records]
    query_vectors = encoded(encoder, queries, options.batch_size)
    corpus_vectors = encoded(encoder, list(corpus), options.batch_size)
    # Positives found in the corpus (the supervised stage mines among the pairs' own positives) are not encoded twice.
    rows = {text: row for row, text in enumerate(corpus)}
    vectors = corpus_vectors
    if missing := list(dict.fromkeys(r["positive"] for r in records if r["positive"] not in rows)):
        rows |= {text: len(corpus) + row for row, text in enumerate(missing)}
        vectors = torch.cat([corpus_vectors, encoded(encoder, missing, options.batch_size)])
    positive_vectors = vectors[[rows[r["positive"]] for r in records]]
    positions: dict[str, set[int]] = {}
    for index, text in enumerate(corpus):
        positions.setdefault(fold(text), set()).add(index)
    mined = []
    for start in range(0, len(records), options.query_chunk):
        chunk = records[start : start + options.query_chunk]
        vectors = query_vectors[start : start + len(chunk)]
        scores = (vectors @ corpus_vectors.T).numpy()
        positive_scores = (vectors * positive_vectors[start : start + len(chunk)]).sum(-1).numpy()
        excluded = [
            positions.get(fold(r["positive"]), set())
            | positions.get(fold(r["query"]), set())
            | set().union(*(positions.get(fold(n), set()) for n in r["negatives"]))
            for r in chunk
        ]
        mined += select_negatives(scores, positive_scores, excluded, options)
    return [
        {**r, "negatives": [*r["negatives"], *(corpus[i] for i in found)]}
        for r, found in zip(records, mined, strict=True)
    ]


def read_mining_inputs(
    pairs: Path, output: Path, corpus: Path | None = None, overwrite: bool = False
) -> tuple[list[SupervisedPair], list[str]]:
    """The pairs and the corpus texts (by default the pairs' positives), read and checked, and `output` checked
    (`check_output_file`: an existing file only with `overwrite`): every mistake is found before a model loads."""
    for path in (pairs, corpus):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path} is not a file.")
    check_output_file(output, overwrite)
    records = read_supervised_pairs(pairs)
    positives = list(dict.fromkeys(record["positive"] for record in records))
    texts = load_texts(corpus, "sentences") if corpus is not None else positives
    return records, texts


def write_mined(
    encoder: LM2Vec, records: list[SupervisedPair], corpus: Sequence[str], output: Path, options: MiningOptions
) -> dict[str, int]:
    """Mine negatives for `records` from `corpus`, write `output` atomically; how many were found."""
    mined = mine_hard_negatives(encoder, records, corpus, options)
    write_jsonl_atomic(output, mined)
    added = [len(m["negatives"]) - len(r["negatives"]) for m, r in zip(mined, records, strict=True)]
    short = sum(count < options.num_negatives for count in added)
    return {"records": len(records), "corpus": len(corpus), "negatives": sum(added), "records_short": short}
