"""lm2vec's offline metrics against mteb's own evaluation code, on the same fixed embeddings.

Each test builds one small task twice from the same data: as an lm2vec task (lm2vec.evaluation.tasks) and as an
mteb task (a subclass of mteb's own AbsTask for that type, like mteb's mock tasks: the data in memory, nothing
downloaded), and runs `mteb.evaluate` through `LM2VecMTEB` on an encoder that returns fixed vectors. So the
comparison covers mteb's whole path (its data loaders, similarity, pytrec_eval, sklearn calls, averaging), not a
re-implementation of it. Expected numbers are never written down: both sides compute them.

Where the protocols differ, the test pins mteb's protocol to ours and says so:
- STS: the same (cosine, Spearman and Pearson with scipy); mteb rescales the gold scores linearly first, which
  changes neither correlation.
- Retrieval: nDCG@10 and Recall@100 come from pytrec_eval in mteb, which mteb rounds to 5 decimals; MRR@10 is
  mteb's own (not rounded). Relevance grades are integers there (pytrec_eval), floats in lm2vec (the same numbers
  for integer grades). Ties in scores are broken by document id in mteb, by position in lm2vec: the data has none.
- Classification: mteb trains on `samples_per_label` (8) examples per label drawn `n_experiments` (10) times and
  averages; lm2vec trains once on the whole train split. With samples_per_label above every label's count and one
  experiment, mteb also trains on the whole split (shuffled; L-BFGS converges to the same classifier), and with
  lm2vec's LogisticRegression(max_iter=1000) both predict the same labels. mteb's `f1` is macro F1, lm2vec's
  `f1_macro`. (Without a test split lm2vec uses stratified k-fold; mteb's cross-validation is an unstratified
  KFold with undersampling: not compared.)
- Clustering: mteb's legacy clustering (AbsTaskClusteringLegacy) is MiniBatchKMeans(n_init="auto", batch 500)
  and v_measure per clustering set; lm2vec is KMeans(n_init=10) and v_measure. On clusters that k-means cannot
  split two ways (gold labels deliberately not the geometric clusters, so v_measure < 1) both find the same
  partition. mteb's newer clustering (AbsTaskClustering, most MTEB v2 tasks) bootstraps subsets over a label
  hierarchy and averages: a different protocol, not compared.
- Bitext: mteb searches one direction (sentence1 -> sentence2) and reports weighted F1 over the gold labels,
  which is macro F1 when each sentence is its own label; lm2vec reports both directions and their mean, so
  mteb's accuracy and f1 are compared with lm2vec's `accuracy_forward` and `f1_forward`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")

from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.classification import AbsTaskClassification  # noqa: E402
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.abstasks.text.bitext_mining import AbsTaskBitextMining  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from lm2vec.evaluation.mteb_protocol import LM2VecMTEB  # noqa: E402
from lm2vec.evaluation.tasks import (  # noqa: E402
    BitextTask,
    ClassificationTask,
    ClusteringTask,
    RetrievalTask,
    STSTask,
)

DIM = 16


class FixedEmbeddings:
    """Each text's embedding is a fixed vector (L2-normalised float32): an lm2vec `TextEncoder` and, for
    `LM2VecMTEB`, an `LM2Vec`-like `encode`."""

    name = "fixed"

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = {text: (v / np.linalg.norm(v)).astype(np.float32) for text, v in vectors.items()}

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])

    def encode(self, texts, batch_size=32, normalize=True, prompt=None, show_progress_bar=None) -> np.ndarray:
        return self.embed(list(texts))

    def get_sentence_embedding_dimension(self) -> int:
        return DIM


def metadata(task_type: str, name: str, main_score: str) -> TaskMetadata:
    return TaskMetadata(
        type=task_type,
        name=name,
        main_score=main_score,
        description="lm2vec's metric check on fixed embeddings.",
        reference="https://github.com/embeddings-benchmark/mteb",
        dataset={"path": "NA", "revision": "NA"},
        category="t2t",
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        date=("2024-01-01", "2024-01-01"),
        dialect=["Written"],
        domains=[],
        task_subtypes=[],
        license="cc-by-4.0",
        annotations_creators="derived",
        modalities=["text"],
        sample_creation="found",
        bibtex_citation="",
    )


def mteb_scores(task, encoder: FixedEmbeddings) -> dict[str, Any]:
    result = mteb.evaluate(LM2VecMTEB(encoder, "test/fixed"), [task], cache=None, show_progress_bar=False)
    assert not result.exceptions, result.exceptions
    (task_result,) = result.task_results
    (scores,) = task_result.scores["test"]
    return scores


def unit(rng: np.random.RandomState, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- STS -------------------------------------------------------------------------------------------------------
def test_sts_matches_mteb() -> None:
    rng = np.random.RandomState(0)
    n = 40
    left, right = unit(rng, n), unit(rng, n)
    right = left * rng.uniform(0, 1.5, (n, 1)) + right  # a spread of similarities
    gold = np.sum(left * right / np.linalg.norm(right, axis=1, keepdims=True), axis=1) + rng.normal(0, 0.3, n)
    gold = np.round(np.clip((gold + 1) * 2.5, 0, 5), 2)  # a 0-5 scale, with some ties as in real STS data
    sentences1, sentences2 = [f"s1-{i}" for i in range(n)], [f"s2-{i}" for i in range(n)]
    encoder = FixedEmbeddings(dict(zip(sentences1 + sentences2, np.concatenate([left, right]), strict=True)))

    class Check(AbsTaskSTS):
        metadata = metadata("STS", "Lm2vecCheckSTS", "cosine_spearman")
        min_score, max_score = 0, 5

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            data = {"sentence1": sentences1, "sentence2": sentences2, "score": gold.tolist()}
            self.dataset = DatasetDict({"test": Dataset.from_dict(data)})
            self.data_loaded = True

    theirs = mteb_scores(Check(), encoder)
    ours = STSTask(name="sts", sentences1=sentences1, sentences2=sentences2, scores=gold.tolist()).evaluate(encoder)
    assert 0.2 < ours["spearman"] < 0.95  # not a degenerate case
    assert ours["spearman"] == pytest.approx(theirs["cosine_spearman"], abs=1e-6)
    assert ours["pearson"] == pytest.approx(theirs["cosine_pearson"], abs=1e-6)
    assert theirs["main_score"] == theirs["cosine_spearman"]


# --- retrieval -------------------------------------------------------------------------------------------------
def test_retrieval_matches_mteb_and_pytrec_eval() -> None:
    rng = np.random.RandomState(2)  # a seed whose top 101 scores are at least 1e-6 apart (asserted below)
    n_docs, n_queries = 150, 12
    docs = unit(rng, n_docs)
    doc_ids = [f"d{i}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]
    qrels: dict[str, dict[str, int]] = {}
    queries = []
    for i, query_id in enumerate(query_ids):
        relevant = rng.choice(n_docs, size=rng.randint(1, 6), replace=False)
        grades = rng.randint(1, 3, size=len(relevant))  # graded: 1 or 2
        # A query near some of its relevant documents (not all: some rank low or beyond 100), plus noise.
        near = relevant[: max(1, len(relevant) // 2)]
        queries.append(docs[near].sum(axis=0) * rng.uniform(0.3, 1.5) + rng.standard_normal(DIM) * 0.6)
        qrels[query_id] = {doc_ids[j]: int(g) for j, g in zip(relevant, grades, strict=True)}
        judged_irrelevant = rng.choice(np.setdiff1d(np.arange(n_docs), relevant))
        qrels[query_id][doc_ids[judged_irrelevant]] = 0  # judged, not relevant
        if i == 0:
            qrels[query_id][doc_ids[int(np.argmax(docs @ queries[-1]))]] = 0  # the top hit judged irrelevant
    query_ids.append("q-none")  # judged, nothing relevant: 0 for every metric on both sides, and in the means
    queries.append(rng.standard_normal(DIM))
    qrels["q-none"] = {doc_ids[3]: 0}
    query_vectors = np.stack(queries)
    vectors = np.concatenate([query_vectors, docs])
    encoder = FixedEmbeddings({f"text of {i}": v for i, v in zip(query_ids + doc_ids, vectors, strict=True)})
    scores = (query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)) @ docs.T
    top = np.sort(scores, axis=1)[:, ::-1][:, :101]  # what decides the top 10 and the top 100
    assert np.all(np.diff(top, axis=1) < -1e-6)  # no (near) ties: the two tie-breaks never matter

    class Check(AbsTaskRetrieval):
        metadata = metadata("Retrieval", "Lm2vecCheckRetrieval", "ndcg_at_10")

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            split = RetrievalSplitData(
                queries=Dataset.from_list([{"id": q, "text": f"text of {q}"} for q in query_ids]),
                corpus=Dataset.from_list([{"id": d, "text": f"text of {d}"} for d in doc_ids]),
                relevant_docs=qrels,
                top_ranked=None,
            )
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    theirs = mteb_scores(Check(), encoder)
    task = RetrievalTask(
        name="retrieval",
        queries={q: f"text of {q}" for q in query_ids},
        corpus={d: f"text of {d}" for d in doc_ids},
        qrels={q: {d: float(r) for d, r in judged.items()} for q, judged in qrels.items()},
    )
    ours = task.evaluate(encoder)
    assert 0.1 < ours["ndcg_at_10"] < 0.9 and 0.1 < ours["mrr_at_10"] < 0.95 and ours["recall_at_100"] < 1
    assert ours["ndcg_at_10"] == pytest.approx(theirs["ndcg_at_10"], abs=5e-6)  # mteb rounds to 5 decimals
    assert ours["recall_at_100"] == pytest.approx(theirs["recall_at_100"], abs=5e-6)
    assert ours["mrr_at_10"] == pytest.approx(theirs["mrr_at_10"], abs=1e-9)

    # And pytrec_eval itself (trec_eval's ndcg_cut and recall), per query, on lm2vec's ranking, unrounded.
    import pytrec_eval

    from lm2vec.evaluation.tasks import ndcg_at_k, search

    ranked = search(encoder.embed([f"text of {q}" for q in query_ids]), docs.astype(np.float32), 100)
    run = {q: {doc_ids[j]: float(100 - rank) for rank, j in enumerate(ranked[i])} for i, q in enumerate(query_ids)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    for i, q in enumerate(query_ids):
        ours_ndcg = ndcg_at_k([doc_ids[j] for j in ranked[i]], {d: float(r) for d, r in qrels[q].items()}, 10)
        assert ours_ndcg == pytest.approx(per_query[q]["ndcg_cut_10"], abs=1e-9), q
    assert ours["recall_at_100"] == pytest.approx(np.mean([s["recall_100"] for s in per_query.values()]), abs=1e-9)


# --- classification --------------------------------------------------------------------------------------------
def test_classification_matches_mteb_on_the_whole_train_split() -> None:
    rng = np.random.RandomState(2)
    centroids = unit(rng, 3) * 1.2
    train_labels = np.repeat([0, 1, 2], [16, 14, 12])
    test_labels = rng.randint(0, 3, 45)
    train = centroids[train_labels] + rng.standard_normal((len(train_labels), DIM)) * 0.45
    test = centroids[test_labels] + rng.standard_normal((len(test_labels), DIM)) * 0.45
    train_texts, test_texts = [f"train-{i}" for i in range(len(train))], [f"test-{i}" for i in range(len(test))]
    encoder = FixedEmbeddings(dict(zip(train_texts + test_texts, np.concatenate([train, test]), strict=True)))

    class Check(AbsTaskClassification):
        metadata = metadata("Classification", "Lm2vecCheckClassification", "accuracy")
        evaluator_model = LogisticRegression(max_iter=1000)
        samples_per_label = 1000  # every training example, as lm2vec does
        n_experiments = 1

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            self.dataset = DatasetDict(
                {
                    "train": Dataset.from_dict({"text": train_texts, "label": train_labels.tolist()}),
                    "test": Dataset.from_dict({"text": test_texts, "label": test_labels.tolist()}),
                }
            )
            self.data_loaded = True

    theirs = mteb_scores(Check(), encoder)
    task = ClassificationTask(
        name="classification",
        texts=train_texts,
        labels=[str(label) for label in train_labels],
        test_texts=test_texts,
        test_labels=[str(label) for label in test_labels],
    )
    ours = task.evaluate(encoder)
    assert 0.5 < ours["accuracy"] < 1  # some mistakes, so the comparison means something
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-12)
    assert ours["f1_macro"] == pytest.approx(theirs["f1"], abs=1e-12)


# --- clustering ------------------------------------------------------------------------------------------------
def test_clustering_v_measure_matches_mteb_legacy_clustering() -> None:
    rng = np.random.RandomState(3)
    centroids = np.eye(DIM)[:4] * 3.0
    geometry = np.repeat(np.arange(4), 12)
    points = centroids[geometry] + rng.standard_normal((len(geometry), DIM)) * 0.3
    gold = geometry.copy()
    swapped = rng.choice(len(gold), 7, replace=False)
    gold[swapped] = (gold[swapped] + 1) % 4  # gold labels that are not quite the geometric clusters
    texts = [f"c-{i}" for i in range(len(points))]
    encoder = FixedEmbeddings(dict(zip(texts, points, strict=True)))

    class Check(AbsTaskClusteringLegacy):
        metadata = metadata("Clustering", "Lm2vecCheckClustering", "v_measure")

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            data = {"sentences": [texts], "labels": [gold.tolist()]}
            self.dataset = DatasetDict({"test": Dataset.from_dict(data)})
            self.data_loaded = True

    theirs = mteb_scores(Check(), encoder)
    ours = ClusteringTask(name="clustering", texts=texts, labels=[str(label) for label in gold]).evaluate(encoder)
    assert 0.3 < ours["v_measure"] < 0.95
    assert ours["v_measure"] == pytest.approx(theirs["v_measure"], abs=1e-12)


# --- bitext ----------------------------------------------------------------------------------------------------
def test_bitext_forward_direction_matches_mteb() -> None:
    rng = np.random.RandomState(4)
    n = 30
    sources = unit(rng, n)
    targets = sources + rng.standard_normal((n, DIM)) * 0.35  # some translations nearer another sentence
    source_texts, target_texts = [f"src-{i}" for i in range(n)], [f"tgt-{i}" for i in range(n)]
    encoder = FixedEmbeddings(dict(zip(source_texts + target_texts, np.concatenate([sources, targets]), strict=True)))

    class Check(AbsTaskBitextMining):
        metadata = metadata("BitextMining", "Lm2vecCheckBitext", "f1")

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            data = {"sentence1": source_texts, "sentence2": target_texts}
            self.dataset = DatasetDict({"test": Dataset.from_dict(data)})
            self.data_loaded = True

    theirs = mteb_scores(Check(), encoder)
    ours = BitextTask(name="bitext", sources=source_texts, targets=target_texts).evaluate(encoder)
    assert 0.3 < ours["accuracy_forward"] < 1
    assert ours["accuracy_forward"] == pytest.approx(theirs["accuracy"], abs=1e-12)
    assert ours["f1_forward"] == pytest.approx(theirs["f1"], abs=1e-12)
