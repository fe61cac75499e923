"""Bootstrap confidence intervals of evaluation scores: every task type's resamples, paired replicates across
models, the report's intervals and "within noise" verdicts, results.json without replicates, whole built-in tasks.

Fake encoders (hashed bags of words) stand in for models, so every test runs in seconds."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from lm2vec.evaluation.embedding_cache import CachedEncoder
from lm2vec.evaluation.registry import Registry
from lm2vec.evaluation.report import (
    differences_from_best,
    markdown_table,
    noise_comparison,
    paired_difference,
    write_report,
)
from lm2vec.evaluation.runner import ModelResult, Results, TaskResult, evaluate
from lm2vec.evaluation.specs import ModelSpec
from lm2vec.evaluation.tasks import (
    STSTask,
    TripletTask,
    bootstrap_draws,
    confidence_interval,
    correlation,
    v_measure,
)
from lm2vec.evaluation.word import WordSpanTask, WordTaggingTask
from tests.test_eval import BagOfWords, user_registry


class RandomVectors:
    """A useless encoder: a fixed random unit vector per text."""

    name = "random"

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        rows = [np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest(), 16)).normal(size=64) for t in texts]
        out = np.asarray(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class Spoiled(BagOfWords):
    """A bag of words that reads one text as another: it gets exactly one triplet more wrong."""

    def __init__(self, text: str, read_as: str) -> None:
        super().__init__()
        self.text, self.read_as = text, read_as

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        return super().embed([self.read_as if t == self.text else t for t in texts], instruction)


class WordIdentity:
    """Token states for word-level tasks: one token per word, its state a hashed one-hot of the word."""

    name = "word identity"

    def embed_tokens(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        pairs = []
        for text in texts:
            words = list(re.finditer(r"\S+", text))
            states = np.zeros((len(words), 32), dtype=np.float32)
            for row, word in enumerate(words):
                states[row, int(hashlib.md5(word.group().encode()).hexdigest(), 16) % 32] = 1
            pairs.append((np.asarray([word.span() for word in words]), states))
        return pairs


def triplets(n: int, name: str = "triplets") -> TripletTask:
    """`n` triplets, a bag of words gets three in four right: every fourth one's dissimilar text is its anchor."""
    anchors = [f"item{i} red car" for i in range(n)]
    return TripletTask(
        name=name,
        anchors=anchors,
        similar=[f"item{i} red car fast" for i in range(n)],
        dissimilar=[anchors[i] if i % 4 == 0 else f"blue boat {i}" for i in range(n)],
    )


def sts(n: int) -> STSTask:
    """`n` pairs whose gold scores follow the pairs' shared words, with every third score off."""
    words = "red car fast old green quiet loud small heavy bright".split()
    first = [" ".join(words[(i + j) % 10] for j in range(5)) for i in range(n)]
    second = [" ".join(words[(i + j) % 10] for j in range(i % 5, i % 5 + 5)) for i in range(n)]
    scores = [5 - i % 5 + (2 if i % 3 == 0 else 0) for i in range(n)]
    return STSTask(name="sts", sentences1=first, sentences2=second, scores=scores)


def encoder(name: str, model, cache_root: Path | None = None) -> CachedEncoder:
    return CachedEncoder(ModelSpec(name, "st:unused"), cache_root=cache_root, model=model, fingerprint=name)


def width(task, model) -> float:
    low, high = confidence_interval(task.score(model).replicates(task.name))
    return high - low


