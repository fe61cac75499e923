"""Evaluation tasks on local data. Each task holds its examples and turns an encoder into metrics (0-1 floats).

Every task asks its encoder for L2-normalised embeddings through `embed(texts, instruction)`, so cosine
similarity is a dot product, and caching happens in one place (`CachedEncoder`).

Each task type also builds itself from its registry entry (`Task.from_entry`, the keys of a `[tasks.NAME]` table of
lm2vec.evaluation.registry): it reads its data and keeps the entry's deterministic subset.

`Task.score` also gives what a bootstrap over the task's examples needs (`TaskScore.main_on`: the main metric on
any resample of them), so a score comes with a confidence interval. The resamples are seeded by the task's name, so
every model is scored on the same ones (paired): the difference of two models' replicates is their difference's.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from lm2vec.data import formats
from lm2vec.data.packaged import expand_path
from lm2vec.evaluation.datasets import headline_retrieval, mo_prefix_triplets, wiki_sentence_retrieval
from lm2vec.evaluation.encoders import TextEncoder
from lm2vec.evaluation.errors import EvalDataError

FAISS_THRESHOLD = 200_000  # corpora at least this large are searched with a FAISS index
# A retrieval `limit` scales the corpus with the queries: documents per kept query (theirs and distractors).
RETRIEVAL_CORPUS_PER_QUERY = 3
# The registry keys every task type reads; each type adds its own (`Task.entry_keys`).
COMMON_KEYS = ("type", "path", "format", "metric", "instruction", "language", "limit", "description")
BOOTSTRAP_REPLICATES = 1000  # resamples of a task's examples behind each score's interval
CONFIDENCE = 0.95


def bootstrap_draws(seed: str, size: int, count: int = BOOTSTRAP_REPLICATES) -> Iterator[np.ndarray]:
    """`count` resamples of `size` examples (indices drawn with replacement), the same for every model: `seed` (the
    task's name) fixes them, which pairs two models' replicates."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little"))
    for _ in range(count):
        yield rng.integers(0, size, size)


def confidence_interval(replicates: np.ndarray) -> tuple[float, float]:
    """The percentile interval of bootstrap `replicates` at CONFIDENCE."""
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class TaskScore:
    """A task's metrics on one encoder, and its main metric on any resample of its examples."""

    metrics: dict[str, float]
    examples: int  # how many examples a resample draws from (pairs, queries, test texts, test words ...)
    main_on: Callable[[np.ndarray], float]  # the main metric on the examples at these indices (repeats allowed)

    def replicates(self, seed: str, count: int = BOOTSTRAP_REPLICATES) -> np.ndarray:
        """The main metric on `count` bootstrap resamples (`bootstrap_draws(seed, ...)`)."""
        draws = bootstrap_draws(seed, self.examples, count)
        return np.fromiter((self.main_on(draw) for draw in draws), dtype=np.float64, count=count)


def mean_on(values: np.ndarray | list) -> Callable[[np.ndarray], float]:
    """`TaskScore.main_on` of a metric that is the mean of per-example `values`."""
    values = np.asarray(values, dtype=np.float64)
    return lambda indices: float(values[indices].mean())


