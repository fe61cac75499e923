"""A passage index on disk: FAISS vectors, passage text and metadata, and a manifest that names the model.

Layout of an index folder:
    lm2vec_index.json          manifest: model (source, folder, weights hash, encoder config), chunking, sources,
                               the parts being written, the searchable view (its parts and FAISS file, with the
                               file's SHA-256), and `unused`: files of the index that neither of them needs
    parts/part-000000.parquet  passages with their document's label, content hash and normalised vector
    index-000001.faiss         the FAISS index over the searchable view's parts
A document is known by its label (its file's absolute path, with '#id' for a record: lm2vec.serving.documents).
Indexing a source again brings what the index holds from that path in line with it: a document whose passages
are unchanged (or only appended to) keeps them, a changed one is replaced, one that is gone is removed. The same
text in two documents is two passages with one vector: no text is encoded twice (content hash).

Each file is recorded in the manifest (in `unused`) before it is written, written to a temporary sibling and
renamed, and the manifest is rewritten after it. So lm2vec deletes only files it recorded, never anything else
in a folder (`parts/` may be a symlink to another disk), and after a kill the next command cleans up and the
interrupted one, run again, resumes. Search reads the `searchable` view, which a command in progress does not
change until it is done; opening it checks the FAISS file's SHA-256 and vector count against the parts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from lm2vec.artifacts import ForeignFolderError, claim_folder, remove_leftovers, temporary_sibling, write_json_atomic
from lm2vec.data.readers import Document
from lm2vec.errors import LM2VecError
from lm2vec.options import Options
from lm2vec.serving.documents import (
    MANIFEST_NAME,
    Chunker,
    ChunkingOptions,
    Passage,
    check_sources,
    read_sources,
)

FORMAT_NAME = "lm2vec-index"
FORMAT_VERSION = 2
PASSAGE_COLUMNS = ("hash", "text", "source", "doc_id", "title", "metadata")
DOCUMENT_COLUMNS = ("hash", "doc_id", "title", "metadata")  # a held passage, compared with a new one
PART_NAME = "parts/part-{:06d}.parquet"
FAISS_NAME = "index-{:06d}.faiss"


class IndexStoreError(LM2VecError):
    """A problem with an index folder or its inputs, worded for the user."""


@dataclass
class BuildReport:
    passages: int  # in the index now
    encoded: int  # by this command
    reused: int  # passages written with the vector of a text encoded earlier (content hash)
    unchanged: int  # passages read that the index holds already
    removed: int  # passages of documents that changed or are gone
    documents: int  # read by this command
    seconds: float
    index_kind: str
    dimension: int

    def summary(self, folder: Path) -> str:
        rate = self.encoded / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{folder}: {self.passages:,} passages, {self.index_kind} index of {self.dimension} dims; this run: "
            f"{self.documents:,} documents, {self.encoded:,} passages encoded ({rate:,.1f}/s), "
            f"{self.reused:,} reused (same text encoded before), {self.unchanged:,} unchanged, {self.removed:,} "
            f"removed (changed or gone), {self.seconds:.1f}s"
        )


# --- the model an index belongs to ---------------------------------------------------------------------------
def describe_model(source: str, encoder) -> dict[str, Any]:
    """Source as given, the resolved folder, a SHA-256 over its weight files, and the encoder config."""
    from lm2vec.modeling.fingerprint import weights_record  # here: lm2vec.modeling imports torch
    from lm2vec.modeling.sources import resolve_source

    folder = Path(resolve_source(source)).resolve()
    return {
        "source": source,
        "folder": str(folder),
        **weights_record(folder),
        "encoder": asdict(encoder.config),
        "dimension": encoder.get_sentence_embedding_dimension(),
    }


def check_same_model(recorded: dict[str, Any], source: str, encoder) -> None:
    """Raise unless `encoder` (loaded from `source`) is the model the index was built with."""
    from lm2vec.modeling.fingerprint import same_weights
    from lm2vec.modeling.sources import resolve_source

    if not same_weights(Path(resolve_source(source)).resolve(), recorded):
        raise IndexStoreError(
            f"{source} is not the model this index was built with ({recorded['source']}: its weights differ)"
        )
    for key in ("pooling", "max_length", "instruction_template", "bidirectional"):
        if recorded["encoder"][key] != getattr(encoder.config, key):
            raise IndexStoreError(
                f"the index was built with {key}={recorded['encoder'][key]!r}, the model "
                f"has {getattr(encoder.config, key)!r}"
            )


def load_index_model(recorded: dict[str, Any], device: str | None = None):
    """The encoder an index was built with, with the same encoder config, verified by its weights."""
    from lm2vec import LM2Vec

    settings = recorded["encoder"]
    # The resolved folder, unless it has gone (a cleared cache): then the source, resolved again.
    source = recorded["folder"] if Path(recorded["folder"]).exists() else recorded["source"]
    encoder = LM2Vec.from_pretrained(
        source, pooling=settings["pooling"], max_length=settings["max_length"], device=device
    )
    check_same_model(recorded, source, encoder)
    return encoder


# --- writing -------------------------------------------------------------------------------------------------
@dataclass
class WriteOptions(Options):
    batch_size: int = field(default=32, metadata={"help": "passages per forward pass"})
    part_size: int = field(
        default=256,
        metadata={"help": "passages per part (a checkpoint): what an interrupted build can lose"},
    )
    exact_limit: int = field(
        default=50_000,
        metadata={"help": "up to this many passages an exact index, above it an IVF index"},
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            *((value >= 1, f"{name} must be at least 1, got {value}.") for name, value in asdict(self).items()),
        ]


@contextmanager
def _writing(folder: Path) -> Iterator[dict[str, Any]]:
    """The manifest of the index in `folder`, for this command alone: a second writer gets a clear error."""
    read_manifest(folder)  # an index: a lock file goes into no other folder
    with (folder / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexStoreError(f"{folder}: another lm2vec command is writing this index") from None
        yield read_manifest(folder)  # as the previous writer left it


def build_index(
    sources: Sequence[str | Path],
    model: str,
    out: Path,
    chunking: ChunkingOptions,
    options: WriteOptions,
    device: str | None = None,
    echo: Callable[[str], None] = print,
) -> BuildReport:
    """Index `sources` with `model` into `out`; an interrupted build of the same inputs is resumed."""
    _check_apart(out, sources)
    paths = check_sources(sources)
    source_list = [str(path) for path in paths]
    manifest = read_manifest(out) if (out / MANIFEST_NAME).is_file() else None
    if manifest is not None and manifest["status"] == "complete":
        raise IndexStoreError(f"{out} already holds a complete index; add documents with `lm2vec index add`")
    if manifest is not None and manifest["operation"] != {"command": "build", "sources": source_list}:
        raise IndexStoreError(
            f"{out} holds an interrupted `lm2vec index {manifest['operation']['command']}` of "
            f"{manifest['operation']['sources']}; run that again to finish it"
        )
    documents = read_sources(paths, echo)
    if manifest is None:
        try:
            claim_folder(out, MANIFEST_NAME, FORMAT_NAME)
        except ForeignFolderError as error:
            raise IndexStoreError(str(error)) from None
    from lm2vec import LM2Vec

    encoder = LM2Vec.from_pretrained(model, device=device)
    if chunking.passage_tokens > encoder.config.max_length - 2:
        raise IndexStoreError(
            f"passage_tokens={chunking.passage_tokens} does not fit the model's max_length="
            f"{encoder.config.max_length} (with its special tokens)"
        )
    if manifest is None:
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "status": "building",
            "model": describe_model(model, encoder),
            "chunking": asdict(chunking),
            "sources": source_list,
            "operation": {"command": "build", "sources": source_list},
            "parts": [],
            "searchable": None,
            "unused": [],
            "next_file": 0,
        }
        _save(out, manifest)
    else:
        check_same_model(manifest["model"], model, encoder)
        if manifest["chunking"] != asdict(chunking):
            raise IndexStoreError(
                f"{out}: the interrupted build used chunking {manifest['chunking']}; resume it with the same options"
            )
        echo(f"resuming the build in {out}: {sum(p['passages'] for p in manifest['parts']):,} passages kept")
    with _writing(out) as manifest:
        return _ingest(out, manifest, _passages(documents, encoder, manifest["chunking"]), encoder, options)


def add_to_index(
    folder: Path,
    sources: Sequence[str | Path],
    options: WriteOptions,
    device: str | None = None,
    echo: Callable[[str], None] = print,
) -> BuildReport:
    """Index the documents of `sources` into the index in `folder`: what it holds from these paths is replaced
    by what they hold now (unchanged passages are kept, and no text is encoded twice)."""
    _check_apart(folder, sources)
    paths = check_sources(sources)
    source_list = [str(path) for path in paths]
    with _writing(folder) as manifest:
        _check_ready(folder, manifest, "add", source_list, echo)
        documents = read_sources(paths, echo)
        encoder = load_index_model(manifest["model"], device)
        _start(folder, manifest, "add", source_list, sorted(set(manifest["sources"]) | set(source_list)))
        return _ingest(folder, manifest, _passages(documents, encoder, manifest["chunking"]), encoder, options)


def remove_from_index(folder: Path, sources: Sequence[str | Path], echo: Callable[[str], None] = print) -> BuildReport:
    """Remove the documents the index in `folder` holds from `sources`: files or folders (which need not exist
    any more), or one record as FILE#ID."""
    scope = [os.path.abspath(source) for source in sources]
    with _writing(folder) as manifest:
        _check_ready(folder, manifest, "remove", scope, echo)
        if manifest["status"] == "complete":
            tables = [_read_part(folder, part, ("source", "doc_id")) for part in manifest["parts"]]
            documents = {
                pair
                for table in tables
                for pair in zip(table["source"].to_pylist(), table["doc_id"].to_pylist(), strict=True)
            }
            for path in scope:
                if not any(_in_scope(source, doc_id, {path}) for source, doc_id in documents):
                    raise IndexStoreError(f"{folder} holds no documents from {path}")
        kept = [source for source in manifest["sources"] if not _under(source, set(scope))]
        _start(folder, manifest, "remove", scope, kept)
        return _ingest(folder, manifest, {}, None, WriteOptions())


