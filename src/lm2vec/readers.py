"""Every input file lm2vec reads that more than one part of it shares, one function per meaning.

A `.txt` file means one of two things, and each function's name says which:
- one text per line (`read_lines`, `read_texts_per_line`, `read_sentences`): `lm2vec encode`, SimCSE's
  sentences, `lm2vec mine`'s corpus;
- documents separated by blank lines (`read_blank_line_documents`, `DocumentFile`): `lm2vec data text`, MNTP's
  own text files, `lm2vec index build`.

The other inputs:
- JSONL texts with a field (`read_jsonl_texts`; `DocumentFile` keeps the records' other fields);
- supervised pairs, JSONL `{query, positive, negatives?, instruction?, dataset?, symmetric?, score?}`
  (`read_supervised_pairs` -> `SupervisedPair` records);
- sentence-similarity pairs (`read_sts`: STS Benchmark .csv, .tsv, .jsonl, a score matrix; `sts_supervised_pairs`
  makes supervised records of the well-scored ones, or of every pair with its score);
- corpus folders built by `lm2vec data` (`read_corpus_texts`).

Evaluation-task formats (labelled texts, bitext, BEIR, gettext catalogues) stay in `lm2vec.evaluation.readers`.
Errors: the STS and supervised-pair readers raise `DataFileError` (file and line; evaluation knows it as
`EvalDataError`), `DocumentFile` raises `lm2vec.data.errors.DataError`, the others `ValueError` /
`FileNotFoundError`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NotRequired, TypedDict

from lm2vec.errors import LM2VecError


class DataFileError(LM2VecError, ValueError):
    """Data that cannot be used: a missing file, a malformed line, an empty file ... (names file and line)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.line = line
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


# --- records -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Document:
    """One document of plain text; paragraphs are separated by blank lines."""

    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)  # a JSONL record's other fields


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


# --- helpers (shared with lm2vec.evaluation.readers) ---------------------------------------------------
def require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataFileError("file not found" if not path.exists() else "not a file", path)
    return path


