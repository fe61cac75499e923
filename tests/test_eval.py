"""lm2vec.evaluation without real models: readers and their errors, metrics, registry, cache, report, manifests.

A bag-of-words hashing encoder stands in for a model, so metrics can be checked on real data in milliseconds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
import tomllib
from pathlib import Path

import numpy as np
import pytest

from lm2vec.data import formats
from lm2vec.data.packaged import (
    LIBREOFFICE_MESSAGES,
    bbc_dir,
    conll2003_dir,
    debian_package,
    gensim_data_dir,
    stsb_dir,
)
from lm2vec.evaluation.datasets import mo_prefix_triplets
from lm2vec.evaluation.embedding_cache import CachedEncoder, spec_fingerprint
from lm2vec.evaluation.errors import EvalConfigError, EvalDataError
from lm2vec.evaluation.registry import BUILTIN_REGISTRY, Registry, build_task
from lm2vec.evaluation.report import markdown_table, resolve_models, run_specs, write_chart, write_report
from lm2vec.evaluation.runner import Results, evaluate
from lm2vec.evaluation.specs import ModelSpec
from lm2vec.evaluation.tasks import (
    BitextTask,
    ClassificationTask,
    RetrievalTask,
    STSTask,
    TripletTask,
    ndcg_at_k,
    search,
)


class BagOfWords:
    """Hashed word counts, L2-normalised: a cheap encoder whose quality is known to be well above chance."""

    name = "bag-of-words"

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim
        self.calls: list[tuple[int, str | None]] = []

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        self.calls.append((len(texts), instruction))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1
        out[:, 0] += 1e-3  # no zero vectors
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_mo(path: Path, entries: dict[str, str]) -> Path:
    """A compiled gettext catalogue (the GNU .mo layout, no hash table)."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", **entries}
    keys = sorted(entries)
    ids = [k.encode() for k in keys]
    strs = [entries[k].encode() for k in keys]
    n = len(keys)
    start = 7 * 4 + 16 * n
    offsets, blob = [], b""
    for data in ids + strs:
        offsets.append((len(data), start + len(blob)))
        blob += data + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    tables = b"".join(struct.pack("<2I", *o) for o in offsets)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + tables + blob)
    return path


# --- readers ---------------------------------------------------------------------------------------------------
def test_stsb_real_dev_set() -> None:
    data = formats.read_sts(stsb_dir() / "sts-dev.csv")
    assert len(data.scores) == 1500
    assert data.scores[0] == 5.0 and data.sentences1[0] == "A man with a hard hat is dancing."
    assert all(0 <= s <= 5 for s in data.scores)


def test_stsb_format_keeps_quotes_and_ignores_licence_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "sts.csv",
        'main-news\theadlines\t2015\t0001\t3.2\tHe said "no".\tHe refused.\tsource: ccby\textra\n'
        "main-news\theadlines\t2015\t0002\t0.5\tA cat.\tA car.\n",
    )
    data = formats.read_sts(path)
    assert data.sentences1 == ['He said "no".', "A cat."] and data.scores == [3.2, 0.5]


