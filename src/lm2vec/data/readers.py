"""What lm2vec reads from a source of texts, by the kind of text the reader wants: the one place that says what a
file means. `load_texts(source, kind)` gives the texts; `load_text_dataset` gives the paragraphs as a `datasets`
dataset (a corpus or Parquet file memory-mapped, so MNTP reads any size); `load_documents` the documents with their
ids, titles and metadata; `DocumentFile` streams blank-line documents or JSONL records for `lm2vec data text`;
`parquet_row_groups` and `ShuffledWindows` stream a corpus's or Parquet files' texts to training (`streaming = true`)
a window of row groups at a time, in a seeded order.

| kind       | a .txt file                         | a .jsonl file (`text_field`) | a .parquet file  | a corpus folder |
| ---------- | ----------------------------------- | ---------------------------- | ---------------- | --------------- |
| lines      | a text a line, blank lines too      | a text a record              | -                | -               |
| sentences  | a text a non-blank line, stripped   | a text a record, stripped    | -                | its sentences   |
| paragraphs | a text a blank-line-separated block | a text a record, as written  | the text column  | its paragraphs  |
| documents  | the whole file, one document        | a document a record          | a document a row | its articles    |

Read by: lines `lm2vec encode` (row i is line i); sentences SimCSE and `lm2vec mine --corpus`; paragraphs MNTP,
SimCSE crops and `lm2vec data text`; documents `lm2vec index build`.

- lines, sentences: a file of any other suffix is read as .txt; a line ends at "\\n" for lines (a U+2028 or a form
  feed stays inside its line), at "\\n", "\\r\\n" or "\\r" for sentences; sentences refuses a source without any.
- paragraphs: a block's lines are joined by spaces. Also a .json file (its text column), a folder (every .txt,
  .jsonl, .json and .parquet file under it, in name order) and `hf:NAME[:CONFIG]` (a Hugging Face dataset); only a
  corpus or a Hub dataset has a split other than train. `lm2vec data text` reads .txt and .jsonl only, gzip- or
  bz2-compressed too (`DocumentFile`).
- documents: the text field is `text`; a record's or row's `id` and `title` are kept and its other fields are its
  metadata; a .txt or .md file is UTF-8, else Windows-1252, its first paragraph the title; compressed .jsonl too.
  Folders of such files are `lm2vec.serving.documents`' sources.

Files of records with fields of their own (supervised pairs, sentence-similarity pairs, the evaluation formats) are
read by `lm2vec.data.formats`. Every problem is a `DataError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from lm2vec.artifacts import write_json_atomic
from lm2vec.data.corpus import corpus_files, is_corpus, load_corpus
from lm2vec.data.dump import decompressed_stream, detect_compression
from lm2vec.data.errors import DataError, require_file
from lm2vec.data.shards import SPLITS

if TYPE_CHECKING:
    import datasets

TEXT_KINDS = ("lines", "sentences", "paragraphs", "documents")
PARAGRAPH_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
DOCUMENT_SUFFIXES = {".txt": "text", ".md": "text", ".jsonl": "records", ".parquet": "records"}


@dataclass(frozen=True)
class Document:
    """One document of plain text; paragraphs are separated by blank lines."""

    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)  # a JSONL record's or Parquet row's other fields


# --- lines ---------------------------------------------------------------------------------------------------
def nonblank_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a UTF-8 file with their numbers, without their line break. Universal newlines
    (\\n, \\r\\n, \\r) only: JSON strings may hold U+2028 and U+0085 raw, which `str.splitlines` would break at."""
    with path.open(encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line.rstrip("\n")
        except UnicodeDecodeError as error:
            raise DataError(f"not UTF-8 text ({error.reason})", path) from None


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """The value of every non-blank line of a JSONL file, with its line number."""
    for number, line in nonblank_lines(path):
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"not valid JSON ({error.msg})", path, number) from None


def _every_line(path: Path) -> list[str]:
    """Every line, blank ones too, split at "\\n" only, so a U+2028 or a form feed inside a line does not shift
    the rows; a trailing "\\r" is dropped."""
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"not UTF-8 text ({error.reason} at byte {error.start})", path) from None
    return [line.removesuffix("\r") for line in content.removesuffix("\n").split("\n")] if content else []


def _jsonl_texts(path: Path, text_field: str) -> list[str]:
    texts = []
    for number, record in json_lines(path):
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(f"not a JSON object with a {text_field!r} string", path, number)
        texts.append(text)
    return texts