@dataclass
class TaskEntry:
    """A task's registry entry: its keys (a `[tasks.NAME]` table) and the folder its relative paths start from."""

    name: str
    keys: dict[str, Any]
    base_dir: Path | None = None
    path: Path = field(init=False)  # the data, placeholders expanded

    def __post_init__(self) -> None:
        self.path = self.resolve("path")

    def get(self, key: str, default: Any = None) -> Any:
        return self.keys.get(key, default)

    def resolve(self, key: str) -> Path | None:
        """The path under `key`: `${placeholder}/...` (see lm2vec.data.packaged) or relative to `base_dir`."""
        if key not in self.keys:
            return None
        return expand_path(self.keys[key], self.base_dir)  # a DataError (= EvalDataError) names the problem

    def common(self) -> dict[str, Any]:
        """The fields every task takes."""
        return {
            "name": self.name,
            "instruction": self.get("instruction"),
            "language": self.get("language", "en"),
            "description": self.get("description", ""),
            "main_metric": self.get("metric", ""),
            "source": str(self.path),
        }

    def sample(self, n: int) -> list[int]:
        """Which of `n` examples the entry's `limit` keeps: a deterministic sample, in order (all without one)."""
        return _subset(n, self.get("limit"))

    def stratified(self, labels: list[str]) -> list[int]:
        """Like `sample`, as many of each label (as far as a label has them)."""
        limit = self.get("limit")
        if limit is None or limit >= len(labels):
            return list(range(len(labels)))
        by_label: dict[str, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            by_label[label].append(i)
        share = max(1, limit // len(by_label))
        rng = random.Random(0)
        return sorted(i for indices in by_label.values() for i in rng.sample(indices, min(share, len(indices))))

    def cut(self, text: str) -> str:
        """`text` cut to the entry's `max_chars` at the last space (whole, without `max_chars`)."""
        max_chars = self.get("max_chars")
        if not max_chars or len(text) <= max_chars:
            return text
        cut = text[:max_chars]
        return cut[: cut.rfind(" ")] if " " in cut else cut


def _subset(n: int, limit: int | None) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(0).sample(range(n), limit))


@dataclass(kw_only=True)
class Task:
    name: str
    instruction: str | None = None
    language: str = "en"
    description: str = ""
    main_metric: str = ""
    source: str = ""  # where the data came from, for error messages and the report

    type: ClassVar[str] = ""
    default_metric: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    entry_keys: ClassVar[tuple[str, ...]] = ()  # the registry keys this type reads besides COMMON_KEYS

    @classmethod
    def from_entry(cls, entry: TaskEntry) -> Self:
        """The task a registry entry defines, with its data read and cut to the entry's subset."""
        raise NotImplementedError

    def __post_init__(self) -> None:
        self.main_metric = self.main_metric or self.default_metric
        if self.main_metric not in self.metrics:
            raise EvalDataError(
                f"task {self.name!r}: metric {self.main_metric!r} is not one of {', '.join(self.metrics)}",
                self.source or None,
            )
        if self.size == 0:
            raise EvalDataError(f"task {self.name!r} has no examples", self.source or None)

    @property
    def size(self) -> int:
        raise NotImplementedError

    def evaluate(self, encoder: TextEncoder) -> dict[str, float]:
        """The task's metrics on `encoder`."""
        return self.score(encoder).metrics

    def score(self, encoder: TextEncoder) -> TaskScore:
        """The task's metrics on `encoder`, and its main metric on resamples of its examples."""
        raise NotImplementedError

    def _check_lengths(self, **columns: list) -> None:
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{n} {name}" for name, n in lengths.items())
            raise EvalDataError(f"task {self.name!r}: mismatched counts ({described})", self.source or None)


@dataclass(kw_only=True)
class STSTask(Task):
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]

    type: ClassVar[str] = "sts"
    default_metric: ClassVar[str] = "spearman"
    metrics: ClassVar[tuple[str, ...]] = ("spearman", "pearson")
    entry_keys: ClassVar[tuple[str, ...]] = ("scores", "max_chars")

    @classmethod
    def from_entry(cls, entry: TaskEntry) -> Self:
        data = formats.read_sts(entry.path, entry.get("format"), entry.resolve("scores"))
        keep = entry.sample(len(data.scores))
        return cls(
            **entry.common(),
            sentences1=[entry.cut(data.sentences1[i]) for i in keep],
            sentences2=[entry.cut(data.sentences2[i]) for i in keep],
            scores=[data.scores[i] for i in keep],
        )

    def __post_init__(self) -> None:
        self._check_lengths(sentences1=self.sentences1, sentences2=self.sentences2, scores=self.scores)
        super().__post_init__()

    @property
    def size(self) -> int:
        return len(self.scores)

    def score(self, encoder: TextEncoder) -> TaskScore:
        # One call for both sides: texts shared by several pairs (the Lee corpus) are encoded once.
        texts = list(dict.fromkeys(self.sentences1 + self.sentences2))
        embeddings = encoder.embed(texts, self.instruction)
        index = {text: i for i, text in enumerate(texts)}
        left = embeddings[[index[t] for t in self.sentences1]]
        right = embeddings[[index[t] for t in self.sentences2]]
        cosine = np.sum(left * right, axis=1)
        gold = np.asarray(self.scores, dtype=np.float64)
        return TaskScore(
            {metric: correlation(metric, cosine, gold) for metric in self.metrics},
            len(gold),
            lambda indices: correlation(self.main_metric, cosine[indices], gold[indices]),
        )


