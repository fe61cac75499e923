"""Documents for an index, and passages cut from them by tokens on sentence boundaries.

Sources: a `.txt`/`.md` file (one document; paragraphs separated by blank lines), a `.jsonl` file (a `text`
field, optional `id` and `title`, other fields kept as metadata), a Parquet file (the same columns), a folder of
such files (recursively, in name order), or an `lm2vec data` corpus folder (its paragraphs, one document per
article). `lm2vec.data.readers` reads each file and corpus (its kind "documents"); here a folder's files are picked.

A document is known by its label: the absolute path of its file (as named: symlinks in it are not resolved), with
'#id' for a record of a .jsonl or Parquet file or an article of a corpus. Inside a source folder, symlinks (to files
or folders) are skipped, so a folder's documents are the files that are in it; a symlink named as a source is
followed. An lm2vec index folder (one holding `lm2vec_index.json`) is never read as documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lm2vec.data.corpus import is_corpus
from lm2vec.data.errors import DataError
from lm2vec.data.readers import DOCUMENT_SUFFIXES, Document, document_kind, load_documents
from lm2vec.data.sentences import SentenceSplitter
from lm2vec.options import Options

MANIFEST_NAME = "lm2vec_index.json"  # the manifest of an index folder (lm2vec.serving.index): never documents
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class ChunkingOptions(Options):
    """How documents become passages; recorded in the index manifest."""

    passage_tokens: int = field(default=256, metadata={"help": "longest passage in tokens"})
    overlap_tokens: int = field(
        default=32,
        metadata={"help": "tokens (whole sentences) shared by neighbouring passages"},
    )
    lang: str = field(default="en", metadata={"help": "language of the documents, for the sentence splitter"})

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (self.passage_tokens >= 8, f"passage_tokens must be at least 8, got {self.passage_tokens}."),
            (
                0 <= self.overlap_tokens < self.passage_tokens,
                f"overlap_tokens must be in [0, passage_tokens), got {self.overlap_tokens}.",
            ),
        ]


@dataclass(frozen=True)
class Passage:
    text: str
    source: str  # the file, with '#id' for a record of a .jsonl or Parquet file
    doc_id: str
    title: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def record(self) -> dict[str, Any]:
        """The passage as a row of an index part (metadata as JSON text: its fields differ between sources)."""
        metadata = json.dumps(self.metadata, ensure_ascii=False, sort_keys=True)
        return {"hash": self.content_hash, **asdict(self), "metadata": metadata}


def check_sources(sources: Sequence[str | Path]) -> list[Path]:
    """The sources as absolute paths, each an existing file of a known kind or a folder, none of them (in) an
    lm2vec index folder; raises DataError otherwise."""
    if not sources:
        raise DataError("no sources given")
    paths = []
    for source in map(Path, sources):
        if not source.exists():
            raise DataError(f"{source}: no such file or folder")
        if source.is_file() and document_kind(source) is None:
            known = ", ".join(DOCUMENT_SUFFIXES)
            raise DataError(f"{source}: unknown kind of file; expected {known} or a folder")
        real = source.resolve()
        index = next((folder for folder in (real, *real.parents) if (folder / MANIFEST_NAME).is_file()), None)
        if index is not None:
            raise DataError(
                f"{source} is an lm2vec index{' folder' if index == real else f' file (of {index})'}, not documents"
            )
        paths.append(Path(os.path.abspath(source)))
    return paths


@dataclass
class FolderListing:
    files: list[Path]  # the document files, in name order
    symlinks: list[Path]  # skipped: links to files or folders are not followed inside a source folder
    indexes: list[Path]  # skipped: lm2vec index folders


def list_folder(folder: Path) -> FolderListing:
    """The document files under `folder` (recursively), and what was skipped."""
    listing = FolderListing([], [], [])
    for root, folders, files in os.walk(folder):
        here = Path(root)
        for name in list(folders):
            if (here / name).is_symlink() or (here / name / MANIFEST_NAME).is_file():
                folders.remove(name)  # not descended into
                (listing.symlinks if (here / name).is_symlink() else listing.indexes).append(here / name)
        for name in files:
            if (here / name).is_symlink():
                listing.symlinks.append(here / name)
            elif document_kind(here / name) is not None:
                listing.files.append(here / name)
    listing.files.sort()
    return listing


def read_sources(sources: Sequence[Path], echo: Callable[[str], None]) -> list[tuple[str, Document]]:
    """The (label, document) pairs of every source (from `check_sources`), read before a model is loaded: a
    source without documents is a DataError. What a folder's listing skipped is echoed."""
    documents: list[tuple[str, Document]] = []
    for source in sources:
        if source.is_dir() and not is_corpus(source):
            listing = list_folder(source)
            if listing.symlinks:
                count = len(listing.symlinks)
                echo(
                    f"{source}: skipped {count} symlink{'s' if count > 1 else ''} (links inside a source folder are "
                    "not followed; name a link as a source to read it)"
                )
            for index in listing.indexes:
                echo(f"{source}: skipped {index}, an lm2vec index folder")
            found = [document for path in listing.files for document in read_documents(path)]
        else:
            found = list(read_documents(source))
        if not found:
            raise DataError(f"no documents found in {source}")
        documents += found
    return documents


