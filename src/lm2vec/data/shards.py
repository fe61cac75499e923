"""Parquet shards and the manifest that lists them.

Layout of an output directory:
    manifest.json
    paragraphs/{train,validation}-00000.parquet ...
    sentences/{train,validation}-00000.parquet ...
    pairs/{train,validation}-00000.jsonl ...   (weak supervised pairs of a dump, `lm2vec.data.pairs`)
    merge_log/{train,validation}-00000.parquet ...   (a `--part` run's: what `lm2vec data merge` needs besides)
A shard is written under a hidden temporary name (`lm2vec.artifacts.atomic_file`) and renamed when closed, so a
listed shard is always a whole Parquet (JSONL) file. All open shards are closed together at a checkpoint, and only then
is the manifest rewritten (atomically): the manifest's counts always match the shards it lists.

The manifest (format tag "lm2vec-corpus") is written before anything else and is the folder's ownership
record (`lm2vec.artifacts`): resume and overwrite touch only a folder that has one, and delete only the
manifest and the shards lm2vec names (`SHARD_NAME`), never other files in the folder.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from lm2vec.artifacts import PARTIAL, atomic_file, claim_folder, read_record, write_json_atomic
from lm2vec.data.errors import OutputDirError

MANIFEST_NAME = "manifest.json"
CORPUS_FORMAT = "lm2vec-corpus"
SHARD_NAME = re.compile(r"(train|validation)-\d{5}\.(parquet|jsonl)")
UNFINISHED_SHARD = re.compile(rf"\.{SHARD_NAME.pattern}{re.escape(PARTIAL)}\d+")  # a killed write's leftover
TEXT_KINDS = ("paragraphs", "sentences")  # Parquet shards of texts
PAIRS = "pairs"  # JSONL shards of supervised records (`lm2vec.data.formats.read_supervised_pairs`)
KINDS = (*TEXT_KINDS, PAIRS)
# A part's articles in order, for `lm2vec.data.merge`: not a corpus kind that readers list, but shards like them.
MERGE_LOG = "merge_log"
SPLITS = ("train", "validation")
FORMAT_VERSION = 1

SCHEMAS = {
    "paragraphs": pa.schema(
        [("text", pa.string()), ("title", pa.string()), ("article_id", pa.string()), ("paragraph", pa.int32())]
    ),
    "sentences": pa.schema([("text", pa.string()), ("title", pa.string()), ("article_id", pa.string())]),
    MERGE_LOG: pa.schema(
        [
            ("page", pa.int64()),  # the article's number among the pages the part read: orders the two splits' rows
            ("article_id", pa.string()),
            ("paragraph_pairs", pa.list_(pa.int32())),  # for each paragraph written: the sentence pairs after it
            ("article_pairs", pa.int32()),  # the article's own pairs, after its paragraphs'
            (
                "near_duplicates",  # the article's paragraphs dropped as near duplicates, with their keys
                pa.list_(
                    pa.struct([("after", pa.int32()), ("exact_key", pa.int64()), ("near_keys", pa.list_(pa.int64()))])
                ),
            ),
        ]
    ),
}
_ROW_GROUP_ROWS = 10_000


def _zero_splits() -> dict[str, dict[str, int]]:
    return {split: {"articles": 0, "paragraphs": 0, "sentences": 0} for split in SPLITS}


@dataclass
class Counts:
    """What a run saw and kept; `pages_seen == articles_kept + sum(skipped.values())`."""

    pages_seen: int = 0
    articles_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> pages
    paragraphs: int = 0
    sentences: int = 0
    characters: dict[str, int] = field(default_factory=lambda: {"paragraphs": 0, "sentences": 0})
    duplicates_removed: dict[str, int] = field(
        default_factory=lambda: {"paragraphs_exact": 0, "paragraphs_near": 0, "sentences": 0}
    )
    filtered: dict[str, int] = field(default_factory=dict)  # length and markup filters -> records dropped
    pairs: dict[str, int] = field(default_factory=dict)  # dataset ("wiki-title-lead" ...) -> pairs written
    splits: dict[str, dict[str, int]] = field(default_factory=_zero_splits)

    def add(self, table: dict[str, int], key: str, amount: int = 1) -> None:
        table[key] = table.get(key, 0) + amount


@dataclass
class Manifest:
    """manifest.json: status, input, options, counts and the shards of one corpus."""

    status: str  # "running", "complete" or "incomplete"
    source: dict[str, Any]  # what the input is, and for a file its "origin" (`lm2vec.data.packaged.input_origin`)
    config: dict[str, Any]
    counts: Counts = field(default_factory=Counts)
    shards: list[dict[str, Any]] = field(default_factory=list)  # {"path", "kind", "split", "rows"}
    error: str | None = None
    timing: dict[str, float] = field(default_factory=dict)
    merge_log: bool = False  # whether the shards include MERGE_LOG ones (a `--part` run's, for `lm2vec data merge`)
    files: dict[str, str] = field(default_factory=dict)  # option -> what the file it names holds (config.FILE_FIELDS)
    format_version: int = FORMAT_VERSION
    format: str = CORPUS_FORMAT

    def write(self, directory: Path) -> None:
        write_json_atomic(directory / MANIFEST_NAME, asdict(self))

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """The corpus manifest in `directory`; ForeignFolderError if its manifest.json is not lm2vec's."""
        data = read_record(directory, MANIFEST_NAME, CORPUS_FORMAT)
        if data is None:
            raise OutputDirError(f"{directory}: not a corpus, there is no {MANIFEST_NAME}")
        data["counts"] = Counts(**data["counts"])
        return cls(**data)

    def shard_paths(self, kind: str, split: str) -> list[str]:
        return [shard["path"] for shard in self.shards if shard["kind"] == kind and shard["split"] == split]

    def record_failure(self, error: BaseException) -> None:
        self.status, self.error = "incomplete", str(error) or type(error).__name__

    def record_timing(self, elapsed_s: float, pages: int, bytes_read: int) -> None:
        self.timing = {
            "elapsed_s": round(elapsed_s, 3),
            "pages_per_s": round(pages / elapsed_s, 1),
            "mb_per_s": round(bytes_read / elapsed_s / 1e6, 3),
        }


