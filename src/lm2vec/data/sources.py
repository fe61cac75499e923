"""Inputs other than dumps: plain text, JSON lines and Hugging Face datasets, as a stream of documents."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lm2vec.data.dump import DumpReader, Page, decompressed_stream, detect_compression
from lm2vec.data.errors import DataError, require_file

_FINGERPRINT_BYTES = 1 << 20


@dataclass(frozen=True)
class Document:
    """One document of plain text; paragraphs are separated by blank lines."""

    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)  # a JSONL record's other fields


def file_fingerprint(path: Path) -> str:
    """Hash of the first MiB: a resumed run must read the same input, possibly re-downloaded in full."""
    with path.open("rb") as file:
        return hashlib.sha256(file.read(_FINGERPRINT_BYTES)).hexdigest()


class Source:
    """A stream of pages or documents with what progress and the manifest need to know about it."""

    size = 0  # bytes, 0 if unknown

    @property
    def position(self) -> int:
        return 0

    def items(self) -> Iterator[Page | Document]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class WikiSource(Source):
    def __init__(self, path: Path) -> None:
        self.reader = DumpReader(path)
        self.size = self.reader.size

    @property
    def position(self) -> int:
        return self.reader.position

    def items(self) -> Iterator[Page]:
        return self.reader.pages()

    def describe(self) -> dict[str, Any]:
        return {"kind": "wiki", "path": str(self.reader.path), "size_bytes": self.size,
                "compression": self.reader.compression, "encoding": self.reader.encoding,
                "dbname": self.reader.siteinfo.dbname, "fingerprint": file_fingerprint(self.reader.path)}  # fmt: skip


class TextFileSource(Source):
    """`.txt` (documents separated by blank lines) or `.jsonl` (one JSON object with a text field a line),
    optionally compressed with gzip or bz2."""

    def __init__(self, path: Path, text_field: str = "text", encoding: str = "utf-8-sig") -> None:
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

    def describe(self) -> dict[str, Any]:
        return {"kind": self.format, "path": str(self.path), "size_bytes": self.size,
                "fingerprint": file_fingerprint(self.path)}  # fmt: skip


class HuggingFaceSource(Source):
    """A dataset on the Hugging Face Hub or saved locally, streamed (needs the network for the Hub)."""

    def __init__(self, name: str, split: str, text_field: str) -> None:
        self.name, self.split, self.text_field = name, split, text_field

    def items(self) -> Iterator[Document]:
        import datasets

        try:
            rows = datasets.load_dataset(self.name, split=self.split, streaming=True)
        except Exception as error:  # datasets raises many kinds for a missing or unreachable dataset
            raise DataError(f"cannot open the Hugging Face dataset {self.name!r} ({error})") from error
        for number, row in enumerate(rows):
            if self.text_field not in row:
                raise DataError(f"{self.name}: no {self.text_field!r} column; columns: {sorted(row)}")
            yield Document(str(row.get("id", number)), str(row.get("title", "")), str(row[self.text_field]))

    def describe(self) -> dict[str, Any]:
        return {"kind": "huggingface", "name": self.name, "split": self.split, "fingerprint": self.name}


def text_source(spec: str, text_field: str = "text", hf_split: str = "train") -> Source:
    """A file source for an existing .txt/.jsonl file, otherwise a Hugging Face dataset name or folder."""
    path = Path(spec)
    if path.is_file():
        return TextFileSource(path, text_field)
    return HuggingFaceSource(spec, hf_split, text_field)