def correlation(metric: str, predicted: np.ndarray, gold: np.ndarray) -> float:
    """Spearman's (Pearson's on average ranks) or Pearson's correlation; 0 where either side is constant (it is
    undefined there). Not scipy's spearmanr and pearsonr: their argument checks cost a millisecond a call, and a
    bootstrap makes 1,000 calls a model."""
    from scipy.stats import rankdata

    if np.ptp(gold) == 0 or np.ptp(predicted) == 0:
        return 0.0
    if metric == "spearman":
        predicted, gold = rankdata(predicted), rankdata(gold)
    return float(np.corrcoef(predicted, gold)[0, 1])


@dataclass(kw_only=True)
class ClassificationTask(Task):
    """Logistic regression on frozen embeddings: on the given test split, or stratified k-fold."""

    texts: list[str]
    labels: list[str]
    test_texts: list[str] = field(default_factory=list)
    test_labels: list[str] = field(default_factory=list)
    folds: int = 5
    seed: int = 0

    type: ClassVar[str] = "classification"
    default_metric: ClassVar[str] = "accuracy"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "f1_macro")
    entry_keys: ClassVar[tuple[str, ...]] = ("max_chars", "test_path", "folds")

    @classmethod
    def from_entry(cls, entry: TaskEntry) -> Self:
        examples = _labelled_examples(entry)
        if "folds" in entry.keys:
            examples["folds"] = entry.keys["folds"]
        if test_path := entry.resolve("test_path"):
            test = formats.read_labelled(test_path, entry.get("format"))
            examples |= {"test_texts": [entry.cut(t) for t in test.texts], "test_labels": test.labels}
        return cls(**entry.common(), **examples)

    def __post_init__(self) -> None:
        self._check_lengths(texts=self.texts, labels=self.labels)
        self._check_lengths(test_texts=self.test_texts, test_labels=self.test_labels)
        if len(set(self.labels)) < 2:
            raise EvalDataError(f"task {self.name!r}: classification needs at least two labels", self.source or None)
        super().__post_init__()

    @property
    def size(self) -> int:
        return len(self.texts) + len(self.test_texts)

    def score(self, encoder: TextEncoder) -> TaskScore:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score
        from sklearn.model_selection import StratifiedKFold

        def fit_predict(train_x, train_y, test_x):
            classifier = LogisticRegression(max_iter=1000, random_state=self.seed)
            return classifier.fit(train_x, train_y).predict(test_x)

        x = encoder.embed(self.texts, self.instruction)
        y = np.asarray(self.labels)
        if self.test_texts:
            x_test = encoder.embed(self.test_texts, self.instruction)
            predicted, gold = fit_predict(x, y, x_test), np.asarray(self.test_labels)
        else:
            smallest = min(np.unique(y, return_counts=True)[1])
            folds = min(self.folds, int(smallest))
            if folds < 2:
                raise EvalDataError(
                    f"task {self.name!r}: a label has a single example; k-fold needs at least two per label",
                    self.source or None,
                )
            predicted, gold = np.empty_like(y), y
            for train, test in StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(x, y):
                predicted[test] = fit_predict(x[train], y[train], x[test])
        measures = {
            "accuracy": lambda gold, predicted: float(np.mean(gold == predicted)),
            "f1_macro": lambda gold, predicted: float(f1_score(gold, predicted, average="macro")),
        }
        main = measures[self.main_metric]
        return TaskScore(
            {metric: measure(gold, predicted) for metric, measure in measures.items()},
            len(gold),
            lambda indices: main(gold[indices], predicted[indices]),
        )