def _check_apart(folder: Path, sources: Sequence[str | Path]) -> None:
    """Refuse a source inside the index folder, or the index folder (or its linked parts) inside a source folder:
    lm2vec would read its own index as documents."""
    places = [folder.resolve(), (folder / "parts").resolve()]
    for source in map(Path, sources):
        real = source.resolve()
        if any(real.is_relative_to(place) for place in places):
            raise IndexStoreError(f"the source {source} is inside the index folder {folder}; an index is not documents")
        if source.is_dir() and any(place.is_relative_to(real) for place in places):
            raise IndexStoreError(
                f"the index folder {folder} is inside the source folder {source}, where its files "
                "would be read as documents; put the index somewhere else"
            )


def _check_ready(
    folder: Path, manifest: dict[str, Any], command: str, sources: list[str], echo: Callable[[str], None]
) -> None:
    """Refuse `command` while another one is interrupted, and check that the index opens (before a model loads)."""
    operation = manifest["operation"]
    if manifest["status"] != "complete" and operation["command"] == "build":
        raise IndexStoreError(
            f"{folder}: its build was interrupted; run `lm2vec index build` again with the same "
            "arguments to finish it first"
        )
    if manifest["status"] != "complete" and operation != {"command": command, "sources": sources}:
        raise IndexStoreError(
            f"{folder}: an `lm2vec index {operation['command']}` of {', '.join(operation['sources'])}"
            " was interrupted; run it again to finish it first"
        )
    if manifest["status"] != "complete":
        echo(f"finishing the interrupted `lm2vec index {command}` in {folder}")
    _open_searchable(folder, manifest)


