"""The options of the contrastive stages: `ContrastiveOptions` (both), `SimCSEOptions`, `SupervisedOptions`."""

from __future__ import annotations

from dataclasses import dataclass, field

from lm2vec.modeling.pooling import POOLING_MODES
from lm2vec.recipe import failed_checks
from lm2vec.training.common import TrainingOptions

POSITIVES = ("dropout", "crops")


@dataclass
class ContrastiveOptions(TrainingOptions):
    """Options of both contrastive modes (on top of the shared `TrainingOptions`)."""

    model: str = "pkg:smollm2"  # base model: folder, hub id, .gguf or pkg: alias
    adapters: list[str] = field(default_factory=list)  # merged before training: the MNTP adapter
    data: str = ""
    pooling: str = "mean"
    max_length: int = 128
    temperature: float = 0.05  # scale 20
    # Attention dropout set on the backbone for training (SDPA and eager apply it in train mode only).
    dropout: float = 0.0
    # Rows (texts, both sides together) per forward pass, sorted by length; 0 = the whole batch in one pass.
    mini_batch_size: int = 0
    # GradCache: embed the mini-batches without a graph, then re-run them one at a time for the backward pass.
    cached: bool = False
    # Gather embeddings across processes so every query sees every process's documents as negatives.
    gather_across_processes: bool = True
    # Write `encoder/` (merged weights, loadable everywhere) at the end; a pipeline exports only its last stage.
    export: bool = True
    # Matryoshka: the loss is also summed over the embeddings' prefixes of these sizes, so they can be cut to them.
    matryoshka_dims: list[int] = field(default_factory=list)

    def problems(self) -> list[str]:
        checks = [
            (self.temperature > 0, f"temperature must be positive, got {self.temperature}."),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}."),
            (self.mini_batch_size >= 0, f"mini_batch_size must be >= 0, got {self.mini_batch_size}."),
            (
                not self.cached or self.mini_batch_size != 0,
                "cached=True needs mini_batch_size > 0 (the rows embedded per pass).",
            ),
            (self.max_length >= 1, f"max_length must be at least 1, got {self.max_length}."),
            (
                all(d >= 1 for d in self.matryoshka_dims),
                f"matryoshka_dims must be positive, got {self.matryoshka_dims}.",
            ),
            (
                self.pooling in POOLING_MODES,
                f"pooling must be one of {', '.join(POOLING_MODES)}, got {self.pooling!r}.",
            ),
        ]
        return super().problems() + failed_checks(checks)


@dataclass
class SimCSEOptions(ContrastiveOptions):
    """Unsupervised SimCSE, paper settings: batch 128, lr 3e-5, 1000 steps, attention dropout 0.3."""

    output_dir: str = "runs/simcse"
    per_device_batch_size: int = 128
    learning_rate: float = 3e-5
    dropout: float = 0.3
    text_field: str = "text"  # the .jsonl field holding the sentence
    # "dropout": a sentence and itself, differing only by dropout (SimCSE). "crops": two random spans of one
    # paragraph (Contriever's independent cropping), a harder task that keeps teaching after dropout's saturates.
    positives: str = "dropout"
    crop_ratio: list[float] = field(default_factory=lambda: [0.1, 0.5])  # a crop's share of the paragraph's words

    def problems(self) -> list[str]:
        low, high = (self.crop_ratio + [0.0, 0.0])[:2]
        checks = [
            (self.positives in POSITIVES, f"positives must be one of {', '.join(POSITIVES)}, got {self.positives!r}."),
            (len(self.crop_ratio) == 2 and 0 < low <= high <= 1,
             f"crop_ratio must be [low, high] with 0 < low <= high <= 1, got {self.crop_ratio}."),
        ]  # fmt: skip
        return super().problems() + failed_checks(checks)


@dataclass
class SupervisedOptions(ContrastiveOptions):
    """Supervised contrastive training, paper settings: batch 512 (use cached), lr 2e-4, warmup 300, 1000 steps."""

    output_dir: str = "runs/supervised"
    per_device_batch_size: int = 64
    learning_rate: float = 2e-4
    warmup_steps: int = 300
    max_length: int = 512
    num_hard_negatives: int = 1  # hard negatives per query, the first ones of its `negatives` list
    symmetric_datasets: list[str] = field(default_factory=list)  # instruction on documents too
    # `data` may also be a sentence-similarity file (STS Benchmark .csv, .tsv; see lm2vec.readers.read_sts):
    # its pairs scored at least `min_pair_score` become symmetric (query, positive) pairs with `sts_instruction`.
    min_pair_score: float = 4.0
    sts_instruction: str = "Retrieve semantically similar text"
    # Batches from one dataset at a time (paper); False mixes all datasets.
    homogeneous_batches: bool = True
    # Before training, mine this many hard negatives per pair with the encoder training starts from (base model +
    # `adapters`), among the positives of all pairs (lm2vec.training.mining; 0 = none). They follow any
    # negatives the records had; `num_hard_negatives` of them go into each batch. Kept in OUTPUT/mined.jsonl.
    mine_negatives: int = 0
    mining_relative_margin: float = 0.05  # a mined negative scores at most the positive's score x (1 - this)

    def problems(self) -> list[str]:
        checks = [
            (self.mine_negatives >= 0, f"mine_negatives must be >= 0, got {self.mine_negatives}."),
            (0.0 <= self.mining_relative_margin < 1.0,
             f"mining_relative_margin must be in [0, 1), got {self.mining_relative_margin}."),
        ]  # fmt: skip
        return super().problems() + failed_checks(checks)