@dataclass(kw_only=True)
class ClusteringTask(Task):
    texts: list[str]
    labels: list[str]
    seed: int = 0

    type: ClassVar[str] = "clustering"
    default_metric: ClassVar[str] = "v_measure"
    metrics: ClassVar[tuple[str, ...]] = ("v_measure",)
    entry_keys: ClassVar[tuple[str, ...]] = ("max_chars",)

    @classmethod
    def from_entry(cls, entry: TaskEntry) -> Self:
        return cls(**entry.common(), **_labelled_examples(entry))

    def __post_init__(self) -> None:
        self._check_lengths(texts=self.texts, labels=self.labels)
        if len(set(self.labels)) < 2:
            raise EvalDataError(f"task {self.name!r}: clustering needs at least two labels", self.source or None)
        super().__post_init__()

    @property
    def size(self) -> int:
        return len(self.texts)

    def score(self, encoder: TextEncoder) -> TaskScore:
        from sklearn.cluster import KMeans

        x = encoder.embed(self.texts, self.instruction)
        names, labels = np.unique(np.asarray(self.labels), return_inverse=True)
        predicted = KMeans(n_clusters=len(names), n_init=10, random_state=self.seed).fit_predict(x)
        # Each example's (label, cluster) cell of the contingency table, which is all V-measure reads.
        cells, shape = labels * len(names) + predicted, (len(names), len(names))

        def contingency(indices: np.ndarray | slice = slice(None)) -> np.ndarray:
            return np.bincount(cells[indices], minlength=math.prod(shape)).reshape(shape)

        return TaskScore(
            {"v_measure": v_measure(contingency())},
            len(labels),
            # The clusters stay as found. A resample's repeated examples raise its V-measure a little (0.3 points
            # on 2,225 articles, several on 100), and the interval with it.
            lambda indices: v_measure(contingency(indices)),
        )


def v_measure(contingency: np.ndarray) -> float:
    """sklearn's v_measure_score (beta 1) of a labels x clusters table of counts. Not sklearn's own: its argument
    checks cost 5 ms a call, and a bootstrap makes 1,000 calls a model."""
    total = contingency.sum()

    def entropy(counts: np.ndarray) -> float:
        shares = counts[counts > 0] / total
        return float(-np.sum(shares * np.log(shares)))

    by_label, by_cluster = contingency.sum(axis=1), contingency.sum(axis=0)
    filled = contingency > 0
    joint = contingency[filled] / total
    independent = np.outer(by_label, by_cluster)[filled] / total**2
    mutual = max(float(np.sum(joint * np.log(joint / independent))), 0.0)
    label_entropy, cluster_entropy = entropy(by_label), entropy(by_cluster)
    homogeneity = mutual / label_entropy if label_entropy else 1.0
    completeness = mutual / cluster_entropy if cluster_entropy else 1.0
    if homogeneity + completeness == 0:
        return 0.0
    return 2 * homogeneity * completeness / (homogeneity + completeness)


HUBNESS_K = 10  # the neighbourhood size of the k-occurrence skewness (Radovanović et al., 2010)


@dataclass(kw_only=True)
class BitextTask(Task):
    """sources[i] translates to targets[i]; nearest neighbour by cosine, in both directions."""

    sources: list[str]
    targets: list[str]
    source_language: str = "en"
    target_language: str = ""

    type: ClassVar[str] = "bitext"
    default_metric: ClassVar[str] = "f1"
    metrics: ClassVar[tuple[str, ...]] = ("f1", "accuracy")
    entry_keys: ClassVar[tuple[str, ...]] = ("target_path", "min_words")

    @classmethod
    def from_entry(cls, entry: TaskEntry) -> Self:
        if entry.get("format") == "mo":
            pairs = formats.read_mo_pairs(entry.path, entry.get("min_words", 4))
            sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
        else:
            sources, targets = formats.read_pairs(entry.path, entry.get("format"), entry.resolve("target_path"))
        keep = entry.sample(len(sources))
        return cls(
            **entry.common(),
            sources=[sources[i] for i in keep],
            targets=[targets[i] for i in keep],
            target_language=entry.get("language", ""),
        )

    def __post_init__(self) -> None:
        self._check_lengths(sources=self.sources, targets=self.targets)
        super().__post_init__()

    @property
    def size(self) -> int:
        return len(self.sources)

    def score(self, encoder: TextEncoder) -> TaskScore:
        """The bootstrap resamples pairs: each pair's hits (accuracy) or its own class's F1, both directions'
        mean. `hubness_<direction>` tells why one direction can be weaker than the other: the skewness of how often
        each candidate is among the queries' HUBNESS_K nearest (0: even; large: a few hubs are everyone's
        neighbours and crowd out the right translations)."""
        from scipy.stats import skew
        from sklearn.metrics import f1_score

        a = encoder.embed(self.sources, self.instruction)
        b = encoder.embed(self.targets, self.instruction)
        gold = np.arange(len(self.sources))
        results: dict[str, float] = {}
        per_pair = {"accuracy": np.zeros(len(gold)), "f1": np.zeros(len(gold))}
        for direction, (x, y) in {"forward": (a, b), "backward": (b, a)}.items():
            neighbours = search(x, y, HUBNESS_K)
            predicted = neighbours[:, 0]
            occurrences = np.bincount(neighbours.ravel(), minlength=len(y))
            results[f"hubness_{direction}"] = float(skew(occurrences)) if occurrences.std() > 0 else 0.0
            # MTEB's bitext F1: every sentence is its own class (macro F1 = the mean of the classes' F1).
            values = {"accuracy": predicted == gold, "f1": f1_score(gold, predicted, average=None, labels=gold)}
            for metric, value in values.items():
                results[f"{metric}_{direction}"] = float(np.mean(value))
                per_pair[metric] += value / 2
        results["accuracy"] = (results["accuracy_forward"] + results["accuracy_backward"]) / 2
        results["f1"] = (results["f1_forward"] + results["f1_backward"]) / 2
        return TaskScore(results, len(gold), mean_on(per_pair[self.main_metric]))