# --- texts by kind ---------------------------------------------------------------------------------------------
def load_texts(source: str | Path, kind: str, text_field: str = "text", split: str = "train") -> list[str]:
    """The texts of `source` as `kind` reads them (the table above), in order. Raises DataError for a source that
    is missing or unreadable, and for sentences without any."""
    if kind not in TEXT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TEXT_KINDS)}, got {kind!r}")
    if kind == "paragraphs":
        dataset = load_text_dataset(source, text_field, split)
        if dataset is None:
            raise DataError(f"no {split} split", source)
        return dataset["text"]
    path = Path(source)
    if kind == "documents":
        return [document.text for _, document in load_documents(path)]
    if kind == "sentences" and path.is_dir():
        texts = load_corpus(path, "sentences", split)["text"]
    elif require_file(path).suffix == ".jsonl":
        texts = _jsonl_texts(path, text_field)
    else:
        texts = _every_line(path) if kind == "lines" else [line for _, line in nonblank_lines(path)]
    if kind == "lines":
        return texts
    sentences = [text.strip() for text in texts if text and text.strip()]
    if not sentences:
        raise DataError("holds no sentences", path)
    return sentences


def load_text_dataset(source: str | Path, text_field: str = "text", split: str = "train") -> datasets.Dataset | None:
    """The paragraphs of `source` (the table above) as a dataset with a `text` column: MNTP's input, a corpus or a
    Parquet file memory-mapped. None if `source` has no such split."""
    import datasets  # slow to import: only where paragraphs are read

    spec = str(source)
    if spec.startswith("hf:"):
        name, _, config_name = spec[3:].partition(":")
        try:
            dataset = datasets.load_dataset(name, config_name or None, split=split)
        except ValueError:
            if split == "train":
                raise
            return None
        return _text_column(dataset, text_field, name)
    path = Path(spec)
    if is_corpus(path):
        return load_corpus(path, "paragraphs", split, required=False)
    if split != "train":
        return None
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in PARAGRAPH_SUFFIXES)
        if not files:
            raise DataError(f"no {', '.join(PARAGRAPH_SUFFIXES)} files", path)
        return datasets.concatenate_datasets([_paragraph_file(file, text_field) for file in files])
    if not path.exists():
        raise DataError("not found (a corpus folder, a file, or hf:NAME)", path)
    return _paragraph_file(path, text_field)


