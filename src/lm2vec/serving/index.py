"""A passage index on disk: FAISS vectors, passage text and metadata, and a manifest that names the model.

Layout of an index folder:
    lm2vec_index.json          manifest: model (source, folder, weights hash, encoder config), chunking,
                               sources, committed parts, and the searchable generation
    parts/part-000000.parquet  passages with their content hash and normalised vector, one file per checkpoint
    index-000001.faiss         the FAISS index over the first `searchable.parts` parts
Every file is written to a temporary sibling and renamed, and the manifest is rewritten last, so a reader (or a
resumed build) only ever sees committed parts and a complete FAISS file. Search reads the `searchable` view,
which an `index add` in progress does not change until it is done.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from lm2vec.artifacts import (
    ForeignFolderError,
    claim_folder,
    read_record,
    remove_leftovers,
    temporary_sibling,
    write_json_atomic,
)
from lm2vec.errors import LM2VecError
from lm2vec.serving.documents import Chunker, ChunkingOptions, Passage, check_sources, read_documents

MANIFEST_NAME = "lm2vec_index.json"
FORMAT_NAME = "lm2vec-index"
FORMAT_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
PASSAGE_COLUMNS = ("hash", "text", "source", "doc_id", "title", "metadata")


class IndexStoreError(LM2VecError):
    """A problem with an index folder or its inputs, worded for the user."""


@dataclass
class BuildReport:
    passages: int  # in the index now
    encoded: int  # by this command
    unchanged: int  # passages whose content hash was already indexed (or seen earlier in this run)
    documents: int  # read by this command
    seconds: float
    index_kind: str
    dimension: int

    def summary(self, folder: Path) -> str:
        rate = self.encoded / self.seconds if self.seconds > 0 else 0.0
        return (f"{folder}: {self.passages:,} passages, {self.index_kind} index of {self.dimension} dims; this run: "
                f"{self.documents:,} documents, {self.encoded:,} passages encoded ({rate:,.1f}/s), "
                f"{self.unchanged:,} skipped as already indexed (same text), {self.seconds:.1f}s")  # fmt: skip


# --- the model an index belongs to ---------------------------------------------------------------------------
def describe_model(source: str, encoder) -> dict[str, Any]:
    """Source as given, the resolved folder, a SHA-256 over its weight files, and the encoder config."""
    from lm2vec.modeling.sources import resolve_source

    folder = Path(resolve_source(source)).resolve()
    files = _weight_files(folder)
    return {
        "source": source,
        "folder": str(folder),
        "weights_sha256": _weights_hash(files),
        "weight_files": _file_stats(files),
        "encoder": asdict(encoder.config),
        "dimension": encoder.get_sentence_embedding_dimension(),
    }


def check_same_model(recorded: dict[str, Any], source: str, encoder) -> None:
    """Raise unless `encoder` (loaded from `source`) is the model the index was built with."""
    from lm2vec.modeling.sources import resolve_source

    folder = Path(resolve_source(source)).resolve()
    files = _weight_files(folder)
    # The hash is recomputed only when size or modification time of a weight file changed.
    same_files = _file_stats(files) == recorded["weight_files"]
    if not same_files and _weights_hash(files) != recorded["weights_sha256"]:
        raise IndexStoreError(f"{source} is not the model this index was built with ({recorded['source']}: "
                              "its weights differ)")  # fmt: skip
    for key in ("pooling", "max_length", "instruction_template", "bidirectional"):
        if recorded["encoder"][key] != getattr(encoder.config, key):
            raise IndexStoreError(f"the index was built with {key}={recorded['encoder'][key]!r}, the model "
                                  f"has {getattr(encoder.config, key)!r}")  # fmt: skip


def load_index_model(recorded: dict[str, Any], device: str | None = None):
    """The encoder an index was built with, with the same encoder config, verified by its weights."""
    from lm2vec import LM2Vec

    settings = recorded["encoder"]
    # The resolved folder, unless it has gone (a cleared cache): then the source, resolved again.
    source = recorded["folder"] if Path(recorded["folder"]).exists() else recorded["source"]
    encoder = LM2Vec.from_pretrained(source, pooling=settings["pooling"], max_length=settings["max_length"],
                                     device=device)  # fmt: skip
    check_same_model(recorded, source, encoder)
    return encoder


def _weight_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    return sorted(path for path in folder.iterdir() if path.suffix in WEIGHT_SUFFIXES) if folder.is_dir() else []


def _weights_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()


def _file_stats(files: list[Path]) -> list[list[Any]]:
    return [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in files]


# --- writing -------------------------------------------------------------------------------------------------
@dataclass
class WriteOptions:
    batch_size: int = field(default=32, metadata={"help": "passages per forward pass"})
    part_size: int = field(
        default=256,
        metadata={"help": "passages per part (a checkpoint): what an interrupted build can lose"},
    )
    exact_limit: int = field(
        default=50_000,
        metadata={"help": "up to this many passages an exact index, above it an IVF index"},
    )

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}.")


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time; a second gets a clear error instead of interleaved parts."""
    with (folder / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexStoreError(f"{folder}: another lm2vec command is writing this index") from None
        yield


def build_index(sources: Sequence[str | Path], model: str, out: Path, chunking: ChunkingOptions,
                options: WriteOptions, device: str | None = None,
                echo: Callable[[str], None] = print) -> BuildReport:  # fmt: skip
    """Index `sources` with `model` into `out`; an interrupted build of the same inputs is resumed."""
    paths = check_sources(sources)
    try:
        manifest = claim_folder(out, MANIFEST_NAME, FORMAT_NAME)
    except ForeignFolderError as error:
        raise IndexStoreError(str(error)) from None
    source_list = [str(path) for path in paths]
    if manifest is not None and manifest["status"] == "complete":
        raise IndexStoreError(f"{out} already holds a complete index; add documents with `lm2vec index add`")
    if manifest is not None and manifest["operation"] != {"command": "build", "sources": source_list}:
        raise IndexStoreError(f"{out} holds an interrupted `lm2vec index {manifest['operation']['command']}` of "
                              f"{manifest['operation']['sources']}; run that again to finish it")  # fmt: skip
    from lm2vec import LM2Vec

    encoder = LM2Vec.from_pretrained(model, device=device)
    if chunking.passage_tokens > encoder.config.max_length - 2:
        raise IndexStoreError(f"passage_tokens={chunking.passage_tokens} does not fit the model's max_length="
                              f"{encoder.config.max_length} (with its special tokens)")  # fmt: skip
    if manifest is None:
        out.mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "status": "building",
                    "model": describe_model(model, encoder), "chunking": asdict(chunking), "sources": [],
                    "operation": {"command": "build", "sources": source_list}, "parts": [],
                    "searchable": None}  # fmt: skip
        write_json_atomic(out / MANIFEST_NAME, manifest)
    else:
        check_same_model(manifest["model"], model, encoder)
        if manifest["chunking"] != asdict(chunking):
            raise IndexStoreError(f"{out}: the interrupted build used chunking {manifest['chunking']}; resume it "
                                  "with the same options")  # fmt: skip
        echo(f"resuming the build in {out}: {sum(p['passages'] for p in manifest['parts']):,} passages kept")
    with _locked(out):
        return _ingest(out, manifest, encoder, paths, options)


