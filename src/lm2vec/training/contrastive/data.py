"""Contrastive training data: the records, their batches (one dataset per global batch) and collation."""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from lm2vec.artifacts import write_jsonl_atomic
from lm2vec.data.corpus import corpus_files, is_corpus
from lm2vec.data.errors import DataError
from lm2vec.data.formats import SupervisedPair, read_supervised_pairs, sts_supervised_pairs
from lm2vec.data.readers import STREAM_COUNTS, ShuffledWindows, parquet_row_groups
from lm2vec.data.shards import PAIRS
from lm2vec.modeling.encoder import LM2Vec
from lm2vec.training.contrastive.options import SimCSEOptions, SupervisedOptions
from lm2vec.training.results import record_in_training_folder, training_record

logger = logging.getLogger(__name__)

MINED_NAME = "mined.jsonl"  # the supervised records with their mined hard negatives
MIN_CROP_WORDS = 8  # shorter paragraphs give crops of a word or two


class ListDataset(Dataset):
    def __init__(self, items: Sequence[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


class GroupedBatchSampler(Sampler[list[int]]):
    """Per-device batches such that the `world_size` consecutive batches of one global step come from the same
    group (dataset). Accelerate hands process r the r-th of each run of `world_size` batches. Incomplete global
    batches are dropped, so every process always holds the same number of rows."""

    def __init__(self, groups: Sequence[Sequence[int]], batch_size: int, world_size: int = 1, seed: int = 0):
        self.groups = [list(g) for g in groups]
        self.batch_size, self.world_size, self.seed = batch_size, world_size, seed
        self.epoch = 0
        if len(self) == 0:
            sizes = ", ".join(str(len(g)) for g in self.groups)
            raise ValueError(f"No group (sizes {sizes}) fills one global batch of {batch_size * world_size} rows.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        step = self.batch_size * self.world_size
        return sum(len(g) // step for g in self.groups) * self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches(self.epoch):
            for rank in range(self.world_size):
                yield batch[rank * self.batch_size : (rank + 1) * self.batch_size]

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of one epoch, in training order."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        step = self.batch_size * self.world_size
        batches = []
        for group in self.groups:
            order = group[:]
            rng.shuffle(order)
            batches += [order[i : i + step] for i in range(0, len(order) - step + 1, step)]
        rng.shuffle(batches)
        return batches

    def records_drawn(self, global_batches: int) -> list[int]:
        """The records that the first `global_batches` global batches hold (sorted); every record when they are
        more than one epoch's (the Trainer starts at epoch 0)."""
        batches = self.global_batches(0)
        if global_batches >= len(batches):
            return sorted(index for group in self.groups for index in group)
        return sorted(index for batch in batches[:global_batches] for index in batch)


@dataclass
class ContrastiveCollator:
    """Records -> one collated batch: rows [queries, their positives, hard negatives] and `n_queries`.

    SimCSE records are strings (a sentence is its own positive); supervised records are dicts. A dict record
    with a `score` also gives `scores` (NaN for those without) and `positive_queries`: the records whose positive
    is one (no score, or one of at least `min_positive_score`)."""

    encoder: LM2Vec
    num_hard_negatives: int = 1
    symmetric_datasets: Sequence[str] = ()
    min_positive_score: float = 4.0

    def __call__(self, records: Sequence[Any]) -> dict[str, torch.Tensor]:
        if isinstance(records[0], str):
            tokenized = self.encoder.tokenize(list(records))
            rows = tokenized + tokenized
        else:
            queries, documents, negatives = [], [], []
            for record in records:
                instruction = record.get("instruction") or ""
                symmetric = record.get("symmetric") or record.get("dataset") in self.symmetric_datasets
                queries.append(_with_instruction(record["query"], instruction))
                documents.append(_with_instruction(record["positive"], instruction if symmetric else ""))
                for negative in (record.get("negatives") or [])[: self.num_hard_negatives]:
                    negatives.append(_with_instruction(negative, instruction if symmetric else ""))
            rows = self.encoder.tokenize(queries + documents + negatives)
        features = self.encoder.collate(rows)
        features["n_queries"] = torch.tensor(len(records))
        if not isinstance(records[0], str) and any("score" in record for record in records):
            scores = torch.tensor([record.get("score", math.nan) for record in records], dtype=torch.float32)
            features["scores"] = scores
            features["positive_queries"] = torch.isnan(scores) | (scores >= self.min_positive_score)
        return features


def _with_instruction(text: str, instruction: str) -> str | tuple[str, str]:
    return (instruction, text) if instruction else text


def crop_pairs(
    paragraphs: Sequence[str], ratio: Sequence[float], seed: int = 0, positive_ratio: Sequence[float] | None = None
) -> list[dict[str, str]]:
    """Two independent random word spans of each paragraph as a (query, positive) pair, the query `ratio` (low,
    high) of its words and the positive `positive_ratio` (default: `ratio`), drawn once with `seed` so a resumed
    run sees the same pairs."""
    pairs = _crops(paragraphs, ratio, seed, positive_ratio)
    if not pairs:
        raise ValueError(f"No paragraph has the {MIN_CROP_WORDS} words two crops need.")
    return pairs


def _crops(
    paragraphs: Sequence[str], ratio: Sequence[float], seed: int, positive_ratio: Sequence[float] | None
) -> list[dict[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for paragraph in paragraphs:
        words = paragraph.split()
        if len(words) < MIN_CROP_WORDS:
            continue
        spans = []
        for share in (ratio, positive_ratio or ratio):
            length = max(1, round(rng.uniform(*share) * len(words)))
            start = rng.randrange(len(words) - length + 1)
            spans.append(" ".join(words[start : start + length]))
        pairs.append({"query": spans[0], "positive": spans[1], "dataset": "crops"})
    return pairs


def simcse_stream(options: SimCSEOptions, length: int, record: bool = True) -> ShuffledWindows:
    """`length` SimCSE records streamed from `options.data` (`ShuffledWindows`): a corpus's sentences, or with
    crops the crop pairs of its (or .parquet files') paragraphs, each window's drawn with a seed of its own.
    `record`: this process writes the run's window counts."""
    kind = "paragraphs" if options.positives == "crops" else "sentences"
    groups = parquet_row_groups(options.data, kind, options.text_field)
    if not groups:
        raise DataError(f"no training {kind}", options.data)

    def records(texts: list[str], window: int) -> list[Any]:
        if options.positives == "crops":
            return _crops(texts, options.crop_ratio, options.seed * 1_000_003 + window, options.positive_crop_ratio)
        return [text.strip() for text in texts if text.strip()]

    return ShuffledWindows(
        groups,
        records,
        length,
        options.seed,
        options.stream_window_rows,
        Path(options.output_dir) / STREAM_COUNTS,
        record,
        f"simcse:{kind}:{options.crop_ratio}:{options.positive_crop_ratio}:{MIN_CROP_WORDS}",
    )


@dataclass
class SupervisedData:
    """The records of every `data` path, in the order of the paths and of each file; `groups`: their datasets as
    index lists, one per (path, dataset), so that two paths never share a batch; `sources`: each path's records."""

    records: list[SupervisedPair]
    groups: list[list[int]]
    sources: list[range]


def supervised_data(options: SupervisedOptions) -> SupervisedData:
    """The records of `options.data`'s paths (JSONL records, sentence-similarity pairs, a corpus folder's weak pairs),
    each dataset of each path cut to a seeded sample of `max_pairs_per_dataset` in file order. Every path is checked
    before any is read, so a missing one is a DataError naming it before the work starts."""
    paths = [options.data] if isinstance(options.data, str) else list(options.data)
    for path in paths:
        if not Path(path).exists():
            raise DataError("file not found", path)
    rng = random.Random(options.seed)
    data = SupervisedData([], [], [])
    for path in paths:
        records = _path_records(path, options)
        if options.max_pairs_per_dataset:
            kept = [
                index
                for indices in _dataset_indices(records)
                for index in (
                    rng.sample(indices, options.max_pairs_per_dataset)
                    if len(indices) > options.max_pairs_per_dataset
                    else indices
                )
            ]
            records = [records[index] for index in sorted(kept)]
        start = len(data.records)
        data.records += records
        data.groups += [[start + index for index in indices] for indices in _dataset_indices(records)]
        data.sources.append(range(start, len(data.records)))
    return data


def _path_records(path: str, options: SupervisedOptions) -> list[SupervisedPair]:
    if is_corpus(path):
        files = corpus_files(path, PAIRS, "train")
        if not files:
            raise DataError(
                "no pairs in this corpus: it was built from plain text, with pair_kinds = [] or by an lm2vec older "
                "than its pairs; build it again (lm2vec data wiki, or lm2vec run --redo data)",
                path,
            )
        return [record for file in files for record in read_supervised_pairs(file)]
    if Path(path).suffix in (".csv", ".tsv"):
        return sts_supervised_pairs(
            path, options.min_pair_score, options.sts_instruction, scored=options.cosent_weight > 0
        )
    return read_supervised_pairs(path)


def _dataset_indices(records: Sequence[SupervisedPair]) -> list[list[int]]:
    """The indices of each dataset's records, datasets in the order of their first record."""
    by_dataset: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_dataset.setdefault(record["dataset"], []).append(index)
    return list(by_dataset.values())


def query_instruction(records: Sequence[dict[str, Any]]) -> str:
    """The instruction most training queries carried (empty if none had one): the default for retrieval."""
    counts = Counter(record["instruction"] for record in records)
    return counts.most_common(1)[0][0]


def mining_pools(
    records: Sequence[dict[str, Any]],
    drawn: Sequence[int],
    sources: Sequence[range] | None = None,
    pool: str = "source",
) -> list[tuple[list[dict], list[str]]]:
    """For each source (a mixture's path; default: all the records) holding a drawn record: its drawn records and the
    distinct positives among which they are mined, those of all its records (`pool="source"`) or of its drawn ones
    (`pool="drawn"`)."""
    pools = []
    for source in sources or [range(len(records))]:
        if part := [records[index] for index in drawn if index in source]:
            candidates = part if pool == "drawn" else (records[index] for index in source)
            pools.append((part, list(dict.fromkeys(record["positive"] for record in candidates))))
    return pools


def mined_records(
    encoder: LM2Vec,
    records: Sequence[dict[str, Any]],
    options: SupervisedOptions,
    write: bool = True,
    sources: Sequence[range] | None = None,
    drawn: Sequence[int] | None = None,
) -> list[dict]:
    """The records with hard negatives mined by `encoder` (the model training starts from) for those of `drawn`
    (sorted indices: the records the run's batches hold; default all): a run of 1,000 steps of 64 pairs needs
    negatives for 64,000 of a dump's hundreds of thousands. Each is mined within its source (a mixture's path;
    default: all the records), so that an STS pair gets no Wikipedia section, among the positives `mining_pools`
    gives. OUTPUT/mined.jsonl holds the drawn records with their negatives, so that a resumed run trains on the same
    ones; it is mined again if the pairs or the mining settings (recorded in the training folder) changed."""
    from lm2vec.training.mining import MiningOptions, mine_hard_negatives

    drawn = range(len(records)) if drawn is None else drawn
    output = Path(options.output_dir)
    settings = {
        "negatives": options.mine_negatives,
        "relative_margin": options.mining_relative_margin,
        "pool": options.mining_pool,
    }
    mined: list[dict] = []
    if (output / MINED_NAME).is_file() and training_record(output).get("mining") == settings:
        mined = read_supervised_pairs(output / MINED_NAME)
    if [(r["query"], r["positive"]) for r in mined] != [(records[i]["query"], records[i]["positive"]) for i in drawn]:
        mining = MiningOptions(options.mine_negatives, relative_margin=options.mining_relative_margin)
        if write:
            logger.info(
                "mining %d hard negative(s) a pair for the %d of %d pairs that the run's batches hold",
                options.mine_negatives,
                len(drawn),
                len(records),
            )
        mined = []
        for part, corpus in mining_pools(records, drawn, sources, options.mining_pool):
            mined += mine_hard_negatives(encoder, part, corpus, mining)
        if write:  # the main process; the others mined the same negatives
            write_jsonl_atomic(output / MINED_NAME, mined)
            record_in_training_folder(output, mining=settings)
    placed = list(records)
    for index, record in zip(drawn, mined, strict=True):
        placed[index] = record
    return placed