def test_tsv_and_jsonl_sts(tmp_path: Path) -> None:
    tsv = formats.read_sts(write(tmp_path / "a.tsv", "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\n"))
    jsonl = formats.read_sts(write(tmp_path / "a.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\n'))
    assert tsv.scores == [1.0, 2.0] and jsonl.sentences2 == ["b"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", "g\tf\t2012\t1\t4.0\ta\tb\ng\tf\t2012\t2\tfive\ta\tb\n", r"bad.csv:2: gold score 'five' is not"),
        ("short.csv", "g\tf\t2012\t1\t4.0\ta\n", r"short.csv:1: expected at least 7 tab-separated columns"),
        ("nan.tsv", "a\tb\tnan\n", r"nan.tsv:1: gold score 'nan' is not a finite number"),
        ("empty.tsv", "\n\n", r"empty.tsv: no examples"),
        ("two.tsv", "a\tb\t1\nonly one column\n", r"two.tsv:2: expected 3 tab-separated columns"),
        (
            "bad.jsonl",
            '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "a"}\n',
            r"bad.jsonl:2: missing",
        ),
        ("broken.jsonl", '{"sentence1": \n', r"broken.jsonl:1: not valid JSON"),
    ],
)
def test_bad_sts_files_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(EvalDataError, match=message):
        formats.read_sts(write(tmp_path / name, content))


def test_missing_files_and_mismatched_counts(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match=r"nowhere.tsv: file not found"):
        formats.read_sts(tmp_path / "nowhere.tsv")
    source, target = write(tmp_path / "en.txt", "a\nb\nc\n"), write(tmp_path / "bg.txt", "а\nб\n")
    with pytest.raises(EvalDataError, match=r"en.txt: 3 source lines but 2 target lines"):
        formats.read_pairs(source, target_path=target)
    docs, scores = write(tmp_path / "docs.txt", "x\ny\n"), write(tmp_path / "m.txt", "1 0.5\n0.5 1\n0 0\n")
    with pytest.raises(EvalDataError, match=r"m.txt: 3 rows of scores for 2 documents"):
        formats.read_sts_matrix(docs, scores)
    with pytest.raises(EvalDataError, match=r"task 'x': mismatched counts \(2 sentences1, 1 sentences2, 1 scores\)"):
        STSTask(name="x", sentences1=["a", "b"], sentences2=["c"], scores=[1.0])
    with pytest.raises(EvalDataError, match="has no examples"):
        TripletTask(name="empty", anchors=[], similar=[], dissimilar=[])


def test_beir_folder_and_its_errors(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    write(
        folder / "corpus.jsonl",
        '{"_id": "d1", "title": "Faust", "text": "A play by Goethe."}\n{"_id": "d2", "text": "Bread is baked."}\n',
    )
    write(folder / "queries.jsonl", '{"_id": "q1", "text": "who wrote faust"}\n')
    write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    data = formats.read_beir(folder)
    assert data.corpus["d1"] == "Faust. A play by Goethe." and data.qrels == {"q1": {"d1": 1.0}}
    write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(EvalDataError, match=r"test.tsv:2: document id 'd9' is not in"):
        formats.read_beir(folder)


def test_labelled_texts_from_a_folder_and_tsv(tmp_path: Path) -> None:
    bbc = formats.read_labelled(bbc_dir(), "folder")
    assert len(bbc.texts) == 2225 and sorted(set(bbc.labels)) == [
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    ]
    data = formats.read_labelled(write(tmp_path / "l.tsv", "text\tlabel\nhello\tgreeting\n"))
    assert data.texts == ["hello"] and data.labels == ["greeting"]


def test_mo_catalogues_give_pairs_and_prefix_triplets(tmp_path: Path) -> None:
    write_mo(
        tmp_path / "a.mo",
        {
            "ctx\x04Delete the ~selected rows now": "Изтриване на ~избраните редове сега",
            "Delete the selected columns now": "Изтриване на избраните колони сега",
            "Short": "Кратко",
        },
    )
    write_mo(tmp_path / "b.mo", {"Delete the selected rows now": "Изтрийте маркираните редове сега"})
    assert formats.read_mo_pairs(tmp_path) == [
        ("Delete the selected columns now", "Изтриване на избраните колони сега"),
        ("Delete the selected rows now", "Изтриване на избраните редове сега"),
    ]
    anchors, similar, dissimilar = mo_prefix_triplets(tmp_path)
    assert anchors == ["Изтриване на избраните редове сега"]
    assert similar == ["Изтрийте маркираните редове сега"]
    assert dissimilar == ["Изтриване на избраните колони сега"]  # shares three words with the anchor
    with pytest.raises(EvalDataError, match="no .mo files"):
        formats.read_mo_pairs((tmp_path / "empty").mkdir() or tmp_path / "empty")


# --- metrics -------------------------------------------------------------------------------------------------------
def test_search_exact_matches_faiss_and_ndcg_by_hand() -> None:
    rng = np.random.default_rng(0)
    queries, documents = rng.normal(size=(7, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(np.float32)
    exact = search(queries, documents, 10, chunk=3)
    assert np.array_equal(exact, search(queries, documents, 10, use_faiss=True))
    assert np.array_equal(exact[:, 0], np.argmax(queries @ documents.T, axis=1))
    assert ndcg_at_k(["a", "b"], {"b": 1.0}, 10) == pytest.approx(1 / np.log2(3))
    assert ndcg_at_k(["b", "a"], {"b": 1.0, "a": 1.0}, 10) == 1.0


def test_tasks_with_a_bag_of_words_encoder() -> None:
    encoder = BagOfWords()
    sts = STSTask(
        name="sts",
        sentences1=["a red car", "a red car", "dogs bark"],
        sentences2=["a red car", "a car", "stock prices fell"],
        scores=[5, 3, 0],
    )
    assert sts.evaluate(encoder)["spearman"] == pytest.approx(1.0)
    retrieval = RetrievalTask(
        name="r",
        queries={"q": "goethe faust"},
        corpus={"d1": "bread", "d2": "Faust by Goethe"},
        qrels={"q": {"d2": 1}},
        instruction="Retrieve",
    )
    assert retrieval.evaluate(encoder) == {"ndcg_at_10": 1.0, "recall_at_100": 1.0, "mrr_at_10": 1.0}
    assert ("Retrieve", None) == (encoder.calls[-2][1], encoder.calls[-1][1])  # queries get the instruction only
    bitext = BitextTask(name="b", sources=["one two", "three four", "five"], targets=["one two", "five", "three four"])
    assert bitext.evaluate(encoder)["accuracy"] == 1 / 3
    triplets = TripletTask(name="t", anchors=["red car fast"], similar=["fast red car"], dissimilar=["red apple"])
    assert triplets.evaluate(encoder)["accuracy"] == 1.0


def test_headline_retrieval_metrics_by_hand(tmp_path: Path) -> None:
    # Two articles share the headline "Red car" (both relevant to it); "Car phone"'s own body ranks third for it:
    # cosines 1/2 ("red car"), 1/sqrt(6) ("red car race"), 1/sqrt(20) ("phone is is is").
    write(tmp_path / "motoring" / "1.txt", "Red car\n\nred car")
    write(tmp_path / "motoring" / "2.txt", "Red car\n\nred car race\n")
    write(tmp_path / "tech" / "3.txt", "Car phone\n\nphone is is is")
    write(tmp_path / "tech" / "4.txt", "A headline without a body")
    task = build_task("news", {"type": "retrieval", "format": "headlines", "path": "."}, tmp_path)
    assert task.queries == {"q0": "Red car", "q1": "Car phone"} and len(task.corpus) == 3
    assert task.qrels == {"q0": {"d0": 1.0, "d1": 1.0}, "q1": {"d2": 1.0}}
    metrics = task.evaluate(BagOfWords(2048))
    assert metrics["ndcg_at_10"] == pytest.approx((1 + 1 / np.log2(4)) / 2)
    assert metrics["mrr_at_10"] == pytest.approx((1 + 1 / 3) / 2)
    assert metrics["recall_at_100"] == 1.0


def test_real_data_tasks_score_well_above_chance() -> None:
    registry = Registry.builtin()
    encoder = BagOfWords(2048)
    assert registry.load("bbc-classification", limit=100).evaluate(encoder)["accuracy"] > 0.6
    assert registry.load("bbc-clustering", limit=100).evaluate(encoder)["v_measure"] > 0.1
    lee = registry.load("lee-similarity")
    assert lee.size == 1225 and lee.evaluate(encoder)["pearson"] > 0.1
    headlines = registry.load("bbc-headline-retrieval")
    assert (headlines.size, len(headlines.corpus)) == (2096, 2225)
    assert max(map(len, headlines.corpus.values())) <= 300 and headlines.evaluate(encoder)["ndcg_at_10"] > 0.3
    bg = registry.load("bg-wiki-sentence-retrieval")
    assert bg.language == "bg" and bg.size > 20 and bg.evaluate(encoder)["ndcg_at_10"] > 0.5


def test_classification_on_a_given_split_and_too_few_examples() -> None:
    task = ClassificationTask(
        name="c",
        texts=["good film", "bad film", "great film", "awful film"],
        labels=["+", "-", "+", "-"],
        test_texts=["great"],
        test_labels=["+"],
    )
    assert task.evaluate(BagOfWords())["accuracy"] == 1.0
    lonely = ClassificationTask(name="c", texts=["a", "b", "c"], labels=["x", "y", "y"])
    with pytest.raises(EvalDataError, match="a label has a single example"):
        lonely.evaluate(BagOfWords())


# --- registry --------------------------------------------------------------------------------------------------
def test_registry_from_toml_with_relative_paths(tmp_path: Path) -> None:
    write(tmp_path / "data" / "pairs.tsv", "a red car\ta red car\t5\na red car\tbread\t0\nbread\tbread rolls\t4\n")
    toml = write(
        tmp_path / "tasks.toml",
        '[suites]\nmine = ["pairs"]\n\n[tasks.pairs]\ntype = "sts"\n'
        'path = "data/pairs.tsv"\nmetric = "pearson"\ninstruction = "Same?"\n',
    )
    registry = Registry.from_files([toml])
    assert registry.select(["mine", "english"])[:2] == ["pairs", "stsb-dev"]
    task = registry.load("pairs")
    assert task.main_metric == "pearson" and task.instruction == "Same?" and task.size == 3


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[tasks.x]\ntype = "sts"\npath = "a"\ncolour = "red"\n', "unknown key"),
        ('[tasks.x]\ntype = "poetry"\npath = "a"\n', "type must be one of"),
        (
            '[tasks.x]\ntype = "clustering"\npath = "a"\ntest_path = "b"\n',
            "unknown key.s. test_path for type 'clustering'; it takes type, path, .*, description, max_chars$",
        ),
        ('[tasks.x]\ntype = "sts"\n', "'path' is required"),
        ('[suites]\ns = ["nope"]\n', "unknown task"),
        ("[tasks.x\n", "not valid TOML"),
    ],
)
def test_bad_registries(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(EvalConfigError, match=message):
        Registry.from_files([write(tmp_path / "t.toml", toml)])


def test_bad_metric_and_placeholder(tmp_path: Path) -> None:
    write(tmp_path / "p.tsv", "a\tb\t1\nc\td\t2\n")
    with pytest.raises(EvalDataError, match="metric 'ndcg' is not one of spearman, pearson"):
        build_task("x", {"type": "sts", "path": "p.tsv", "metric": "ndcg"}, tmp_path)
    with pytest.raises(EvalDataError, match="unknown placeholder"):
        build_task("x", {"type": "sts", "path": "${nowhere}/p.tsv"}, tmp_path)


def test_builtin_english_suite_loads_subsets() -> None:
    registry = Registry.builtin()
    names = registry.select(["english"])
    assert names == ["stsb-dev", "lee-similarity", "bbc-classification", "bbc-clustering", "bbc-headline-retrieval"]
    try:
        registry.load("stsb-dev", limit=50)
    except EvalDataError:  # ../shared/data/stsb is not in every checkout; the packaged tasks still load
        names = names[1:]
    tasks = [registry.load(name, limit=50) for name in names]
    assert [t.type for t in tasks][-4:] == ["sts", "classification", "clustering", "retrieval"]
    retrieval = tasks[-1]  # 50 headlines against their articles and distractors: 3 documents per query
    assert retrieval.size == 50 and len(retrieval.corpus) == 150
    assert {doc for docs in retrieval.qrels.values() for doc in docs} <= set(retrieval.corpus)
    bbc = tasks[2]
    assert bbc.size == 50 and len(set(bbc.labels)) == 5 and max(len(t) for t in bbc.texts) <= 600
    assert gensim_data_dir().is_dir()


# The examples and settings of every built-in task (all its fields but `source`, the path on this machine), as the
# registry loaded them before its tasks moved to TOML and built themselves: (the registry's own subset, limit=7).
# Changed on purpose since: the BBC tasks take every article, the word tasks 300 train and 300 test sentences.
BUILTIN_DIGESTS = {
    "stsb-dev": ("5714873fe76c1737", "a4982263ceecb441"),
    "lee-similarity": ("4c0dd521e76d8f7f", "e636009093325aee"),
    "bbc-classification": ("ece8d75c91df53ab", "72382d08b2bc260d"),
    "bbc-clustering": ("f032837cc584c598", "78107d0f0f4920c9"),
    "bbc-headline-retrieval": ("ce1191caf39974d0", "b53832ab7062da38"),
    "en-bg-libreoffice-bitext": ("7a659393bdc2bfda", "4545810d8327da9f"),
    "bg-libreoffice-prefix-triplets": ("e0798fe82be271a2", "40a1a76346de6682"),
    "bg-wiki-sentence-retrieval": ("36b1def7400298b3", "e4bf24cb6104d089"),
    "conll2003-pos": ("8894c6b68ffd3f14", "f575261398d589df"),
    "conll2003-chunk": ("ef9406036ca119ff", "dc6ad46a60e0e5cb"),
    "conll2003-ner": ("494fb8a5a057262e", "82caef58df30f855"),
}
# The Debian package the LibreOffice tasks' digests were recorded from; another version holds other strings.
LIBREOFFICE_BG = "4:7.4.7-1+deb12u14"


def task_digest(task) -> str:
    fields = dataclasses.asdict(task) | {"type": task.type}
    del fields["source"]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()[:16]


def test_every_builtin_task_has_a_recorded_digest_and_ships_in_the_wheel() -> None:
    assert list(BUILTIN_DIGESTS) == list(Registry.builtin().tasks)
    root = Path(__file__).resolve().parents[1]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert BUILTIN_REGISTRY.match(f"lm2vec/evaluation/{package_data['lm2vec.evaluation'][0]}")


@pytest.mark.parametrize("name", list(BUILTIN_DIGESTS))
def test_builtin_tasks_load_the_examples_they_always_did(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LM2VEC_STSB", raising=False)  # the shipped STS Benchmark, not another copy
    if "libreoffice" in name:
        version = debian_package("libreoffice-l10n-bg", LIBREOFFICE_MESSAGES.format(lang="bg"))[1]["version"]
        if version != LIBREOFFICE_BG:
            pytest.skip(f"digests recorded from libreoffice-l10n-bg {LIBREOFFICE_BG}, this machine has {version}")
    if name.startswith("conll2003"):
        try:
            conll2003_dir()
        except EvalDataError as error:  # the pinned wheel, fetched with pip
            pytest.skip(f"CoNLL-2003 could not be fetched: {error}")
    registry = Registry.builtin()
    assert (task_digest(registry.load(name)), task_digest(registry.load(name, limit=7))) == BUILTIN_DIGESTS[name]


USER_TASKS = """
[tasks.pairs]
type = "sts"
path = "pairs.tsv"
max_chars = 12
metric = "pearson"

[tasks.topics]
type = "classification"
path = "topics.jsonl"
test_path = "topics-test.jsonl"
max_chars = 12

[tasks.topics-in-folds]
type = "classification"
format = "tsv"
path = "topics.tsv"
folds = 3

[tasks.groups]
type = "clustering"
path = "topics.tsv"
max_chars = 9

[tasks.parallel]
type = "bitext"
path = "en.txt"
target_path = "bg.txt"
language = "bg"

[tasks.catalogue]
type = "bitext"
format = "mo"
path = "mo"
min_words = 2

[tasks.prefixes]
type = "triplets"
format = "mo-prefix-triplets"
path = "mo"
min_words = 2

[tasks.triples]
type = "triplets"
path = "triplets.jsonl"

[tasks.faq]
type = "retrieval"
path = "faq"
split = "dev"
max_chars = 15
instruction = "Find the answer"
"""
# As BUILTIN_DIGESTS, for the tasks above: (all examples, limit=3), recorded before task types built themselves.
USER_DIGESTS = {
    "pairs": ("c03931cae3e07a29", "76ec208b1d9b0dc2"),
    "topics": ("aaf718bc1626a39e", "9bfc3ec204a4e3bf"),
    "topics-in-folds": ("1be0dccf14fccdbe", "65c70807356b9ab9"),
    "groups": ("fb25dee1ba37d5e1", "34b22970ef4c277e"),
    "parallel": ("49dba8003a8ca0f4", "20b879a057499dbe"),
    "catalogue": ("1fa9dcf9d9189f8d", "a79a8d0fe287dddd"),
    "prefixes": ("8f991254586a3509", "e1f0c044da4868c3"),
    "triples": ("af6ff7017a526317", "4f9483de64b04d0c"),
    "faq": ("7ca493c5c6273324", "999e4b56e4c60991"),
}


def user_registry(folder: Path) -> Path:
    """USER_TASKS and their data: a task of every type, reading every key of its type."""

    def jsonl(records) -> str:
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)

    words = ["red", "fast", "old", "green", "quiet", "loud", "small", "heavy"]
    labels = [label for label in ("cars", "food", "music") for _ in range(6)]
    texts = [f"{words[i % 6]} {label} and {words[(i % 6 * 3) % 8]} {label} {i % 6}" for i, label in enumerate(labels)]
    pairs = zip(texts[:-3], texts[3:], strict=True)
    write(folder / "pairs.tsv", "".join(f"{a}\t{b}\t{i % 5}\n" for i, (a, b) in enumerate(pairs)))
    topics = [{"text": t, "label": label} for t, label in zip(texts, labels, strict=True)]
    write(folder / "topics.jsonl", jsonl(topics[::2]))  # the train split; the test split is the odd examples
    write(folder / "topics-test.jsonl", jsonl(topics[1::2]))
    write(folder / "topics.tsv", "".join(f"{t}\t{label}\n" for t, label in zip(texts, labels, strict=True)))
    write(folder / "en.txt", "".join(f"{t}\n" for t in texts))
    write(folder / "bg.txt", "".join(f"{t[::-1]}\n" for t in texts))
    sources = [f"Open item {words[i]} in the list" for i in range(6)]
    write_mo(folder / "mo" / "a.mo", {source: f"Отвори елемент {i} от списъка" for i, source in enumerate(sources)})
    write_mo(folder / "mo" / "b.mo", {source: f"Отваряне на елемент {i}" for i, source in enumerate(sources)})
    triplets = zip(texts[:12], texts[1:13], texts[6:], strict=True)
    write(folder / "triplets.jsonl", jsonl({"anchor": a, "similar": b, "dissimilar": c} for a, b, c in triplets))
    titles = [label if i % 2 else "" for i, label in enumerate(labels)]
    write(
        folder / "faq" / "corpus.jsonl",
        jsonl({"_id": f"d{i}", "title": titles[i], "text": t} for i, t in enumerate(texts)),
    )
    write(folder / "faq" / "queries.jsonl", jsonl({"_id": f"q{i}", "text": f"which {words[i]} one"} for i in range(8)))
    qrels = "".join(f"q{i}\td{(i * 5) % 18}\t{1 + i % 2}\nq{i}\td{(i * 7) % 18}\t1\n" for i in range(8))
    write(folder / "faq" / "qrels" / "dev.tsv", "query-id\tcorpus-id\tscore\n" + qrels)
    return write(folder / "tasks.toml", USER_TASKS)


def test_user_registries_load_the_examples_they_always_did(tmp_path: Path) -> None:
    registry = Registry.from_files([user_registry(tmp_path)], include_builtin=False)
    loaded = {
        name: (task_digest(registry.load(name)), task_digest(registry.load(name, limit=3))) for name in registry.tasks
    }
    assert loaded == USER_DIGESTS


# --- cache and specs -------------------------------------------------------------------------------------------
def test_model_specs() -> None:
    spec = ModelSpec.parse("after simcse=out/base,adapters=out/mntp+out/simcse,pooling=mean,causal,max_length=128")
    assert (spec.name, spec.source, spec.adapters, spec.pooling, spec.bidirectional, spec.max_length) == (
        "after simcse",
        "out/base",
        ("out/mntp", "out/simcse"),
        "mean",
        False,
        128,
    )
    assert ModelSpec.parse(spec.describe()) == spec
    assert ModelSpec.parse("pkg:smollm2").name == "pkg:smollm2"
    echo = ModelSpec.parse("echo=pkg:smollm2,causal,template=echo")
    assert echo.template == "echo" and ModelSpec.parse(echo.describe()) == echo
    with pytest.raises(EvalConfigError, match="unknown option 'colour=red'"):
        ModelSpec.parse("x=pkg:smollm2,colour=red")
    with pytest.raises(EvalConfigError, match="template 'echoes'"):
        ModelSpec.parse("x=pkg:smollm2,template=echoes")
    with pytest.raises(EvalConfigError, match="name cannot contain a comma.*'after SimCSE 20% pruned=pkg:smollm2'"):
        ModelSpec.parse("after SimCSE, 20% pruned=pkg:smollm2,pooling=mean")
    with pytest.raises(EvalConfigError, match="unknown option 'colour=red'"):  # a spec without a name
        ModelSpec.parse("pkg:smollm2,colour=red")


def test_cache_encodes_each_text_set_once(tmp_path: Path, tiny_llama: Path) -> None:
    spec = ModelSpec("tiny", str(tiny_llama))
    fake = BagOfWords()
    first = CachedEncoder(spec, cache_root=tmp_path, model=fake)
    a = first.embed(["x y", "z", "x y"], "inst")
    assert fake.calls == [(2, "inst")]  # duplicates encoded once
    first.embed(["x y", "z", "x y"], "inst")
    assert len(fake.calls) == 1 and first.hits == 1
    second = CachedEncoder(spec, cache_root=tmp_path, model=BagOfWords())
    assert np.array_equal(second.embed(["x y", "z", "x y"], "inst"), a) and second.misses == 0  # from disk
    second.embed(["x y", "z", "x y"], None)
    assert second.misses == 1  # another instruction, another text set
    fingerprints = {
        spec_fingerprint(s)
        for s in (
            spec,
            ModelSpec("other name", str(tiny_llama)),
            ModelSpec("t", str(tiny_llama), pooling="last_token"),
            ModelSpec("t", str(tiny_llama), bidirectional=False),
            ModelSpec("t", str(tiny_llama), template="echo"),
            ModelSpec("t", str(tiny_llama), template="{text} {text}"),
        )
    }
    assert len(fingerprints) == 4  # the name does not matter, pooling, attention and the text template do
    assert spec_fingerprint(ModelSpec("t", os.path.relpath(tiny_llama))) == spec_fingerprint(spec)  # either path
    assert spec_fingerprint(ModelSpec("t", str(tiny_llama), template="{text}")) == spec_fingerprint(spec)
    weights = next(tiny_llama.glob("*.safetensors"))
    before = spec_fingerprint(spec)
    weights.touch()
    assert spec_fingerprint(spec) != before  # retrained weights are never served from the cache


# --- runs and the report ---------------------------------------------------------------------------------------
def test_run_manifest_gives_baselines_and_stages(tmp_path: Path) -> None:
    for stage in ("mntp", "simcse"):
        write(tmp_path / stage / "adapter" / "adapter_config.json", "{}")
    write(
        tmp_path / "stages.json",
        '{"base": "pkg:smollm2", "pooling": "mean", "stages": ['
        '{"name": "after MNTP", "adapters": ["mntp/adapter"]},'
        '{"name": "after SimCSE", "adapters": ["mntp/adapter", "simcse/adapter"]}]}',
    )
    specs = run_specs(tmp_path)
    assert [s.name for s in specs] == [
        "causal last-token",
        "causal mean",
        "causal echo",
        "causal PromptEOL",
        "bidirectional untrained",
        "after MNTP",
        "after SimCSE",
    ]
    assert specs[0].pooling == "last_token" and specs[0].bidirectional is False and specs[4].bidirectional
    assert (specs[2].template, specs[2].pooling, specs[3].template, specs[3].pooling) == (
        "echo",
        "mean",
        "prompteol",
        "last_token",
    )
    assert specs[6].adapters == (str(tmp_path / "mntp/adapter"), str(tmp_path / "simcse/adapter"))
    everything = resolve_models([str(tmp_path), "extra=pkg:smollm2,causal"])
    assert everything[-1].source == "ref:all-minilm-l6-v2" and everything[-2].name == "extra"
    with pytest.raises(EvalConfigError, match="several models are named causal mean"):
        resolve_models([str(tmp_path), "causal mean=pkg:smollm2"])
    write(tmp_path / "bad" / "stages.json", '{"stages": []}')
    with pytest.raises(EvalConfigError, match="needs 'base'"):
        run_specs(tmp_path / "bad")


def test_report_table_and_chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = [
        STSTask(name="sts", sentences1=["a b", "c d", "e"], sentences2=["a b", "c x", "f"], scores=[5, 2, 0]),
        TripletTask(name="trip", anchors=["a b c"], similar=["a b c d"], dissimilar=["x"], language="bg"),
    ]
    models = [
        CachedEncoder(ModelSpec(n, f"st:{tmp_path}"), cache_root=None, model=BagOfWords(d), fingerprint=n)
        for n, d in (("small", 4), ("large", 1024))
    ]
    results = evaluate(models, tasks, progress=False)
    table = markdown_table(results)
    assert "| large | **100.0** | **100.0** | **100.0** |" in table
    paths = write_report(results, tmp_path / "report", command="lm2vec report ...")
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![chart](report.png)" in paths["markdown"].read_text()
    again = Results.load(paths["results"])
    assert again.models["large"].results["sts"].main_score == 1.0 and again.tasks["trip"]["language"] == "bg"

    # A report killed while it is written leaves the previous files whole, and no temporary file is ever read.
    before = {name: path.read_bytes() for name, path in paths.items()}
    monkeypatch.setattr("os.fsync", lambda _: (_ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", lambda *_, **__: (_ for _ in ()).throw(KeyboardInterrupt))
    smaller = evaluate(models[:1], tasks, progress=False)
    for step in (
        lambda: write_chart(smaller, paths["chart"]),
        lambda: smaller.save(paths["results"]),
        lambda: write_report(smaller, tmp_path / "report", notes="new"),
    ):
        with pytest.raises(KeyboardInterrupt):
            step()
    assert {name: path.read_bytes() for name, path in paths.items()} == before


def test_evaluating_in_a_log_prints_no_progress_bars(tmp_path: Path, tiny_llama: Path, capfd) -> None:
    encoder = CachedEncoder(ModelSpec("tiny", str(tiny_llama)), cache_root=None, batch_size=2)
    capfd.readouterr()
    encoder.embed([f"a text number {n}" for n in range(20)])  # more than 4 batches: a bar on a terminal
    console = "".join(capfd.readouterr())
    assert "\r" not in console and "Encoding" not in console


class Lookup:
    """Given vectors for given texts."""

    name = "lookup"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])


def test_bitext_hubness_names_the_direction_a_hub_crowds() -> None:
    # 40 translation pairs whose sources all lean towards one direction u; the extra target u is then among every
    # source's nearest targets (forward), while no source is near every target (backward).
    rng = np.random.default_rng(0)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    targets = unit(rng.normal(size=(40, 16)))
    u = unit(rng.normal(size=16))
    sources = unit(targets + 0.3 * unit(rng.normal(size=(40, 16))) + u)
    vectors = {f"s{i}": v for i, v in enumerate(sources)} | {f"t{i}": v for i, v in enumerate(targets)}
    vectors |= {"hub": u, "s-hub": unit(rng.normal(size=16))}
    ids = range(40)
    bitext = BitextTask(name="b", sources=[f"s{i}" for i in ids] + ["s-hub"], targets=[f"t{i}" for i in ids] + ["hub"])
    results = bitext.evaluate(Lookup(vectors))
    assert results["hubness_forward"] > results["hubness_backward"] + 0.5
    assert results["accuracy_forward"] < results["accuracy_backward"] - 0.3  # the hub takes forward hits
    without_hub = BitextTask(name="e", sources=[f"s{i}" for i in ids], targets=[f"t{i}" for i in ids])
    assert without_hub.evaluate(Lookup(vectors))["hubness_forward"] < results["hubness_forward"] - 0.3