def test_the_resampled_metrics_equal_scipys_and_sklearns() -> None:
    """The bootstrap's own correlation and V-measure (theirs check their arguments on each of 1,000 calls)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import v_measure_score

    rng = np.random.default_rng(0)
    for size in (5, 40, 500):
        predicted, gold = rng.normal(size=size), rng.integers(0, 6, size).astype(float)  # ties among the gold
        assert correlation("spearman", predicted, gold) == pytest.approx(spearmanr(predicted, gold).statistic, 1e-12)
        assert correlation("pearson", predicted, gold) == pytest.approx(pearsonr(predicted, gold)[0], 1e-12)
    assert correlation("spearman", predicted, np.ones(size)) == 0.0
    for labels, clusters in [
        (rng.integers(0, 5, 300), rng.integers(0, 5, 300)),
        (np.repeat(np.arange(5), 20), np.repeat(np.arange(5), 20)),  # perfect
        (np.repeat(np.arange(5), 20), np.zeros(100, int)),  # one cluster
        (np.zeros(50, int), rng.integers(0, 3, 50)),  # one label
        (np.repeat([0, 1], 10), np.tile([0, 1], 10)),  # independent: no information
    ]:
        table = np.zeros((5, 5), int)
        np.add.at(table, (labels, clusters), 1)
        assert v_measure(table) == pytest.approx(v_measure_score(labels, clusters), abs=1e-12)


def test_the_interval_contains_the_score_and_shrinks_with_more_examples() -> None:
    for small, large in ((triplets(20), triplets(80)), (sts(20), sts(80))):
        for task in (small, large):
            scored = task.score(BagOfWords())
            low, high = confidence_interval(scored.replicates(task.name))
            assert low < scored.metrics[task.main_metric] < high, (task.name, task.size)
        assert width(large, BagOfWords()) < 0.7 * width(small, BagOfWords())
    assert triplets(20).evaluate(BagOfWords())["accuracy"] == 0.75


def word_tasks() -> list:
    words = [["the", "cat", "sat"], ["a", "dog", "ran", "home"], ["the", "red", "car"], ["a", "cat", "ran"]] * 3
    nouns = {"cat", "dog", "home", "car"}
    tags = [["NOUN" if w in nouns else "OTHER" for w in sentence] for sentence in words]
    spans = [["B-X" if w in nouns else "O" for w in sentence] for sentence in words]
    test_words = [["the", "dog", "sat"], ["a", "red", "home"], ["the", "cat", "ran", "home"], ["a", "car"]]
    test_tags = [["NOUN" if w in nouns else "OTHER" for w in sentence] for sentence in test_words]
    test_spans = [["B-X" if w in nouns or w == "red" else "O" for w in sentence] for sentence in test_words]
    return [
        WordTaggingTask(name="tags", words=words, tags=tags, test_words=test_words, test_tags=test_tags),
        WordSpanTask(name="spans", words=words, tags=spans, test_words=test_words, test_tags=test_spans),
    ]


def test_every_task_type_resamples_its_own_examples(tmp_path: Path) -> None:
    """Each type's per-example pieces give back its score on the examples as they are, and the bootstrap's
    interval contains it."""
    registry = Registry.from_files([user_registry(tmp_path)], include_builtin=False)
    tasks = [(registry.load(name), BagOfWords()) for name in registry.tasks]
    tasks += [(task, WordIdentity()) for task in word_tasks()]
    assert {task.type for task, _ in tasks} == {
        "sts",
        "classification",
        "clustering",
        "bitext",
        "triplets",
        "retrieval",
        "word-tagging",
        "word-spans",
    }
    for task, model in tasks:
        scored = task.score(model)
        score = scored.metrics[task.main_metric]
        assert scored.main_on(np.arange(scored.examples)) == pytest.approx(score), task.name
        assert scored.metrics == task.evaluate(model), task.name
        low, high = confidence_interval(scored.replicates(task.name))
        assert low < high or score in (0.0, 1.0), task.name  # only a perfect (or null) score has no spread
        # V-measure on a resample is biased up by its repeated examples: its 18 texts' interval lies above the score
        # (by 0.3 points on BBC's 2,225 articles)
        assert low <= score <= high or (task.type == "clustering" and score < low), (task.name, low, score, high)


def test_two_models_get_the_same_resamples_and_a_model_against_itself_differs_by_exactly_zero() -> None:
    first, again = bootstrap_draws("triplets", 30, 5), bootstrap_draws("triplets", 30, 5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(next(bootstrap_draws("sts", 30)), next(bootstrap_draws("triplets", 30)))
    models = [encoder("bag", BagOfWords()), encoder("the same bag", BagOfWords())]
    results = evaluate(models, [triplets(40), sts(30)], progress=False)
    best, differences = differences_from_best(results)
    assert best == "bag" and [d.model for d in differences] == ["the same bag"]
    assert (differences[0].difference, differences[0].interval) == (0.0, (0.0, 0.0))
    assert differences[0].within_noise


def test_a_paired_difference_either_way_round_is_the_mirror_image() -> None:
    task = triplets(60)
    models = [encoder("bag", BagOfWords()), encoder("random", RandomVectors())]
    results = evaluate(models, [task, sts(30)], progress=False)
    forward = paired_difference(results, "bag", "random", ["triplets", "sts"])
    backward = paired_difference(results, "random", "bag", ["triplets", "sts"])
    assert forward.difference == pytest.approx(-backward.difference) and forward.difference > 0
    assert forward.interval == pytest.approx((-backward.interval[1], -backward.interval[0]))
    one_task = paired_difference(results, "bag", "random", ["triplets"])
    scores = {m: results.models[m].results["triplets"].main_score for m in ("bag", "random")}
    assert one_task.difference == pytest.approx(scores["bag"] - scores["random"])
    assert one_task.interval[0] <= one_task.difference <= one_task.interval[1]


def test_a_clearly_better_model_is_beyond_noise_and_a_near_identical_one_within() -> None:
    task = triplets(60)
    near = Spoiled(task.anchors[1], task.dissimilar[1])  # triplet 1 wrong, the 45 others right as the bag's
    models = [encoder("bag", BagOfWords()), encoder("random", RandomVectors()), encoder("near", near)]
    results = evaluate(models, [task], progress=False)
    assert results.models["near"].results["triplets"].main_score == pytest.approx(0.75 - 1 / 60)
    best, differences = differences_from_best(results)
    verdicts = {d.model: d.within_noise for d in differences}
    assert best == "bag" and verdicts == {"random": False, "near": True}
    rows = {line.split(" | ")[0][2:]: line for line in noise_comparison(results).splitlines()[3:]}
    assert rows["random"].startswith("| random | +") and rows["random"].endswith("| beyond noise |")
    assert rows["near"].startswith("| near | +1.7 | [0.0, ") and rows["near"].endswith("| within noise |")


def test_the_markdown_shows_each_average_with_its_interval(tmp_path: Path) -> None:
    models = [encoder("bag", BagOfWords()), encoder("random", RandomVectors())]
    results = evaluate(models, [triplets(40), sts(30)], progress=False)
    replicates = [results.models["bag"].results[t].replicate_scores() for t in ("triplets", "sts")]
    assert all(len(r) == 1000 for r in replicates)
    low, high = confidence_interval(np.mean(replicates, axis=0))
    table = markdown_table(results)
    assert "average | 95% interval |" in table.splitlines()[0]
    average = np.mean([results.models["bag"].results[t].main_score for t in ("triplets", "sts")])
    assert f"| **{100 * average:.1f}** | [{100 * low:.1f}, {100 * high:.1f}] |" in table
    report = write_report(results, tmp_path / "report")["markdown"].read_text()
    assert table in report and noise_comparison(results) in report
    low, high = results.models["bag"].results["triplets"].interval
    assert f"| bag | ±{100 * (high - low) / 2:.1f} |" in report  # the tasks' half-widths
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert len(json.dumps(saved["models"]["bag"]["results"]["sts"])) < 4000  # a few KB a task and model
    assert Results.load(tmp_path / "report" / "results.json").models["bag"].results["sts"].interval == pytest.approx(
        results.models["bag"].results["sts"].interval
    )


def test_results_without_intervals_still_load_and_say_so(tmp_path: Path) -> None:
    """results.json as lm2vec wrote it before the bootstrap: no interval, no replicates."""
    result = {"type": "triplets", "main_metric": "accuracy", "metrics": {"accuracy": 0.5}, "seconds": 0.1, "size": 4}
    old = {
        "format": "lm2vec-eval-results",
        "tasks": {"t": {"type": "triplets", "main_metric": "accuracy", "size": 4, "language": "en", "description": ""}},
        "models": {
            name: {
                "name": name,
                "spec": f"{name}=x",
                "fingerprint": name,
                "results": {"t": {"task": "t", **result, "main_score": score}},
                "encoded_texts": 4,
                "cache_hits": 0,
                "seconds": 0.1,
            }
            for name, score in (("a", 0.75), ("b", 0.5))
        },
    }
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "results.json").write_text(json.dumps(old))
    results = Results.load(tmp_path / "report" / "results.json")
    assert results.models["a"].results["t"].interval is None
    assert results.models["a"].results["t"].replicate_scores() is None
    assert "| a | **75.0** | **75.0** | – |" in markdown_table(results)
    assert "| b | +25.0 | – | no interval |" in noise_comparison(results)
    assert "| a | **75.0** |" in write_report(results, tmp_path / "report")["markdown"].read_text()


def test_a_second_run_of_the_same_model_encodes_nothing(tmp_path: Path) -> None:
    tasks = [triplets(12), sts(10)]
    first = evaluate([encoder("bag", BagOfWords(), tmp_path)], tasks, progress=False)
    model = BagOfWords()
    second = evaluate([encoder("bag", model, tmp_path)], tasks, progress=False)
    assert first.models["bag"].encoded_texts > 0 and second.models["bag"].encoded_texts == 0 and not model.calls
    for task in tasks:
        before, after = first.models["bag"].results[task.name], second.models["bag"].results[task.name]
        assert (after.main_score, after.interval, after.replicates) == (
            before.main_score,
            before.interval,
            before.replicates,
        )


def test_the_english_bbc_tasks_take_every_article() -> None:
    registry = Registry.builtin()
    for name in ("bbc-classification", "bbc-clustering"):
        assert "limit" not in registry.tasks[name] and "2,225" in registry.tasks[name]["description"]
        assert registry.load(name).size == 2225


def test_word_level_tasks_are_averaged_apart_from_sentence_level_ones() -> None:
    """A report of both kinds: "average" is the sentence-level tasks', "word average" the probes'."""

    def result(task: str, kind: str, score: float) -> TaskResult:
        return TaskResult(task, kind, "accuracy", score, {"accuracy": score}, 0.1, 10)

    kinds = {"sts": "sts", "pos": "word-tagging", "ner": "word-spans"}
    scores = {"a": {"sts": 0.9, "pos": 0.5, "ner": 0.3}, "b": {"sts": 0.7, "pos": 0.8, "ner": 0.6}}
    results = Results(
        models={
            model: ModelResult(model, model, model, {t: result(t, kinds[t], s) for t, s in by_task.items()})
            for model, by_task in scores.items()
        },
        tasks={t: {"type": kind, "main_metric": "accuracy", "size": 10} for t, kind in kinds.items()},
    )
    table = markdown_table(results)
    assert "| average | word average | 95% interval |" in table.splitlines()[0]
    assert "| a | **90.0** | 50.0 | 30.0 | **90.0** | 40.0 | – |" in table
    assert "| b | 70.0 | **80.0** | **60.0** | 70.0 | **70.0** | – |" in table
    assert differences_from_best(results)[0] == "a"  # the best sentence-level average, not the best of all tasks
    word_only = Results(
        models={m: ModelResult(m, m, m, {"pos": r.results["pos"]}) for m, r in results.models.items()},
        tasks={"pos": results.tasks["pos"]},
    )
    assert "| model | pos (accuracy) | average | 95% interval |" in markdown_table(word_only)