@dataclass(kw_only=True)
class TripletTask(Task):
    anchors: list[str]
    similar: list[str]
    dissimilar: list[str]

    type: ClassVar[str] = "triplets"
    default_metric: ClassVar[str] = "accuracy"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    entry_keys: ClassVar[tuple[str, ...]] = ("min_words",)

    @classmethod
    def from_entry(cls, entry: TaskEntry) -> Self:
        if entry.get("format") == "mo-prefix-triplets":
            anchors, similar, dissimilar = mo_prefix_triplets(entry.path, entry.get("min_words", 3))
        else:
            anchors, similar, dissimilar = formats.read_triplets(entry.path, entry.get("format"))
        keep = entry.sample(len(anchors))
        return cls(
            **entry.common(),
            anchors=[anchors[i] for i in keep],
            similar=[similar[i] for i in keep],
            dissimilar=[dissimilar[i] for i in keep],
        )

    def __post_init__(self) -> None:
        self._check_lengths(anchors=self.anchors, similar=self.similar, dissimilar=self.dissimilar)
        super().__post_init__()

    @property
    def size(self) -> int:
        return len(self.anchors)

    def score(self, encoder: TextEncoder) -> TaskScore:
        texts = list(dict.fromkeys(self.anchors + self.similar + self.dissimilar))
        embeddings = encoder.embed(texts, self.instruction)
        index = {text: i for i, text in enumerate(texts)}

        def rows(column: list[str]) -> np.ndarray:
            return embeddings[[index[t] for t in column]]

        anchors = rows(self.anchors)
        margin = np.sum(anchors * rows(self.similar), axis=1) - np.sum(anchors * rows(self.dissimilar), axis=1)
        metrics = {"accuracy": float(np.mean(margin > 0)), "mean_margin": float(np.mean(margin))}
        return TaskScore(metrics, len(margin), mean_on(margin > 0))