def _start(folder: Path, manifest: dict[str, Any], command: str, scope: list[str], sources: list[str]) -> None:
    manifest.update(status="building", operation={"command": command, "sources": scope}, sources=sources)
    _save(folder, manifest)


def _passages(documents: list[tuple[str, Document]], encoder, chunking: dict[str, Any]) -> dict[str, list[Passage]]:
    """Each document's passages by its label, in reading order; a text repeated within a document, once."""
    chunker = Chunker(encoder.tokenizer, ChunkingOptions(**chunking))
    passages: dict[str, list[Passage]] = {}
    for label, document in documents:
        if label not in passages:  # a document read twice (overlapping sources)
            passages[label] = list({p.content_hash: p for p in chunker.passages(label, document)}.values())
    return passages


def _ingest(
    folder: Path, manifest: dict[str, Any], passages: dict[str, list[Passage]], encoder, options: WriteOptions
) -> BuildReport:
    """Make the documents the index holds from the operation's sources those of `passages`, then publish.

    A held document whose passages are a prefix of its new ones keeps them (unchanged, or resumed after a kill)
    and gets the rest; any other held document from these sources is dropped, and its new passages written."""
    started = time.perf_counter()
    _collect_unused(folder, manifest)
    searchable = manifest["searchable"]
    on_disk = {part["path"]: part for part in [*(searchable["parts"] if searchable else []), *manifest["parts"]]}
    tables = {path: _read_part(folder, part, ("source", *DOCUMENT_COLUMNS)) for path, part in on_disk.items()}
    held: dict[str, list[tuple]] = {}  # each document's passages (their DOCUMENT_COLUMNS), by label
    for part in manifest["parts"]:
        columns = tables[part["path"]].select(["source", *DOCUMENT_COLUMNS]).to_pydict().values()
        for source, *passage in zip(*columns, strict=True):
            held.setdefault(source, []).append(tuple(passage))
    scope, doc_id = set(manifest["operation"]["sources"]), DOCUMENT_COLUMNS.index("doc_id")
    stale = set()
    for label, rows in held.items():
        new = [tuple(p.record()[name] for name in DOCUMENT_COLUMNS) for p in passages.get(label, [])]
        if _in_scope(label, rows[0][doc_id], scope) and rows != new[: len(rows)]:
            stale.add(label)
    removed = _drop_documents(folder, manifest, tables, stale)
    kept = {label: 0 if label in stale else len(held.get(label, [])) for label in passages}
    pending = [passage for label, new in passages.items() for passage in new[kept[label] :]]
    vectors = _Vectors(folder, on_disk.values(), tables)
    encoded = _write_passages(folder, manifest, pending, vectors, encoder, options)
    kind = _publish(folder, manifest, options.exact_limit)
    return BuildReport(
        sum(p["passages"] for p in manifest["parts"]),
        encoded,
        len(pending) - encoded,
        sum(kept.values()),
        removed,
        len(passages),
        time.perf_counter() - started,
        kind,
        manifest["model"]["dimension"],
    )


