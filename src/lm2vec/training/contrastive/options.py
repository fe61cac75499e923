"""The options of the contrastive stages: `ContrastiveOptions` (both), `SimCSEOptions`, `SupervisedOptions`."""

from __future__ import annotations

from dataclasses import dataclass, field

from lm2vec.modeling.pooling import POOLING_MODES
from lm2vec.training.options import STREAM_WINDOW_HELP, STREAMING_HELP, TrainingOptions

POSITIVES = ("dropout", "crops")
MINING_POOLS = ("source", "drawn")


@dataclass
class ContrastiveOptions(TrainingOptions):
    """Options of both contrastive modes (on top of the shared `TrainingOptions`)."""

    model: str = field(default="pkg:smollm2", metadata={"help": "base model: folder, hub id, .gguf or pkg: alias"})
    adapters: list[str] = field(default_factory=list, metadata={"help": "merged before training: the MNTP adapter"})
    data: str = field(
        default="",
        metadata={
            "help": (
                "training data; for simcse sentences (a corpus folder, .txt, .jsonl), for supervised (query, "
                "positive) records"
            )
        },
    )
    pooling: str = field(default="mean", metadata={"help": "mean, weighted_mean, last_token or first_token"})
    max_length: int = field(default=128, metadata={"help": "longest input in tokens; longer texts are truncated"})
    temperature: float = field(
        default=0.05,
        metadata={"help": "softmax temperature of the contrastive loss (0.05: scale 20)"},
    )
    dropout: float = field(
        default=0.0,
        metadata={
            "help": "Attention dropout set on the backbone for training (SDPA and eager apply it in train mode only)."
        },
    )
    mini_batch_size: int = field(
        default=0,
        metadata={
            "help": (
                "Rows (texts, both sides together) per forward pass, sorted by length; 0 = the whole batch in one pass."
            )
        },
    )
    cached: bool = field(
        default=False,
        metadata={
            "help": (
                "GradCache: embed the mini-batches without a graph, then re-run them one at a time for the "
                "backward pass."
            )
        },
    )
    gather_across_processes: bool = field(
        default=True,
        metadata={
            "help": "Gather embeddings across processes so every query sees every process's documents as negatives."
        },
    )
    export: bool = field(
        default=True,
        metadata={
            "help": (
                "Write `encoder/` (merged weights, loadable everywhere) at the end; a pipeline exports only its "
                "last stage."
            )
        },
    )
    matryoshka_dims: list[int] = field(
        default_factory=list,
        metadata={
            "help": (
                "Matryoshka: the loss is also summed over the embeddings' prefixes of these sizes, so they can be "
                "cut to them."
            )
        },
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
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


@dataclass
class SimCSEOptions(ContrastiveOptions):
    """Unsupervised SimCSE, paper settings: batch 128, lr 3e-5, 1000 steps, attention dropout 0.3."""

    output_dir: str = "runs/simcse"
    per_device_batch_size: int = 128
    learning_rate: float = 3e-5
    dropout: float = 0.3
    text_field: str = field(default="text", metadata={"help": "the .jsonl field holding the sentence"})
    positives: str = field(
        default="dropout",
        metadata={
            "help": (
                '"dropout": a sentence and itself, differing only by dropout (SimCSE). "crops": two random spans '
                "of one paragraph (Contriever's independent cropping), a harder task that keeps teaching after "
                "dropout's saturates; `data`'s paragraphs as MNTP reads them (a .txt file's blocks between blank "
                "lines)."
            )
        },
    )
    streaming: bool = field(default=False, metadata={"help": STREAMING_HELP})
    stream_window_rows: int = field(default=50_000, metadata={"help": STREAM_WINDOW_HELP})
    crop_ratio: list[float] = field(
        default_factory=lambda: [0.1, 0.5],
        metadata={"help": "a crop's share of the paragraph's words (the query's, when positive_crop_ratio is set)"},
    )
    positive_crop_ratio: list[float] = field(
        default_factory=list,
        metadata={
            "help": (
                "the positive crop's share, when it differs from the query's: a short query and a long positive "
                "(e.g. [0.05, 0.25] and [0.5, 1.0]) look like a search; empty: crop_ratio"
            )
        },
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (self.stream_window_rows >= 1, f"stream_window_rows must be at least 1, got {self.stream_window_rows}."),
            (self.positives in POSITIVES, f"positives must be one of {', '.join(POSITIVES)}, got {self.positives!r}."),
            (
                _is_ratio(self.crop_ratio),
                f"crop_ratio must be [low, high] with 0 < low <= high <= 1, got {self.crop_ratio}.",
            ),
            (
                not self.positive_crop_ratio or _is_ratio(self.positive_crop_ratio),
                f"positive_crop_ratio must be empty or [low, high] with 0 < low <= high <= 1, got "
                f"{self.positive_crop_ratio}.",
            ),
        ]


def _is_ratio(bounds: list[float]) -> bool:
    return len(bounds) == 2 and 0 < bounds[0] <= bounds[1] <= 1


@dataclass
class SupervisedOptions(ContrastiveOptions):
    """Supervised contrastive training, paper settings: batch 512 (use cached), lr 2e-4, warmup 300, 1000 steps."""

    output_dir: str = "runs/supervised"
    per_device_batch_size: int = 64
    learning_rate: float = 2e-4
    warmup_steps: int = 300
    max_length: int = 512
    data: str | list[str] = field(
        default="",
        metadata={
            "help": (
                "(query, positive) records: a JSONL file, a sentence-similarity file (.csv, .tsv; see "
                "`min_pair_score`) or a corpus folder of `lm2vec data wiki` (its weak pairs; in a recipe `${data}`, "
                "the run's data stage output), or a list of them: a mixture, each path's datasets kept apart"
            )
        },
    )
    max_pairs_per_dataset: int = field(
        default=0,
        metadata={
            "help": (
                "keep at most this many records of each dataset of each `data` path, a seeded sample in file order "
                "(so a dump's many pairs do not drown a small set); 0 = all"
            )
        },
    )
    num_hard_negatives: int = field(
        default=1,
        metadata={"help": "hard negatives per query, the first ones of its `negatives` list"},
    )
    symmetric_datasets: list[str] = field(default_factory=list, metadata={"help": "instruction on documents too"})
    min_pair_score: float = field(
        default=4.0,
        metadata={
            "help": (
                "`data` may also be a sentence-similarity file (STS Benchmark .csv, .tsv; see "
                "lm2vec.data.formats): its pairs scored at least `min_pair_score` become symmetric (query, "
                "positive) pairs with `sts_instruction`."
            )
        },
    )
    sts_instruction: str = field(
        default="Retrieve semantically similar text",
        metadata={"help": "the instruction of the pairs read from a sentence-similarity `data` file"},
    )
    cosent_weight: float = field(
        default=0.0,
        metadata={
            "help": (
                "Weight of a CoSENT loss (Su 2022) added to InfoNCE: it ranks the cosines of a batch's scored pairs "
                "in the order of their scores. A sentence-similarity `data` file then gives every pair with its "
                "score (those under `min_pair_score` only as CoSENT pairs); JSONL records may carry a `score`. 0: off."
            )
        },
    )
    homogeneous_batches: bool = field(
        default=True,
        metadata={"help": "Batches from one dataset at a time (paper); False mixes all datasets."},
    )
    mine_negatives: int = field(
        default=0,
        metadata={
            "help": (
                "Before training, mine this many hard negatives per pair with the encoder training starts from "
                "(base model + `adapters`), among the positives of `mining_pool` (lm2vec.training.mining; 0 = none), "
                "for the pairs that the `max_steps` batches hold. "
                "They follow any negatives the records had; `num_hard_negatives` of them go into each batch. Kept "
                "in OUTPUT/mined.jsonl."
            )
        },
    )
    mining_relative_margin: float = field(
        default=0.05,
        metadata={"help": "a mined negative scores at most the positive's score x (1 - this)"},
    )
    mining_pool: str = field(
        default="source",
        metadata={
            "help": (
                "where a pair's negatives are mined: 'source', among the positives of every pair of its data file; "
                "'drawn', among those of the pairs the run's batches hold from that file (a pass over fewer texts "
                "when the batches draw a small part of the data)"
            )
        },
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (
                isinstance(self.data, str) or all(isinstance(path, str) and path for path in self.data),
                f"data must be a path or a list of paths, got {self.data!r}.",
            ),
            (self.max_pairs_per_dataset >= 0, f"max_pairs_per_dataset must be >= 0, got {self.max_pairs_per_dataset}."),
            (self.mine_negatives >= 0, f"mine_negatives must be >= 0, got {self.mine_negatives}."),
            (self.cosent_weight >= 0, f"cosent_weight must be >= 0, got {self.cosent_weight}."),
            (
                0.0 <= self.mining_relative_margin < 1.0,
                f"mining_relative_margin must be in [0, 1), got {self.mining_relative_margin}.",
            ),
            (
                self.mining_pool in MINING_POOLS,
                f"mining_pool must be one of {', '.join(MINING_POOLS)}, got {self.mining_pool!r}.",
            ),
        ]