@dataclass(kw_only=True)
class RetrievalTask(Task):
    """Queries (with the task's instruction) against a corpus (without): nDCG@10, Recall@100, MRR@10."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, float]]
    use_faiss: bool | None = None  # None: FAISS for corpora of FAISS_THRESHOLD documents or more

    type: ClassVar[str] = "retrieval"
    default_metric: ClassVar[str] = "ndcg_at_10"
    metrics: ClassVar[tuple[str, ...]] = ("ndcg_at_10", "recall_at_100", "mrr_at_10")
    entry_keys: ClassVar[tuple[str, ...]] = ("split", "max_chars")

    @classmethod
    def from_entry(cls, entry: TaskEntry) -> Self:
        """A `limit` keeps that many queries, against their documents and others (RETRIEVAL_CORPUS_PER_QUERY)."""
        format = entry.get("format")
        if format == "wiki-sentences":
            queries, corpus, qrels = wiki_sentence_retrieval(entry.path, entry.get("language", "en"))
        elif format == "headlines":
            queries, corpus, qrels = headline_retrieval(entry.path)
        else:
            data = formats.read_beir(entry.path, entry.get("split", "test"))
            queries, corpus, qrels = data.queries, data.corpus, data.qrels
        keep = set(entry.sample(len(qrels)))
        if len(keep) < len(qrels):
            qrels = {q: r for i, (q, r) in enumerate(qrels.items()) if i in keep}
            corpus = _retrieval_subset(corpus, qrels, RETRIEVAL_CORPUS_PER_QUERY * len(keep))
        return cls(**entry.common(), queries=queries, corpus={k: entry.cut(v) for k, v in corpus.items()}, qrels=qrels)

    def __post_init__(self) -> None:
        for query_id, relevant in self.qrels.items():
            if query_id not in self.queries:
                raise EvalDataError(f"task {self.name!r}: qrels name unknown query {query_id!r}", self.source or None)
            for doc_id in relevant:
                if doc_id not in self.corpus:
                    raise EvalDataError(
                        f"task {self.name!r}: qrels name unknown document {doc_id!r}", self.source or None
                    )
        super().__post_init__()

    @property
    def size(self) -> int:
        return len([q for q in self.qrels if any(v > 0 for v in self.qrels[q].values())])

    def score(self, encoder: TextEncoder) -> TaskScore:
        query_ids = [q for q in self.queries if q in self.qrels]
        doc_ids = list(self.corpus)
        q = encoder.embed([self.queries[i] for i in query_ids], self.instruction)
        d = encoder.embed([self.corpus[i] for i in doc_ids], None)
        k = min(100, len(doc_ids))
        use_faiss = self.use_faiss if self.use_faiss is not None else len(doc_ids) >= FAISS_THRESHOLD
        top = search(q, d, k, use_faiss=use_faiss)
        per_query: dict[str, list[float]] = {metric: [] for metric in self.metrics}
        for row, query_id in enumerate(query_ids):
            ranked = [doc_ids[j] for j in top[row]]
            relevance = self.qrels[query_id]
            relevant = {d for d, r in relevance.items() if r > 0}
            per_query["ndcg_at_10"].append(ndcg_at_k(ranked, relevance, 10))
            per_query["recall_at_100"].append(len(relevant & set(ranked[:100])) / len(relevant) if relevant else 0.0)
            per_query["mrr_at_10"].append(
                next((1 / (i + 1) for i, doc in enumerate(ranked[:10]) if doc in relevant), 0.0)
            )
        metrics = {metric: float(np.mean(values)) for metric, values in per_query.items()}
        return TaskScore(metrics, len(query_ids), mean_on(per_query[self.main_metric]))


def ndcg_at_k(ranked: list[str], relevance: dict[str, float], k: int) -> float:
    gains = [relevance.get(doc, 0.0) for doc in ranked[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def search(
    queries: np.ndarray, documents: np.ndarray, k: int, use_faiss: bool = False, chunk: int = 1024
) -> np.ndarray:
    """Indices of the k documents with the highest inner product for each query, best first (exact search)."""
    k = min(k, len(documents))
    if use_faiss:
        import faiss

        index = faiss.IndexFlatIP(documents.shape[1])
        index.add(np.ascontiguousarray(documents, dtype=np.float32))
        return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]
    result = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ documents.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        result[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return result


def _labelled_examples(entry: TaskEntry) -> dict[str, Any]:
    """The texts and labels of a classification or clustering entry: its stratified subset, texts cut."""
    data = formats.read_labelled(entry.path, entry.get("format"))
    keep = entry.stratified(data.labels)
    return {"texts": [entry.cut(data.texts[i]) for i in keep], "labels": [data.labels[i] for i in keep]}


def _retrieval_subset(corpus: dict[str, str], qrels: dict[str, dict], size: int) -> dict[str, str]:
    """The documents relevant to the kept queries, topped up with a deterministic sample of the others to `size`."""
    relevant = {doc for docs in qrels.values() for doc in docs}
    others = [doc for doc in corpus if doc not in relevant]
    chosen = relevant | {others[i] for i in _subset(len(others), max(0, size - len(relevant)))}
    return {doc: text for doc, text in corpus.items() if doc in chosen}


TASK_TYPES: dict[str, type[Task]] = {
    cls.type: cls for cls in (STSTask, ClassificationTask, ClusteringTask, BitextTask, TripletTask, RetrievalTask)
}