def _under(path: str, scope: set[str]) -> bool:
    """Whether `path` is one of the paths in `scope` or inside one."""
    return any(str(each) in scope for each in (Path(path), *Path(path).parents))


def _in_scope(label: str, doc_id: str, scope: set[str]) -> bool:
    """Whether the document `label` is one of `scope` (a FILE#ID) or comes from a file or folder in it."""
    return label in scope or _under(label.removesuffix(f"#{doc_id}"), scope)


class _Vectors:
    """The vector of every text the index has encoded, by content hash: read from a part on disk when first asked
    for, or kept from this command's encoding."""

    def __init__(self, folder: Path, parts: Iterable[dict[str, Any]], tables: dict[str, pa.Table]) -> None:
        self.folder = folder
        self.places: dict[str, tuple[dict[str, Any], int]] = {}
        for part in parts:
            for row, content_hash in enumerate(tables[part["path"]]["hash"].to_pylist()):
                self.places.setdefault(content_hash, (part, row))
        self.read: dict[str, np.ndarray] = {}  # a part's vectors, by its path
        self.encoded: dict[str, np.ndarray] = {}

    def __contains__(self, content_hash: str) -> bool:
        return content_hash in self.encoded or content_hash in self.places

    def __getitem__(self, content_hash: str) -> np.ndarray:
        if content_hash in self.encoded:
            return self.encoded[content_hash]
        part, row = self.places[content_hash]
        if part["path"] not in self.read:
            self.read[part["path"]] = _part_vectors(self.folder, part)
        return self.read[part["path"]][row]