def add_to_index(folder: Path, sources: Sequence[str | Path], options: WriteOptions,
                 device: str | None = None) -> BuildReport:  # fmt: skip
    """Append the passages of `sources` that the index does not hold yet (by content hash)."""
    paths = check_sources(sources)
    manifest = read_manifest(folder)
    source_list = [str(path) for path in paths]
    operation = manifest["operation"]
    if manifest["status"] != "complete" and operation["command"] == "build":
        raise IndexStoreError(f"{folder}: its build was interrupted; run `lm2vec index build` again with the same "
                              "arguments to finish it first")  # fmt: skip
    if manifest["status"] != "complete" and operation["sources"] != source_list:
        raise IndexStoreError(f"{folder}: an `lm2vec index add` of {operation['sources']} was interrupted; run it "
                              "again to finish it first")  # fmt: skip
    encoder = load_index_model(manifest["model"], device)
    manifest.update(status="building", operation={"command": "add", "sources": source_list})
    with _locked(folder):
        write_json_atomic(folder / MANIFEST_NAME, manifest)
        return _ingest(folder, manifest, encoder, paths, options)


def _ingest(folder: Path, manifest: dict[str, Any], encoder, paths: list[Path],
            options: WriteOptions) -> BuildReport:  # fmt: skip
    started = time.perf_counter()
    _remove_uncommitted_parts(folder, manifest)
    known = {h for part in manifest["parts"] for h in pq.read_table(folder / part["path"], columns=["hash"])["hash"]
             .to_pylist()}  # fmt: skip
    chunker = Chunker(encoder.tokenizer, ChunkingOptions(**manifest["chunking"]))
    pending: list[Passage] = []
    documents = unchanged = 0
    for path in paths:
        for source, document in read_documents(path):
            documents += 1
            for passage in chunker.passages(source, document):
                if passage.content_hash in known:
                    unchanged += 1
                    continue
                known.add(passage.content_hash)
                pending.append(passage)
    # Resumed work may already be committed: those passages count as unchanged here and are not encoded again.
    with tqdm(total=len(pending), unit="passage", desc="Encoding passages", disable=None) as bar:
        for start in range(0, len(pending), options.part_size):
            chunk = pending[start : start + options.part_size]
            vectors = encoder.encode([p.text for p in chunk], batch_size=options.batch_size, normalize=True)
            manifest["parts"].append(_write_part(folder, len(manifest["parts"]), chunk, vectors))
            write_json_atomic(folder / MANIFEST_NAME, manifest)
            bar.update(len(chunk))
    manifest["sources"] = sorted(set(manifest["sources"]) | {str(path) for path in paths})
    kind = _publish(folder, manifest, options.exact_limit)
    return BuildReport(sum(p["passages"] for p in manifest["parts"]), len(pending), unchanged, documents,
                       time.perf_counter() - started, kind, manifest["model"]["dimension"])  # fmt: skip