class _ShardWriter:
    """Rows of one kind and split, written into the current shard under a temporary name until `close`."""

    suffix = ""

    def __init__(self, directory: Path, kind: str, split: str, next_index: int) -> None:
        self._directory, self.kind, self.split = directory, kind, split
        self._index = next_index
        self._open_shard = ExitStack()  # the writer and its temporary file, renamed to the shard when closed
        self._is_open = False
        self.rows = 0  # rows in the current shard, buffered or written

    def add(self, row: Any) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        """Write what is buffered into the shard, opening it first."""

    def close(self) -> dict[str, Any] | None:
        """Finish the current shard and describe it; None if it holds no rows."""
        self._flush()
        if not self._is_open:
            return None
        self._open_shard.close()
        final = self._path()
        shard = {
            "path": final.relative_to(self._directory.parent).as_posix(),
            "kind": self.kind,
            "split": self.split,
            "rows": self.rows,
        }
        self._is_open, self.rows, self._index = False, 0, self._index + 1
        return shard

    def _open_temporary(self) -> Path:
        temporary = self._open_shard.enter_context(atomic_file(self._path()))
        self._is_open = True
        return temporary

    def _path(self) -> Path:
        return self._directory / f"{self.split}-{self._index:05d}.{self.suffix}"


class _ParquetShardWriter(_ShardWriter):
    """Text rows, buffered and written as row groups."""

    suffix = "parquet"
    _writer: pq.ParquetWriter

    def __init__(self, directory: Path, kind: str, split: str, next_index: int) -> None:
        super().__init__(directory, kind, split, next_index)
        self._schema = SCHEMAS[kind]
        self._buffer: dict[str, list[Any]] = {name: [] for name in self._schema.names}
        self._buffered = 0

    def add(self, row: tuple[Any, ...]) -> None:
        for column, value in zip(self._buffer.values(), row, strict=True):
            column.append(value)
        self.rows += 1
        self._buffered += 1
        if self._buffered >= _ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._buffered:
            return
        if not self._is_open:
            self._writer = self._open_shard.enter_context(
                pq.ParquetWriter(self._open_temporary(), self._schema, compression="zstd")
            )
        self._writer.write_table(pa.table(self._buffer, schema=self._schema), row_group_size=_ROW_GROUP_ROWS)
        self._buffer = {name: [] for name in self._schema.names}
        self._buffered = 0