def _write_passages(
    folder: Path, manifest: dict[str, Any], passages: list[Passage], vectors: _Vectors, encoder, options: WriteOptions
) -> int:
    """Append `passages` to the parts, a part committed as soon as it is written; how many texts were encoded."""
    starts = range(0, len(passages), options.part_size)
    names = _reserve(folder, manifest, PART_NAME, len(starts))
    encoded = 0
    with tqdm(total=len(passages), unit="passage", desc="Encoding passages", disable=None) as bar:
        for name, start in zip(names, starts, strict=True):
            chunk = passages[start : start + options.part_size]
            new = {p.content_hash: p.text for p in chunk if p.content_hash not in vectors}
            if new:
                encoded_now = encoder.encode(list(new.values()), batch_size=options.batch_size, normalize=True)
                vectors.encoded.update(zip(new, encoded_now, strict=True))
            encoded += len(new)
            table = _passage_table(chunk, np.stack([vectors[p.content_hash] for p in chunk]))
            _set_parts(folder, manifest, [*manifest["parts"], _write_table(folder, name, table)])
            bar.update(len(chunk))
    return encoded


def _drop_documents(folder: Path, manifest: dict[str, Any], tables: dict[str, pa.Table], labels: set[str]) -> int:
    """Rewrite the parts that hold passages of the documents `labels` without them (a part left empty goes),
    committed in one manifest write; how many passages were dropped."""
    plan = [
        (part, [source not in labels for source in tables[part["path"]]["source"].to_pylist()])
        for part in manifest["parts"]
    ]
    names = iter(_reserve(folder, manifest, PART_NAME, sum(any(keep) and not all(keep) for _, keep in plan)))
    parts = []
    for part, keep in plan:
        if all(keep):
            parts.append(part)
        elif any(keep):
            parts.append(_write_table(folder, next(names), _read_part(folder, part).filter(pa.array(keep))))
    if parts != manifest["parts"]:
        _set_parts(folder, manifest, parts)
    return sum(keep.count(False) for _, keep in plan)


def _reserve(folder: Path, manifest: dict[str, Any], template: str, count: int) -> list[str]:
    """Names for `count` new files, recorded in the manifest (as unused) before any of them is written. A name
    some other file has already (not lm2vec's: it records its own) is skipped, so that file is never overwritten."""
    names: list[str] = []
    while len(names) < count:
        name = template.format(manifest["next_file"])
        manifest["next_file"] += 1
        if not (folder / name).exists() and not (folder / name).is_symlink():
            names.append(name)
    if names:
        manifest["unused"] += names
        _save(folder, manifest)
    return names