def _lines(path: Path, legacy_fallback: bool = False) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their numbers. UTF-8; with `legacy_fallback`, Windows-1252 when UTF-8 fails."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        if not legacy_fallback:
            raise DataFileError(f"not UTF-8 text ({error.reason} at byte {error.start})", path) from None
        text = path.read_bytes().decode("cp1252", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def _number(value: str, path: Path, line: int, what: str = "gold score") -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataFileError(f"{what} {value!r} is not a number", path, line) from None
    if not math.isfinite(number):
        raise DataFileError(f"{what} {value!r} is not a finite number", path, line)
    return number


def _json_records(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    for number, line in _nonblank_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(f"not valid JSON ({error.msg})", path, number) from None
        if not isinstance(record, dict):
            raise DataFileError("expected a JSON object", path, number)
        missing = [f for f in fields if f not in record]
        if missing:
            raise DataFileError(f"missing field(s) {', '.join(missing)}", path, number)
        yield number, record


def _tsv_rows(path: Path, columns: int, names: str) -> Iterator[tuple[int, list[str]]]:
    for number, line in _lines(path):
        row = line.split("\t")
        if len(row) < columns:
            raise DataFileError(f"expected {columns} tab-separated columns ({names}), found {len(row)}", path, number)
        yield number, row


def _text(value: object, path: Path, line: int, field: str) -> str:
    if not isinstance(value, str):
        raise DataFileError(f"field {field!r} must be a string, got {type(value).__name__}", path, line)
    return value


def _suffix_format(path: Path, format: str | None, known: tuple[str, ...]) -> str:
    if format is None:
        format = {".csv": "stsb", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".mo": "mo"}.get(path.suffix)
        if path.is_dir():
            format = "folder" if "folder" in known else "mo"
    if format not in known:
        raise DataFileError(f"unknown format {format!r}; expected one of {', '.join(known)}", path)
    return format


def _nonempty(data_size: int, path: Path) -> None:
    if data_size == 0:
        raise DataFileError("no examples: the file is empty", path)


# --- one text per line -------------------------------------------------------------------------------------
def read_lines(path: str | Path) -> list[str]:
    """A .txt file, one text per line, every line (blank ones too): split at "\n" only, so a U+2028 or a form
    feed inside a line does not shift the rows; a trailing "\r" is dropped. Row i is line i.

    Raises ValueError for a file that is not UTF-8."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error}).") from None
    return [line.removesuffix("\r") for line in content.removesuffix("\n").split("\n")] if content else []


def read_jsonl_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """The `text_field` string of every record of a JSONL file; blank lines are skipped.

    Raises ValueError naming the file and line of a record without the string."""
    path = Path(path)
    texts = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)[text_field]
        except (json.JSONDecodeError, KeyError, TypeError):
            text = None
        if not isinstance(text, str):
            raise ValueError(f"{path}:{number}: not a JSON object with a {text_field!r} string.")
        texts.append(text)
    return texts


def read_texts_per_line(path: str | Path, text_field: str = "text") -> list[str]:
    """One text per line: a .jsonl file (`read_jsonl_texts`) or any other (a .txt, `read_lines`), row i of the
    result is line (or record) i. Raises ValueError naming the file (and line) for anything else."""
    path = Path(path)
    return read_jsonl_texts(path, text_field) if path.suffix == ".jsonl" else read_lines(path)


def read_corpus_texts(folder: str | Path, kind: str = "sentences", split: str = "train") -> list[str]:
    """The texts of a corpus folder built by `lm2vec data` (or a folder of them): `kind` sentences or
    paragraphs, `split` train or validation."""
    from lm2vec.data.corpus import load_corpus

    return load_corpus(folder, kind=kind, split=split)["text"]


def read_sentences(path: str | Path, text_field: str = "text", kind: str = "sentences") -> list[str]:
    """Training texts (SimCSE, mining corpora): a corpus folder (its `kind` train split: sentences or
    paragraphs), a .txt file (one text per line) or a .jsonl file (`text_field`). Texts are stripped and empty
    ones skipped; raises FileNotFoundError without the input, ValueError when it holds no text."""
    path = Path(path)
    if path.is_dir():
        texts = read_corpus_texts(path, kind=kind, split="train")
    elif path.suffix == ".jsonl":
        records = _json_records(path, (text_field,))
        texts = [_text(record[text_field], path, number, text_field) for number, record in records]
    elif path.is_file():
        texts = [line for _, line in _nonblank_lines(path)]
    else:
        raise FileNotFoundError(f"No corpus folder, .txt or .jsonl file at {path}.")
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise ValueError(f"{path} holds no sentences.")
    return texts


def _nonblank_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a UTF-8 file with their numbers, without their line break. Universal newlines
    (\\n, \\r\\n, \\r) only: JSON strings may hold U+2028 and U+0085 raw, which `str.splitlines` would break at."""
    with path.open(encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line.rstrip("\n")
        except UnicodeDecodeError as error:
            raise DataFileError(f"not UTF-8 text ({error.reason})", path) from None


# --- documents separated by blank lines ----------------------------------------------------------------------
class DocumentFile:
    """A `.txt` file of documents separated by blank lines (a document's lines joined by spaces) or a `.jsonl`
    file (one JSON object with a text field a line), optionally compressed with gzip or bz2, read as a stream
    of `Document`s; `position` is the byte offset reached in the (compressed) file."""

    def __init__(self, path: Path, text_field: str = "text", encoding: str = "utf-8-sig") -> None:
        from lm2vec.data.errors import require_file

        path = Path(path)
        require_file(path)
        self.path, self.text_field, self.size, self.encoding = path, text_field, path.stat().st_size, encoding
        suffixes = [suffix for suffix in path.suffixes if suffix not in (".gz", ".bz2")]
        self.format = "jsonl" if suffixes and suffixes[-1] in (".jsonl", ".json") else "txt"
        self._raw: BinaryIO | None = None
        self._end_position = 0

    @property
    def position(self) -> int:
        return self._raw.tell() if self._raw is not None and not self._raw.closed else self._end_position

    def items(self) -> Iterator[Document]:
        from lm2vec.data.dump import decompressed_stream, detect_compression
        from lm2vec.data.errors import DataError

        with self.path.open("rb") as raw:
            self._raw = raw
            head = raw.read(4)
            raw.seek(0)
            lines = io.TextIOWrapper(decompressed_stream(raw, detect_compression(head)), encoding=self.encoding)
            try:
                yield from self._jsonl(lines) if self.format == "jsonl" else self._blocks(lines)
            except (UnicodeDecodeError, EOFError, OSError) as error:
                raise DataError(f"{self.path}: unreadable ({error}) at byte {self.position:,}") from error
            self._end_position = raw.tell()

    def _blocks(self, lines: io.TextIOWrapper) -> Iterator[Document]:
        block: list[str] = []
        count = 0
        for line in lines:
            if line.strip():
                block.append(line.strip())
            elif block:
                yield Document(str(count), "", " ".join(block))
                block, count = [], count + 1
        if block:
            yield Document(str(count), "", " ".join(block))

    def _jsonl(self, lines: io.TextIOWrapper) -> Iterator[Document]:
        from lm2vec.data.errors import DataError

        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record[self.text_field]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DataError(f"{self.path}, line {number}: not a JSON object with a {self.text_field!r} "
                                f"string field ({error})") from error  # fmt: skip
            if not isinstance(text, str):
                raise DataError(f"{self.path}, line {number}: {self.text_field!r} is a {type(text).__name__}, "
                                "not a string")  # fmt: skip
            metadata = {key: value for key, value in record.items() if key not in ("id", "title", self.text_field)}
            yield Document(str(record.get("id", number)), str(record.get("title", "")), text, metadata)


def read_blank_line_documents(
    path: str | Path, text_field: str = "text", encoding: str = "utf-8-sig"
) -> list[Document]:
    """Every document of a .txt file of documents separated by blank lines, or of a .jsonl file (see
    `DocumentFile`); raises `lm2vec.data.errors.DataError`."""
    return list(DocumentFile(Path(path), text_field, encoding).items())


# --- supervised pairs -----------------------------------------------------------------------------------------
def read_supervised_pairs(path: str | Path) -> list[SupervisedPair]:
    """Supervised records from JSONL: `query` and `positive` required, non-empty; `negatives` (a list or one
    string), `instruction`, `dataset` and `symmetric` (the instruction goes on the documents too) optional;
    dataset defaults to "default". Raises DataFileError naming the file and line of a record that is not such an
    object, and for a file without records."""
    path = require_file(path)
    records: list[SupervisedPair] = []
    for number, record in _json_records(path, ("query", "positive")):
        for name in ("query", "positive"):
            if not isinstance(record[name], str) or not record[name].strip():
                raise DataFileError(f"{name!r} must be a non-empty string, got {record[name]!r}", path, number)
        negatives = record.get("negatives") or []
        if isinstance(negatives, str):
            negatives = [negatives]
        if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
            raise DataFileError("'negatives' must be a non-empty string or a list of them", path, number)
        instruction = record.get("instruction") or ""
        if not isinstance(instruction, str):
            raise DataFileError(f"'instruction' must be a string, got {instruction!r}", path, number)
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
                raise DataFileError(f"'score' must be a finite number, got {score!r}", path, number)
            pair["score"] = float(score)
        records.append(pair)
    if not records:
        raise DataFileError("no records: the file holds no JSON lines", path)
    return records


# --- sentence-similarity pairs ---------------------------------------------------------------------------------
def read_sts(path: str | Path, format: str | None = None, scores_path: str | Path | None = None) -> STSData:
    path = Path(path)
    format = _suffix_format(path, format, ("stsb", "tsv", "jsonl", "matrix"))
    if format == "matrix":
        if scores_path is None:
            raise DataFileError("the matrix format needs `scores` (the score matrix file)", path)
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
                    raise DataFileError(
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
            raise DataFileError(
                f"row has {len(rows[-1])} scores but {documents_path} has {len(documents)} documents",
                scores_path,
                number,
            )
    if len(rows) != len(documents):
        raise DataFileError(
            f"{len(rows)} rows of scores for {len(documents)} documents in {documents_path}", scores_path
        )
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
            records.append({"query": a, "positive": b, "negatives": [], "instruction": instruction,
                            "dataset": Path(path).stem, "symmetric": True})  # fmt: skip
            if scored:
                records[-1]["score"] = float(score)
    if not any(record.get("score", min_score) >= min_score for record in records):
        raise ValueError(f"{path}: no pair is scored {min_score} or more.")
    return records
