"""Inputs other than dumps: plain text, JSON lines and Hugging Face datasets, as a stream of documents."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm2vec.data.dump import DumpPart, DumpReader, Page
from lm2vec.data.errors import DataError
from lm2vec.data.readers import Document, DocumentFile

_FINGERPRINT_BYTES = 1 << 20


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
    def __init__(self, path: Path, part: DumpPart | None = None) -> None:
        self.reader = DumpReader(path, part)
        self.size = self.reader.size

    @property
    def position(self) -> int:
        return self.reader.position

    def items(self) -> Iterator[Page]:
        return self.reader.pages()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "wiki",
            "path": str(self.reader.path),
            "size_bytes": self.size,
            "compression": self.reader.compression,
            "encoding": self.reader.encoding,
            "dbname": self.reader.siteinfo.dbname,
            "fingerprint": file_fingerprint(self.reader.path),
            **({"part": f"{part.number}/{part.count}", "index": str(part.index)} if (part := self.reader.part) else {}),
        }


class TextFileSource(DocumentFile, Source):
    """`.txt` (documents separated by blank lines) or `.jsonl` (one JSON object with a text field a line),
    optionally compressed with gzip or bz2: `lm2vec.data.readers.DocumentFile` as a corpus source."""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.format,
            "path": str(self.path),
            "size_bytes": self.size,
            "fingerprint": file_fingerprint(self.path),
        }


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