def _set_parts(folder: Path, manifest: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Make `parts` the index's parts in one manifest write: new ones leave `unused`, and the ones left out join
    it (deleted once the searchable view does not use them either)."""
    paths = {part["path"] for part in parts}
    retired = [part["path"] for part in manifest["parts"] if part["path"] not in paths]
    manifest["unused"] = [path for path in manifest["unused"] if path not in paths] + retired
    manifest["parts"] = parts
    _save(folder, manifest)


def _passage_table(passages: list[Passage], vectors: np.ndarray) -> pa.Table:
    records = [passage.record() for passage in passages]
    columns = {name: [record[name] for record in records] for name in PASSAGE_COLUMNS}
    flat = pa.array(vectors.astype(np.float32).reshape(-1))
    return pa.table({**columns, "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def _write_table(folder: Path, relative: str, table: pa.Table) -> dict[str, Any]:
    path = folder / relative
    path.parent.mkdir(exist_ok=True)
    temporary = temporary_sibling(path)
    pq.write_table(table, temporary)
    os.replace(temporary, path)
    return {"path": relative, "passages": table.num_rows}


def _write_bytes(path: Path, data: bytes) -> None:
    temporary = temporary_sibling(path)
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _collect_unused(folder: Path, manifest: dict[str, Any]) -> None:
    """Delete the recorded files that neither the parts nor the searchable view use, with their temporary
    siblings: what a replaced view or a killed command left."""
    searchable = manifest["searchable"]
    used = {part["path"] for part in manifest["parts"]}
    if searchable is not None:
        used |= {searchable["faiss"], *(part["path"] for part in searchable["parts"])}
    kept = []
    for relative in dict.fromkeys(manifest["unused"]):
        if relative in used:
            kept.append(relative)
            continue
        (folder / relative).unlink(missing_ok=True)
        remove_leftovers(folder / relative)
    if kept != manifest["unused"]:
        manifest["unused"] = kept
        _save(folder, manifest)


def _publish(folder: Path, manifest: dict[str, Any], exact_limit: int) -> str:
    """Make the parts searchable: a FAISS file over them, then the manifest pointing at both; then the files of
    the previous view go. Parts that did not change keep the FAISS file they have."""
    import faiss

    previous = manifest["searchable"]
    if previous is None or previous["parts"] != manifest["parts"]:
        dimension = manifest["model"]["dimension"]
        vectors = np.concatenate(
            [_part_vectors(folder, part) for part in manifest["parts"]] or [np.zeros((0, dimension), np.float32)]
        )
        if len(vectors) <= exact_limit:
            index, kind, nprobe = faiss.IndexFlatIP(dimension), "exact (IndexFlatIP)", None
        else:
            lists = max(1, int(min(4 * math.sqrt(len(vectors)), len(vectors) // 39)))  # FAISS wants >= 39 per list
            index = faiss.index_factory(dimension, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            nprobe = max(1, lists // 8)
            kind = f"approximate (IVF{lists},Flat, nprobe {nprobe})"
        index.add(vectors)
        [name] = _reserve(folder, manifest, FAISS_NAME, 1)
        data = faiss.serialize_index(index).tobytes()
        _write_bytes(folder / name, data)
        manifest["unused"].remove(name)
        if previous is not None:
            manifest["unused"].append(previous["faiss"])
        manifest["searchable"] = {
            "faiss": name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "kind": kind,
            "nprobe": nprobe,
            "parts": list(manifest["parts"]),
        }
    manifest["status"] = "complete"
    _save(folder, manifest)
    _collect_unused(folder, manifest)
    return manifest["searchable"]["kind"]


def _save(folder: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(folder / MANIFEST_NAME, manifest)


# --- reading -------------------------------------------------------------------------------------------------
def _damaged(folder: Path, problem: str) -> IndexStoreError:
    return IndexStoreError(
        f"{folder} is damaged: {problem}. Build the index again with `lm2vec index build` into a "
        f"new folder (or remove {folder} first)"
    )


_OWN_FILE = re.compile(r"parts/part-\d{6,}\.parquet|index-\d{6,}\.faiss")  # names lm2vec gives; it deletes no other
_PART = {"path": _OWN_FILE, "passages": int}
_MANIFEST = {
    "status": str,
    "model": {
        "source": str,
        "folder": str,
        "weights_sha256": str,
        "weight_files": list,
        "dimension": int,
        "encoder": {"pooling": str, "max_length": int, "instruction_template": str, "bidirectional": bool},
    },
    "chunking": {"passage_tokens": int, "overlap_tokens": int, "lang": str},
    "sources": [str],
    "operation": {"command": str, "sources": [str]},
    "parts": [_PART],
    "searchable": (
        type(None),
        {"faiss": _OWN_FILE, "sha256": str, "kind": str, "nprobe": (type(None), int), "parts": [_PART]},
    ),
    "unused": [_OWN_FILE],
    "next_file": int,
}


def _shape_problem(value: Any, shape: Any, where: str) -> str | None:
    """What keeps `value` from having `shape` (a type; a pattern a string matches; a dict of the shapes of its
    keys; a one-item list, the shape of every item; a tuple of alternatives), or None."""
    if isinstance(shape, tuple):
        problems = [_shape_problem(value, alternative, where) for alternative in shape]
        return None if None in problems else problems[-1]
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where} is not an object"
        for key, inner in shape.items():
            if key not in value:
                return f"has no {key!r}" + (f" in {where}" if where else "")
            problem = _shape_problem(value[key], inner, f"{where}.{key}".lstrip("."))
            if problem:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is not a list"
        return next(
            filter(None, (_shape_problem(item, shape[0], f"{where}[{i}]") for i, item in enumerate(value))), None
        )
    if isinstance(shape, re.Pattern):
        return None if isinstance(value, str) and shape.fullmatch(value) else f"{where} is not a file of the index"
    return None if isinstance(value, shape) else f"{where} is not {shape.__name__}"


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the index in `folder`; IndexStoreError if there is none, it is not lm2vec's, or it is
    damaged (not JSON, or without a part it needs)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise IndexStoreError(
            f"{folder} is not an lm2vec index (no {MANIFEST_NAME}); build one with `lm2vec index build`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(folder, f"{MANIFEST_NAME} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexStoreError(f"{path} was not written by lm2vec (no format {FORMAT_NAME!r}); leaving it alone")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexStoreError(
            f"{folder}: index format {manifest.get('format_version')}, this lm2vec reads "
            f"{FORMAT_VERSION}; build it again"
        )
    problem = _shape_problem(manifest, _MANIFEST, "")
    if problem:
        raise _damaged(folder, f"{MANIFEST_NAME} {problem}")
    return manifest


@contextmanager
def _reading(folder: Path, relative: str) -> Iterator[None]:
    """A file of the index that is missing or unreadable is a damaged index."""
    try:
        yield
    except FileNotFoundError:
        raise _damaged(folder, f"{relative} is missing") from None
    except (OSError, pa.ArrowException) as error:
        raise _damaged(folder, f"{relative} cannot be read ({error})") from None


def _read_part(folder: Path, part: dict[str, Any], columns: Sequence[str] | None = None) -> pa.Table:
    with _reading(folder, part["path"]):
        table = pq.read_table(folder / part["path"], columns=None if columns is None else list(columns))
    _check_rows(folder, part, table.num_rows)
    return table


def _check_rows(folder: Path, part: dict[str, Any], rows: int) -> None:
    if rows != part["passages"]:
        raise _damaged(folder, f"{part['path']} holds {rows:,} passages, not the {part['passages']:,} recorded")


def _part_vectors(folder: Path, part: dict[str, Any]) -> np.ndarray:
    column = _read_part(folder, part, ["vector"])["vector"].combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size).astype(np.float32)


def _open_searchable(folder: Path, manifest: dict[str, Any]):
    """The FAISS index of the searchable view (None before a build finishes), checked: the file is the one lm2vec
    wrote (SHA-256), and holds a vector of the model's size for each passage of the view's parts."""
    import faiss

    searchable = manifest["searchable"]
    if searchable is None:
        return None
    name = searchable["faiss"]
    with _reading(folder, name):
        data = (folder / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != searchable["sha256"]:
        raise _damaged(folder, f"{name} is not the file lm2vec wrote (truncated or changed: its SHA-256 differs)")
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    for part in searchable["parts"]:
        with _reading(folder, part["path"]):
            rows = pq.read_metadata(folder / part["path"]).num_rows
        _check_rows(folder, part, rows)
    passages, dimension = sum(part["passages"] for part in searchable["parts"]), manifest["model"]["dimension"]
    if (index.ntotal, index.d) != (passages, dimension):
        raise _damaged(
            folder,
            f"{name} holds {index.ntotal:,} vectors of {index.d} dims for {passages:,} passages of {dimension} dims",
        )
    return index


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
    """The searchable view of an index folder, loaded into memory and checked (`_open_searchable`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = read_manifest(folder)
        self.index = _open_searchable(folder, self.manifest)
        if self.index is None:
            raise IndexStoreError(
                f"{folder}: the index build has not finished; run `lm2vec index build` again "
                "with the same arguments to resume it"
            )
        searchable = self.manifest["searchable"]
        self.nprobe = searchable["nprobe"]
        tables = [_read_part(folder, part, PASSAGE_COLUMNS) for part in searchable["parts"]]
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
