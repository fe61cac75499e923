"""Word-level evaluation: linear probes on a frozen encoder's token states, the LLM2Vec paper's POS tagging,
chunking and NER on CoNLL-2003.

A sentence is its words joined by spaces; a word's tokens are those whose character offsets overlap it. A word is
read (`READINGS`) from the state of its first token (`first`), from the state before that (`shifted`: MNTP trains
the state at i-1 to predict token i; the first token of a text without a BOS token reads itself), or as the mean of
its tokens' states (`mean`). For each reading a logistic regression (`linear_probe`) learns the tags of the train
sentences' words and is scored on the test sentences: accuracy of the tags (`word-tagging`) or span-level F1 of
IOB2 chunks (`word-spans`, seqeval's default conventions). Each metric names its reading: `accuracy_first`,
`f1_shifted` ... A bootstrap resamples the test words (accuracy) or the test sentences and their chunk counts (F1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np

from lm2vec.data import formats
from lm2vec.evaluation.encoders import TokenEncoder
from lm2vec.evaluation.errors import EvalConfigError, EvalDataError
from lm2vec.evaluation.tasks import Task, TaskEntry, TaskScore, _subset

READINGS = ("first", "shifted", "mean")
DEFAULT_READINGS = ("first", "shifted")  # the first is the main metric's, unless the entry names another
# Fixed, like the paper's fixed epochs: a probe measures the states, not the optimiser; with this tolerance lbfgs
# stops at about half its default iterations, within a point of the converged scores.
PROBE_MAX_ITER = 100
PROBE_TOLERANCE = 1e-3


def join_words(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The sentence the encoder reads (the words joined by spaces) and each word's (start, end) in it."""
    spans, start = [], 0
    for word in words:
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return " ".join(words), spans


def align_words(spans: list[tuple[int, int]], offsets: np.ndarray) -> list[list[int]]:
    """The tokens of each word: those whose character offsets overlap it (special tokens, at (0, 0), never do)."""
    aligned = []
    for start, end in spans:
        tokens = [i for i, (token_start, token_end) in enumerate(offsets) if token_start < end and token_end > start]
        if not tokens:
            raise EvalDataError(f"no token covers characters {start}-{end} of a sentence; the tokenizer dropped a word")
        aligned.append(tokens)
    return aligned


def read_words(states: np.ndarray, tokens: list[list[int]], reading: str) -> np.ndarray:
    """One row a word: its `reading` (see the module's description) of the sentence's token `states`."""
    if reading == "first":
        return states[[word[0] for word in tokens]]
    if reading == "shifted":
        return states[[max(word[0] - 1, 0) for word in tokens]]
    return np.stack([states[word].mean(axis=0) for word in tokens])


def word_vectors(encoder: TokenEncoder, sentences: list[list[str]], readings: tuple[str, ...]) -> dict[str, np.ndarray]:
    """For each reading, the vectors of all words of `sentences`, in order (one encoder call for all)."""
    joined = [join_words(words) for words in sentences]
    if not hasattr(encoder, "embed_tokens"):
        raise EvalConfigError(f"{encoder.name}: this encoder gives no token states for word-level tasks")
    pairs = encoder.embed_tokens([text for text, _ in joined])
    rows: dict[str, list[np.ndarray]] = {reading: [] for reading in readings}
    for (_, spans), (offsets, states) in zip(joined, pairs, strict=True):
        tokens = align_words(spans, offsets)
        for reading in readings:
            rows[reading].append(read_words(states, tokens, reading))
    return {reading: np.concatenate(vectors) for reading, vectors in rows.items()}


def iob2_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """The (type, start, end) chunks of IOB2 tags, end exclusive, as seqeval's default mode reads them: a chunk
    ends at B, O or a change of type; an I that follows O or another type starts a chunk."""
    spans, start, kind = set(), None, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        if start is not None and (prefix != "I" or label != kind):
            spans.add((kind, start, i))
            start = None
        if start is None and prefix in ("B", "I"):
            start, kind = i, label
    return spans