class _JsonlShardWriter(_ShardWriter):
    """Records, one JSON line each, streamed into the shard; the folder is made with the first shard, so a corpus
    without pairs has none."""

    suffix = "jsonl"
    _file: TextIO

    def add(self, row: dict[str, Any]) -> None:
        if not self._is_open:
            self._directory.mkdir(exist_ok=True)
            self._file = self._open_shard.enter_context(self._open_temporary().open("w", encoding="utf-8"))
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows += 1


class CorpusWriter:
    """The shard writers (paragraphs, sentences and pairs; train and validation) of one output directory."""

    def __init__(
        self, directory: Path, existing_shards: list[dict[str, Any]], shard_size: int, kinds: tuple[str, ...] = KINDS
    ) -> None:
        self._shard_size = shard_size
        self._writers: dict[tuple[str, str], _ShardWriter] = {}
        for kind in kinds:
            writer_class = _JsonlShardWriter if kind == PAIRS else _ParquetShardWriter
            if kind != PAIRS:
                (directory / kind).mkdir(parents=True, exist_ok=True)
            for split in SPLITS:
                taken = sum(1 for shard in existing_shards if shard["kind"] == kind and shard["split"] == split)
                self._writers[kind, split] = writer_class(directory / kind, kind, split, taken)

    def add(self, kind: str, split: str, row: tuple[Any, ...] | dict[str, Any]) -> None:
        self._writers[kind, split].add(row)

    @property
    def checkpoint_due(self) -> bool:
        return any(writer.rows >= self._shard_size for writer in self._writers.values())

    def close_shards(self) -> list[dict[str, Any]]:
        """Close every open shard; the shards now complete, to be listed in the manifest."""
        return [shard for writer in self._writers.values() if (shard := writer.close()) is not None]


def prepare_output(directory: Path, *, resume: bool, overwrite: bool) -> Manifest | None:
    """Make `directory` ready for a run; the manifest of the run to resume, or None for a fresh run.

    Never mixes two runs: an existing run is only continued with `resume` or removed with `overwrite`, and
    a non-empty folder that holds no lm2vec corpus is refused (ForeignFolderError)."""
    if resume and overwrite:
        raise OutputDirError("choose one of resume and overwrite, not both")
    existing = claim_folder(directory, MANIFEST_NAME, CORPUS_FORMAT) is not None
    if resume:
        if not existing:
            raise OutputDirError(f"{directory}: nothing to resume, there is no {MANIFEST_NAME}")
        manifest = Manifest.read(directory)
        if manifest.status == "complete":
            raise OutputDirError(f"{directory}: the run there is complete; pass --overwrite to build it again")
        _remove_shards(directory, keep={shard["path"] for shard in manifest.shards})
        return manifest
    if existing and not overwrite:
        raise OutputDirError(
            f"{directory} already holds a corpus (status: {Manifest.read(directory).status}); pass --resume to "
            "continue it or --overwrite to replace it"
        )
    if existing:
        _remove_shards(directory, keep=set())
        (directory / MANIFEST_NAME).unlink()
    return None


def _remove_shards(directory: Path, keep: set[str]) -> None:
    """Delete lm2vec's shard files (listed or written after the last checkpoint) except `keep`; other files
    stay, and a shard folder is removed only once it is empty."""
    for kind in (*KINDS, MERGE_LOG):
        folder = directory / kind
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            listed = path.relative_to(directory).as_posix() in keep
            if (SHARD_NAME.fullmatch(path.name) and not listed) or UNFINISHED_SHARD.fullmatch(path.name):
                path.unlink()
        if not keep and not any(folder.iterdir()):
            folder.rmdir()