def _write_part(folder: Path, number: int, passages: list[Passage], vectors: np.ndarray) -> dict[str, Any]:
    records = [passage.record() for passage in passages]
    columns = {name: [record[name] for record in records] for name in PASSAGE_COLUMNS}
    flat = pa.array(vectors.astype(np.float32).reshape(-1))
    table = pa.table({**columns, "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    relative = f"parts/part-{number:06d}.parquet"
    path = folder / relative
    path.parent.mkdir(exist_ok=True)
    temporary = temporary_sibling(path)
    pq.write_table(table, temporary)
    os.replace(temporary, path)
    return {"path": relative, "passages": len(passages)}


def _remove_uncommitted_parts(folder: Path, manifest: dict[str, Any]) -> None:
    """Parts (and temporary files) an interrupted run wrote after its last manifest update."""
    committed = {part["path"] for part in manifest["parts"]}
    for path in (folder / "parts").glob("*") if (folder / "parts").is_dir() else ():
        if path.relative_to(folder).as_posix() not in committed:
            path.unlink()


def _publish(folder: Path, manifest: dict[str, Any], exact_limit: int) -> str:
    """Write a new FAISS generation over every committed part, then point the manifest at it."""
    import faiss

    vectors = np.concatenate([_part_vectors(folder / part["path"]) for part in manifest["parts"]] or
                             [np.zeros((0, manifest["model"]["dimension"]), np.float32)])  # fmt: skip
    dimension = manifest["model"]["dimension"]
    if len(vectors) <= exact_limit:
        index, kind, nprobe = faiss.IndexFlatIP(dimension), "exact (IndexFlatIP)", None
    else:
        lists = max(1, int(min(4 * math.sqrt(len(vectors)), len(vectors) // 39)))  # FAISS wants >= 39 points per list
        index = faiss.index_factory(dimension, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        nprobe = max(1, lists // 8)
        kind = f"approximate (IVF{lists},Flat, nprobe {nprobe})"
    index.add(vectors)
    previous = manifest["searchable"]
    generation = previous["generation"] + 1 if previous else 1
    name = f"index-{generation:06d}.faiss"
    remove_leftovers(folder / name)  # a killed earlier publish of this generation
    temporary = temporary_sibling(folder / name)
    faiss.write_index(index, str(temporary))
    os.replace(temporary, folder / name)
    manifest["searchable"] = {"generation": generation, "faiss": name, "kind": kind, "nprobe": nprobe,
                              "parts": len(manifest["parts"]), "passages": len(vectors)}  # fmt: skip
    manifest["status"] = "complete"
    write_json_atomic(folder / MANIFEST_NAME, manifest)
    for stale in folder.glob("index-*.faiss"):
        if stale.name != name:
            stale.unlink()
    return kind


def _part_vectors(path: Path) -> np.ndarray:
    column = pq.read_table(path, columns=["vector"])["vector"].combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size).astype(np.float32)


# --- reading -------------------------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict[str, Any]:
    if not (folder / MANIFEST_NAME).is_file():
        raise IndexStoreError(f"{folder} is not an lm2vec index (no {MANIFEST_NAME}); build one with "
                              "`lm2vec index build`")  # fmt: skip
    try:
        manifest = read_record(folder, MANIFEST_NAME, FORMAT_NAME)
    except ForeignFolderError as error:
        raise IndexStoreError(str(error)) from None
    assert manifest is not None
    if manifest["format_version"] != FORMAT_VERSION:
        raise IndexStoreError(f"{folder}: index format {manifest['format_version']}, this lm2vec reads "
                              f"{FORMAT_VERSION}; build it again")  # fmt: skip
    return manifest


@dataclass
class Hit:
    rank: int
    score: float
    id: int
    text: str
    source: str
    doc_id: str
    title: str
    metadata: dict[str, Any]


class SearchIndex:
    """The searchable generation of an index folder, loaded into memory."""

    def __init__(self, folder: Path) -> None:
        import faiss

        self.folder = folder
        self.manifest = read_manifest(folder)
        searchable = self.manifest["searchable"]
        if searchable is None:
            raise IndexStoreError(f"{folder}: the index build has not finished; run `lm2vec index build` again "
                                  "with the same arguments to resume it")  # fmt: skip
        self.index = faiss.read_index(str(folder / searchable["faiss"]))
        self.nprobe = searchable["nprobe"]
        parts = self.manifest["parts"][: searchable["parts"]]
        columns = list(PASSAGE_COLUMNS)
        tables = [pq.read_table(folder / part["path"], columns=columns) for part in parts]
        self.passages = pa.concat_tables(tables).to_pylist() if tables else []
        for passage in self.passages:
            passage["metadata"] = json.loads(passage["metadata"])

    @property
    def model(self) -> dict[str, Any]:
        return self.manifest["model"]

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, queries: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        """The k best passages per (normalised) query vector; `where` keeps passages whose metadata (or
        source, doc_id, title) equal the given values, before ranking."""
        import faiss

        selector = None
        if where:
            allowed = [i for i, passage in enumerate(self.passages) if _matches(passage, where)]
            if not allowed:
                return [[] for _ in range(len(queries))]
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        if self.nprobe is None:
            parameters = faiss.SearchParameters(sel=selector)
        else:
            parameters = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        k = min(k, len(self.passages))
        if k == 0:
            return [[] for _ in range(len(queries))]
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=parameters)
        results = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            hits = []
            for score, passage_id in zip(row_scores, row_ids, strict=True):
                if passage_id < 0:
                    continue
                passage = self.passages[passage_id]
                fields = {key: passage[key] for key in ("text", "source", "doc_id", "title", "metadata")}
                hits.append(Hit(len(hits) + 1, float(score), int(passage_id), **fields))
            results.append(hits)
        return results


def _matches(passage: dict[str, Any], where: dict[str, Any]) -> bool:
    for key, value in where.items():
        actual = passage[key] if key in ("source", "doc_id", "title") else passage["metadata"].get(key)
        if actual != value:
            return False
    return True