def _paragraph_file(path: Path, text_field: str) -> datasets.Dataset:
    import datasets

    if path.suffix in (".txt", ".jsonl"):
        texts = [document.text for document in DocumentFile(path, text_field).items()]
        return datasets.Dataset.from_dict({"text": texts})
    builder = {".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if builder is None:
        raise DataError(f"unsupported file type (use {', '.join(PARAGRAPH_SUFFIXES)})", path)
    return _text_column(datasets.load_dataset(builder, data_files=str(path), split="train"), text_field, path)


def _text_column(dataset: datasets.Dataset, text_field: str, source: str | Path) -> datasets.Dataset:
    if text_field not in dataset.column_names:
        raise DataError(f"no {text_field!r} column (columns: {dataset.column_names})", source)
    return dataset.select_columns([text_field]).rename_column(text_field, "text") if text_field != "text" else dataset


# --- Parquet texts, streamed ----------------------------------------------------------------------------------
STREAM_COUNTS = "stream_counts.json"  # in a run folder: samples per window, so a resume reads no window before its own


@dataclass(frozen=True)
class RowGroup:
    """One row group of a Parquet file: what a stream reads at a time (`lm2vec data` writes 10,000 rows a group)."""

    path: Path
    index: int
    rows: int
    column: str = "text"  # the text column


def parquet_row_groups(
    source: str | Path, kind: str = "paragraphs", text_field: str = "text", split: str = "train"
) -> list[RowGroup] | None:
    """The row groups of `source`'s texts, in file order, without reading them: a corpus folder's shards of `kind`
    ("paragraphs" or "sentences"), or, for paragraphs, a .parquet file or a folder of them. None if `source` has
    no such split; a DataError for any other source or a file without the text column."""
    import pyarrow.parquet as pq

    path = Path(str(source))
    if is_corpus(path):
        files, text_field = corpus_files(path, kind, split), "text"
    elif str(source).startswith("hf:") or kind != "paragraphs" or not path.exists():
        what = "a corpus folder" + (" or .parquet files" if kind == "paragraphs" else "")
        raise DataError(f"streaming reads {what}; convert other text with `lm2vec data text`", source)
    elif split != "train":
        return None
    else:
        files = sorted(p for p in path.rglob("*") if p.suffix in PARAGRAPH_SUFFIXES) if path.is_dir() else [path]
        if other := [file for file in files if file.suffix != ".parquet"]:
            raise DataError("streaming reads .parquet files only; convert it with `lm2vec data text`", other[0])
    if not files:
        return None
    groups = []
    for file in files:
        metadata = pq.ParquetFile(file).metadata
        if text_field not in metadata.schema.names:
            raise DataError(f"no {text_field!r} column (columns: {metadata.schema.names})", file)
        groups += [
            RowGroup(file, i, n, text_field)
            for i in range(metadata.num_row_groups)
            if (n := metadata.row_group(i).num_rows)
        ]
    return groups


def row_group_texts(group: RowGroup) -> list[str]:
    """The texts of one row group (a missing value reads as "")."""
    import pyarrow.parquet as pq

    column = pq.ParquetFile(group.path).read_row_group(group.index, columns=[group.column]).column(0)
    return [text or "" for text in column.to_pylist()]


class ShuffledWindows:
    """`length` samples made from Parquet row groups in a fixed, seeded order that holds one window of rows in
    memory, never the corpus. Pass after pass over `groups`, each pass in its own seeded order, consecutive row
    groups of at least `window_rows` rows together form a window; `to_samples(texts, window)` turns a window's texts
    into samples (token blocks, crop pairs), read in a seeded order of their own. Sample j depends on (seed, j)
    alone, so a resumed run continues exactly. Read in order, each window is read once; a jump to sample j (a
    resume) reads j's window alone once `counts_file` knows how many samples the windows before it hold, and
    otherwise counts them window by window, holding none. With `record`, the counts learned go to `counts_file`
    (one process of a distributed run writes it). Hand-written because `datasets`' streaming shuffle buffer is not
    part of its state_dict: a resume would not continue exactly."""

    def __init__(
        self,
        groups: Sequence[RowGroup],
        to_samples: Callable[[list[str], int], Sequence[Any]],
        length: int,
        seed: int,
        window_rows: int,
        counts_file: Path | None = None,
        record: bool = False,
        fingerprint: str = "",
    ) -> None:
        if not groups:
            raise ValueError("no row groups to stream")
        self.groups, self.to_samples, self.length, self.seed = list(groups), to_samples, length, seed
        self.window_rows, self.counts_file, self.record = window_rows, counts_file, record
        key = [fingerprint, seed, window_rows, [[str(g.path), g.index, g.rows] for g in self.groups]]
        self._key = hashlib.sha256(json.dumps(key).encode()).hexdigest()
        self._ends: list[int] = []  # samples in windows 0..w together, for every window counted so far
        self._pass: tuple[int, list[list[RowGroup]]] | None = None
        self._windows_per_pass: dict[int, int] = {}
        self._loaded: tuple[int, Sequence[Any], Any] | None = None  # (window, samples, their order)
        if counts_file is not None and counts_file.is_file():
            saved = json.loads(counts_file.read_text(encoding="utf-8"))
            if saved.get("key") == self._key:
                self._ends = list(itertools.accumulate(saved["counts"]))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, sample: int) -> Any:
        if not 0 <= sample < self.length:
            raise IndexError(sample)
        while not self._ends or sample >= self._ends[-1]:
            self._count_next_window()
        window = bisect.bisect_right(self._ends, sample)
        samples, order = self._window(window)
        return samples[int(order[sample - (self._ends[window - 1] if window else 0)])]

    def _pass_windows(self, number: int) -> list[list[RowGroup]]:
        import numpy as np

        if self._pass is None or self._pass[0] != number:
            windows: list[list[RowGroup]] = [[]]
            for index in np.random.default_rng([self.seed, number]).permutation(len(self.groups)):
                if sum(group.rows for group in windows[-1]) >= self.window_rows:
                    windows.append([])
                windows[-1].append(self.groups[index])
            self._pass = (number, windows)
            self._windows_per_pass[number] = len(windows)
        return self._pass[1]

    def _locate(self, window: int) -> tuple[int, int]:
        """(pass, window within it) of the `window`-th window of the stream."""
        number = 0
        while True:
            if number not in self._windows_per_pass:
                self._pass_windows(number)
            if window < self._windows_per_pass[number]:
                return number, window
            window -= self._windows_per_pass[number]
            number += 1

    def _window(self, window: int) -> tuple[Sequence[Any], Any]:
        import numpy as np

        if self._loaded is None or self._loaded[0] != window:
            number, position = self._locate(window)
            texts = [t for group in self._pass_windows(number)[position] for t in row_group_texts(group)]
            samples = self.to_samples(texts, window)
            order = np.random.default_rng([self.seed, number, position, 1]).permutation(len(samples))
            self._loaded = (window, samples, order)
        return self._loaded[1], self._loaded[2]

    def _count_next_window(self) -> None:
        window = len(self._ends)
        if window and window == self._windows_per_pass.get(0) and not self._ends[-1]:
            raise ValueError("No samples: no window of the data gives any (too few tokens or words).")
        self._ends.append((self._ends[-1] if self._ends else 0) + len(self._window(window)[0]))
        if self.record and self.counts_file is not None:
            counts = [end - start for start, end in zip([0, *self._ends[:-1]], self._ends, strict=True)]
            self.counts_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.counts_file, {"key": self._key, "counts": counts})