def span_counts(gold: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
    """Each sentence's (chunks found, gold chunks, predicted chunks): a chunk is found when its type and both ends
    match."""
    counts = []
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans, predicted_spans = iob2_spans(gold_tags), iob2_spans(predicted_tags)
        counts.append((len(gold_spans & predicted_spans), len(gold_spans), len(predicted_spans)))
    return np.asarray(counts, dtype=np.int64).reshape(-1, 3)


def f1_of_counts(totals: np.ndarray) -> float:
    """Micro-averaged F1 from summed `span_counts` (all sentences' chunks pooled)."""
    true_positives, n_gold, n_predicted = totals
    if true_positives == 0:
        return 0.0
    precision, recall = true_positives / n_predicted, true_positives / n_gold
    return float(2 * precision * recall / (precision + recall))


def linear_probe(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Tags for `test_x` from a logistic regression trained on standardised train states (LLM states have a few
    huge dimensions that would otherwise dominate), at most `PROBE_MAX_ITER` iterations, seeded."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER, tol=PROBE_TOLERANCE, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the iterations are fixed on purpose
        probe.fit(train_x, train_y)
    return probe.predict(test_x)


@dataclass(kw_only=True)
class WordTask(Task):
    """Tags of words from their token states: a linear probe per reading, trained on `words`, scored on
    `test_words`."""

    words: list[list[str]]
    tags: list[list[str]]
    test_words: list[list[str]]
    test_tags: list[list[str]]
    readings: tuple[str, ...] = DEFAULT_READINGS
    seed: int = 0

    measure: ClassVar[str] = ""  # the metrics are `{measure}_{reading}`
    entry_keys: ClassVar[tuple[str, ...]] = ("test_path", "column", "readings", "test_limit")

    @classmethod
    def from_entry(cls, entry: TaskEntry) -> Self:
        """`path` and `test_path` are CoNLL files (`formats.read_conll`) whose `column` holds the tags; `limit`
        train sentences and `test_limit` test sentences are kept (a seeded sample; `limit` caps both)."""
        column = entry.get("column", "")
        if column not in formats.CONLL2003_COLUMNS:
            raise EvalConfigError(
                f"task {entry.name!r}: column must be one of {', '.join(formats.CONLL2003_COLUMNS)}, got {column!r}"
            )
        test_path = entry.resolve("test_path")
        if test_path is None:
            raise EvalConfigError(f"task {entry.name!r}: word-level tasks need a test_path")
        readings = tuple(entry.get("readings", DEFAULT_READINGS))
        train, test = formats.read_conll(entry.path), formats.read_conll(test_path)
        keep = entry.sample(len(train.words))
        test_limits = [n for n in (entry.get("test_limit"), entry.get("limit")) if n is not None]
        keep_test = _subset(len(test.words), min(test_limits, default=None))
        return cls(
            **{**entry.common(), "main_metric": entry.get("metric") or f"{cls.measure}_{readings[0]}"},
            words=[train.words[i] for i in keep],
            tags=[train.tags[column][i] for i in keep],
            test_words=[test.words[i] for i in keep_test],
            test_tags=[test.tags[column][i] for i in keep_test],
            readings=readings,
        )

    def __post_init__(self) -> None:
        self._check_lengths(words=self.words, tags=self.tags)
        self._check_lengths(test_words=self.test_words, test_tags=self.test_tags)
        if unknown := [reading for reading in self.readings if reading not in READINGS]:
            raise EvalConfigError(f"task {self.name!r}: unknown reading(s) {', '.join(unknown)}; known: {READINGS}")
        super().__post_init__()
        if self.main_metric.removeprefix(f"{self.measure}_") not in self.readings:
            raise EvalConfigError(
                f"task {self.name!r}: metric {self.main_metric!r} needs its reading in readings {list(self.readings)}"
            )

    @property
    def size(self) -> int:
        return len(self.words) + len(self.test_words)

    def score(self, encoder: TokenEncoder) -> TaskScore:
        """The bootstrap resamples the rows of the main reading's `example_counts`."""
        train = word_vectors(encoder, self.words, self.readings)
        test = word_vectors(encoder, self.test_words, self.readings)
        train_tags = [tag for tags in self.tags for tag in tags]
        bounds = np.cumsum([len(words) for words in self.test_words])[:-1]
        metrics, counts = {}, {}
        for reading in self.readings:
            predicted = [
                list(tags)
                for tags in np.split(linear_probe(train[reading], train_tags, test[reading], self.seed), bounds)
            ]
            metric = f"{self.measure}_{reading}"
            counts[metric] = self.example_counts(self.test_tags, predicted)
            metrics[metric] = self.of_counts(counts[metric].sum(axis=0))
        main = counts[self.main_metric]
        return TaskScore(metrics, len(main), lambda indices: self.of_counts(main[indices].sum(axis=0)))

    def example_counts(self, gold: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
        """One row of counts per example a bootstrap draws; their column sums give the metric (`of_counts`)."""
        raise NotImplementedError

    def of_counts(self, totals: np.ndarray) -> float:
        raise NotImplementedError


@dataclass(kw_only=True)
class WordTaggingTask(WordTask):
    """Accuracy of each word's tag (POS)."""

    type: ClassVar[str] = "word-tagging"
    measure: ClassVar[str] = "accuracy"
    default_metric: ClassVar[str] = "accuracy_first"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy_first", "accuracy_shifted", "accuracy_mean")

    def example_counts(self, gold: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
        """Each word's (tag right, 1)."""
        gold_tags, predicted_tags = [t for tags in gold for t in tags], [t for tags in predicted for t in tags]
        return np.asarray([(g == p, 1) for g, p in zip(gold_tags, predicted_tags, strict=True)], dtype=np.int64)

    def of_counts(self, totals: np.ndarray) -> float:
        return float(totals[0] / totals[1])


@dataclass(kw_only=True)
class WordSpanTask(WordTask):
    """Span-level F1 of IOB2 chunks (chunking, NER)."""

    type: ClassVar[str] = "word-spans"
    measure: ClassVar[str] = "f1"
    default_metric: ClassVar[str] = "f1_first"
    metrics: ClassVar[tuple[str, ...]] = ("f1_first", "f1_shifted", "f1_mean")

    def example_counts(self, gold: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
        return span_counts(gold, predicted)

    def of_counts(self, totals: np.ndarray) -> float:
        return f1_of_counts(totals)


TASK_TYPES: dict[str, type[Task]] = {cls.type: cls for cls in (WordTaggingTask, WordSpanTask)}