def read_documents(source: Path) -> Iterator[tuple[str, Document]]:
    """(source label, document) pairs of one source, in a stable order: a folder's files in name order."""
    if source.is_dir() and not is_corpus(source):
        for path in list_folder(source).files:
            yield from load_documents(path)
    else:
        yield from load_documents(source)


class Chunker:
    """Cuts text into passages of at most `passage_tokens` tokens (the encoder's tokenizer, no special tokens)
    made of whole sentences; consecutive passages share up to `overlap_tokens` tokens of whole sentences. A
    sentence longer than a passage is cut at token boundaries."""

    def __init__(self, tokenizer, options: ChunkingOptions) -> None:
        self.tokenizer, self.options = tokenizer, options
        self.splitter = SentenceSplitter(options.lang)

    def passages(self, source: str, document: Document) -> list[Passage]:
        return [
            Passage(text, source, document.doc_id, document.title, document.metadata)
            for text in self.split(document.text)
        ]

    def split(self, text: str) -> list[str]:
        sentences = [s for paragraph in _PARAGRAPH_BREAK.split(text) for s in self.splitter.split(paragraph) if s]
        if not sentences:
            return []
        encoded = self.tokenizer(sentences, add_special_tokens=False, return_offsets_mapping=True)
        pieces: list[tuple[str, int]] = []
        for sentence, offsets in zip(sentences, encoded["offset_mapping"], strict=True):
            pieces += self._fit(sentence, offsets)
        return self._pack(pieces)

    def _fit(self, sentence: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[str, int]]:
        size = self.options.passage_tokens
        if len(offsets) <= size:
            return [(sentence, len(offsets))]
        windows = [offsets[start : start + size] for start in range(0, len(offsets), size)]
        return [(sentence[window[0][0] : window[-1][1]].strip(), len(window)) for window in windows]

    def _pack(self, pieces: list[tuple[str, int]]) -> list[str]:
        size, overlap = self.options.passage_tokens, self.options.overlap_tokens
        passages: list[str] = []
        current: list[tuple[str, int]] = []  # always ends with a piece no passage has had yet
        for piece in pieces:
            if current and sum(n for _, n in current) + piece[1] > size:
                passages.append(" ".join(text for text, _ in current))
                kept: list[tuple[str, int]] = []
                for previous in reversed(current):
                    if sum(n for _, n in kept) + previous[1] > overlap:
                        break
                    kept.insert(0, previous)
                while kept and sum(n for _, n in kept) + piece[1] > size:
                    kept.pop(0)
                current = kept
            current.append(piece)
        if current:
            passages.append(" ".join(text for text, _ in current))
        return passages