# --- documents -------------------------------------------------------------------------------------------------
def load_documents(source: Path) -> Iterator[tuple[str, Document]]:
    """(label, document) pairs of one file or corpus folder (the documents row of the table above), in a stable
    order. The label is the path as named, with '#id' for a record, a row or an article."""
    if source.is_dir():
        yield from _corpus_documents(source)
    elif document_kind(source) == "text":
        blocks = _text_blocks(source)
        yield str(source), Document(source.stem, blocks[0] if blocks else "", "\n\n".join(blocks))
    elif source.suffix == ".parquet":
        for document in _parquet_documents(source):
            yield f"{source}#{document.doc_id}", document
    else:
        for document in DocumentFile(source).items():
            yield f"{source}#{document.doc_id}", document


def document_kind(path: Path) -> str | None:
    """What a file is to `load_documents`: "text" (one document) or "records" (a document each); None: neither."""
    suffixes = [suffix for suffix in path.suffixes if suffix not in (".gz", ".bz2")]
    return DOCUMENT_SUFFIXES.get(suffixes[-1] if suffixes else "")


def _text_blocks(path: Path) -> list[str]:
    """The paragraphs of a text file: UTF-8, else Windows-1252 (older tools wrote it: BBC News has '£' so)."""
    try:
        return [document.text for document in DocumentFile(path).items()]
    except DataError as error:
        if not isinstance(error.__cause__, UnicodeDecodeError):
            raise
        return [document.text for document in DocumentFile(path, encoding="cp1252").items()]


def _parquet_documents(path: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several kinds for a file that is not Parquet
        raise DataError(f"not a readable Parquet file ({error})", path) from error
    if "text" not in table.schema_arrow.names:
        raise DataError(f"no 'text' column; columns: {table.schema_arrow.names}", path)
    number = 0
    for batch in table.iter_batches():
        for row in batch.to_pylist():
            number += 1
            metadata = {key: value for key, value in row.items() if key not in ("id", "title", "text")}
            doc_id = row.get("id")
            yield Document(
                str(number if doc_id is None else doc_id), str(row.get("title") or ""), str(row["text"]), metadata
            )


def _corpus_documents(folder: Path) -> Iterator[tuple[str, Document]]:
    """The paragraphs of every split, joined back into their articles (shards keep an article's rows together)."""
    for split in SPLITS:
        rows = load_corpus(folder, "paragraphs", split, streaming=True, required=False) or []
        for article_id, paragraphs in itertools.groupby(rows, key=lambda row: row["article_id"]):
            paragraphs = list(paragraphs)
            text = "\n\n".join(paragraph["text"] for paragraph in paragraphs)
            yield f"{folder}#{article_id}", Document(str(article_id), paragraphs[0]["title"] or "", text)


class DocumentFile:
    """A `.txt` file of documents separated by blank lines (a document's lines joined by spaces) or a `.jsonl`
    file (one JSON object with a text field a line), optionally compressed with gzip or bz2, read as a stream
    of `Document`s; `position` is the byte offset reached in the (compressed) file."""

    def __init__(self, path: Path, text_field: str = "text", encoding: str = "utf-8-sig") -> None:
        path = require_file(path)
        self.path, self.text_field, self.size, self.encoding = path, text_field, path.stat().st_size, encoding
        suffixes = [suffix for suffix in path.suffixes if suffix not in (".gz", ".bz2")]
        self.format = "jsonl" if suffixes and suffixes[-1] in (".jsonl", ".json") else "txt"
        self._raw: BinaryIO | None = None
        self._end_position = 0

    @property
    def position(self) -> int:
        return self._raw.tell() if self._raw is not None and not self._raw.closed else self._end_position

    def items(self) -> Iterator[Document]:
        with self.path.open("rb") as raw:
            self._raw = raw
            head = raw.read(4)
            raw.seek(0)
            lines = io.TextIOWrapper(decompressed_stream(raw, detect_compression(head)), encoding=self.encoding)
            try:
                yield from self._jsonl(lines) if self.format == "jsonl" else self._blocks(lines)
            except (UnicodeDecodeError, EOFError, OSError) as error:
                raise DataError(f"unreadable ({error}) at byte {self.position:,}", self.path) from error
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
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record[self.text_field]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DataError(
                    f"{self.path}, line {number}: not a JSON object with a {self.text_field!r} string field ({error})"
                ) from error
            if not isinstance(text, str):
                raise DataError(
                    f"{self.path}, line {number}: {self.text_field!r} is a {type(text).__name__}, not a string"
                )
            metadata = {key: value for key, value in record.items() if key not in ("id", "title", self.text_field)}
            yield Document(str(record.get("id", number)), str(record.get("title", "")), text, metadata)
