"""A hostile user's cases for `lm2vec index build|add|remove` and `lm2vec search`, each a test: files lm2vec did
not write, an index inside its own source, edited and removed documents, the same text in two documents, empty
sources and symlinks, damaged index files, and kill -9 during an add that replaces documents."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.serving.documents import ChunkingOptions, read_documents
from lm2vec.serving.index import (
    MANIFEST_NAME,
    IndexStoreError,
    SearchIndex,
    WriteOptions,
    add_to_index,
    build_index,
)
from tests.test_faults import run_killed
from tests.tiny_models import WORDS

runner = CliRunner()
CHUNKING = ChunkingOptions(passage_tokens=24, overlap_tokens=6)
SMALL_PARTS = WriteOptions(part_size=4, batch_size=4)
CHUNK_FLAGS = ["--passage-tokens", "24", "--overlap-tokens", "6", "--part-size", "4", "--batch-size", "4"]


def paragraphs(seed: int, count: int) -> str:
    """Sentences of the tiny model's own words (an unknown word is <unk>: texts of them would encode alike)."""
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(WORDS[:-9]) for _ in range(rng.randint(5, 9))) + " ."  # noqa: E731
    return "\n\n".join(" ".join(sentence() for _ in range(3)) for _ in range(count))


def write_docs(folder: Path) -> Path:
    """Two text files and a JSONL file of three records (ids r1..r3), some passages each."""
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text(paragraphs(1, 4), encoding="utf-8")
    (folder / "b.txt").write_text(paragraphs(2, 3), encoding="utf-8")
    records = [{"id": f"r{i}", "text": paragraphs(10 + i, 2), "tenant": "A"} for i in (1, 2, 3)]
    (folder / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return folder


def edit_docs(folder: Path) -> None:
    """A changed paragraph in a.txt, b.txt deleted, a new c.txt, record r2 rewritten and r3 gone."""
    text = (folder / "a.txt").read_text(encoding="utf-8").split("\n\n")
    text[1] = paragraphs(99, 1)
    (folder / "a.txt").write_text("\n\n".join(text), encoding="utf-8")
    (folder / "b.txt").unlink()
    (folder / "c.txt").write_text(paragraphs(3, 2), encoding="utf-8")
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    records[1]["text"] = paragraphs(98, 2)
    (folder / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n", encoding="utf-8")


def build(sources: list[Path], model: Path, out: Path) -> None:
    build_index(sources, str(model), out, CHUNKING, SMALL_PARTS, echo=lambda _: None)


def state(folder: Path) -> list[tuple[str, str, str]]:
    """What search can return: each passage's source, text and metadata, in a stable order."""
    store = SearchIndex(folder)
    return sorted((p["source"], p["text"], json.dumps(p["metadata"], sort_keys=True)) for p in store.passages)


def vectors_by_passage(folder: Path) -> dict[tuple[str, str], np.ndarray]:
    store = SearchIndex(folder)
    vectors = store.index.reconstruct_n(0, store.index.ntotal)
    return {(p["source"], p["text"]): vector for p, vector in zip(store.passages, vectors, strict=True)}


def assert_same_index(folder: Path, reference: Path) -> None:
    assert state(folder) == state(reference)
    got, expected = vectors_by_passage(folder), vectors_by_passage(reference)
    assert all(np.allclose(got[key], expected[key], atol=1e-5) for key in expected)


def only_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def recorded_files(folder: Path) -> list[str]:
    """The files an index at rest consists of: its manifest, lock, FAISS file and parts, nothing else."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    searchable = manifest["searchable"]
    return sorted([MANIFEST_NAME, ".lock", searchable["faiss"], *(part["path"] for part in searchable["parts"])])


# --- 1. files lm2vec did not write -----------------------------------------------------------------------------
def test_a_symlinked_parts_folder_keeps_every_file_lm2vec_did_not_write(tmp_path: Path, tiny_llama: Path) -> None:
    docs, index, disk = write_docs(tmp_path / "docs"), tmp_path / "index", tmp_path / "other-disk"
    build([docs], tiny_llama, index)
    disk.mkdir()
    shutil.move(index / "parts", disk / "parts")  # big files moved to another disk, a link left in their place
    (index / "parts").symlink_to(disk / "parts")
    (disk / "parts" / "notes.txt").write_text("the user's own notes\n")
    (disk / "parts" / "part-999999.parquet").write_bytes(b"the user's file, named like lm2vec's parts")
    edit_docs(docs)

    result = runner.invoke(app, ["index", "add", str(index), str(docs), *CHUNK_FLAGS[4:]])
    assert result.exit_code == 0, result.output
    assert (disk / "parts" / "notes.txt").read_text() == "the user's own notes\n"
    assert (disk / "parts" / "part-999999.parquet").read_bytes() == b"the user's file, named like lm2vec's parts"
    # Its own parts it wrote through the link; the replaced ones, which it recorded, are gone.
    build([docs], tiny_llama, tmp_path / "fresh")
    assert_same_index(index, tmp_path / "fresh")
    assert files_under(index) == [f for f in recorded_files(index) if not f.startswith("parts/")]  # not through links
    manifest_parts = [Path(f).name for f in recorded_files(index) if f.startswith("parts/")]
    assert files_under(disk / "parts") == sorted([*manifest_parts, "notes.txt", "part-999999.parquet"])


# --- 2. an index inside its source, and the reverse -------------------------------------------------------------
def test_an_index_inside_its_source_folder_is_refused_before_any_work(tmp_path: Path, tiny_llama: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    result = runner.invoke(app, ["index", "build", str(docs), "--model", "no-such-model", "--out", str(docs / "idx")])
    assert result.exit_code == 2 and "inside the source folder" in only_error_line(result.output)
    assert not (docs / "idx").exists()

    index = tmp_path / "index"
    build([docs], tiny_llama, index)
    for source in (index, index / "parts"):
        result = runner.invoke(app, ["index", "add", str(index), str(source)])
        assert result.exit_code == 2 and "inside the index folder" in only_error_line(result.output)
    shutil.move(index, docs / "index")  # an index moved into its source folder
    result = runner.invoke(app, ["index", "add", str(docs / "index"), str(docs)])
    assert result.exit_code == 2 and "inside the source folder" in only_error_line(result.output)


def test_an_lm2vec_index_folder_is_never_read_as_documents(tmp_path: Path, tiny_llama: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    build([docs], tiny_llama, tmp_path / "index")
    shutil.copytree(tmp_path / "index", tmp_path / "more" / "old-index")
    (tmp_path / "more" / "note.txt").write_text(paragraphs(5, 1), encoding="utf-8")
    assert [label for label, _ in read_documents(tmp_path / "more")] == [str(tmp_path / "more" / "note.txt")]
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            str(tmp_path / "more" / "old-index"),
            "--model",
            "no-such-model",
            "--out",
            str(tmp_path / "i"),
        ],
    )
    assert result.exit_code == 2 and "is an lm2vec index" in only_error_line(result.output)


# --- 3. edited and removed documents ----------------------------------------------------------------------------
def test_adding_edited_documents_again_replaces_them(tmp_path: Path, tiny_llama: Path) -> None:
    docs, index = write_docs(tmp_path / "docs"), tmp_path / "index"
    build([docs], tiny_llama, index)
    before = {text for _, text, _ in state(index)}
    edit_docs(docs)
    report = add_to_index(index, [docs], SMALL_PARTS, echo=lambda _: None)

    build([docs], tiny_llama, tmp_path / "fresh")  # what the index must now hold: exactly the edited documents
    assert_same_index(index, tmp_path / "fresh")
    now = {text for _, text, _ in state(index)}
    assert report.encoded == len(now - before) > 0  # unchanged passages are not encoded again
    assert report.removed > 0 and report.passages == len(state(index))
    assert not any(source.endswith("b.txt") or source.endswith("#r3") for source, _, _ in state(index))

    # Adding unchanged documents again changes nothing: no passage is encoded or rewritten.
    parts = json.loads((index / MANIFEST_NAME).read_text())["searchable"]
    again = add_to_index(index, [docs], SMALL_PARTS, echo=lambda _: None)
    assert (again.encoded, again.removed) == (0, 0)
    assert json.loads((index / MANIFEST_NAME).read_text())["searchable"] == parts


def test_remove_takes_documents_out_of_the_index(tmp_path: Path, tiny_llama: Path) -> None:
    docs, index = write_docs(tmp_path / "docs"), tmp_path / "index"
    build([docs], tiny_llama, index)
    (docs / "b.txt").unlink()  # a file deleted from the disk can still be removed from the index
    result = runner.invoke(app, ["index", "remove", str(index), str(docs / "b.txt"), f"{docs}/records.jsonl#r2"])
    assert result.exit_code == 0, result.output
    sources = {source for source, _, _ in state(index)}
    assert sources == {str(docs / "a.txt"), f"{docs}/records.jsonl#r1", f"{docs}/records.jsonl#r3"}
    assert len(SearchIndex(index)) == SearchIndex(index).index.ntotal
    assert files_under(index) == recorded_files(index)

    result = runner.invoke(app, ["index", "remove", str(index), str(docs / "b.txt")])
    assert result.exit_code == 2 and "holds no documents from" in only_error_line(result.output)
    result = runner.invoke(app, ["index", "remove", str(index), str(docs)])
    assert result.exit_code == 0, result.output
    assert SearchIndex(index).passages == [] and SearchIndex(index).index.ntotal == 0


# --- 4. the same text in two documents --------------------------------------------------------------------------
def test_the_same_text_in_two_documents_keeps_both_with_their_metadata(tmp_path: Path, tiny_llama: Path) -> None:
    text = "the red cat sat on the mat ."
    records = [
        {"id": "1", "text": text, "tenant": "A"},
        {"id": "2", "text": text, "tenant": "B"},
        {"id": "3", "text": "a big dog ran on the road .", "tenant": "B"},
    ]
    (tmp_path / "shared.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    report = build_index(
        [tmp_path / "shared.jsonl"], str(tiny_llama), tmp_path / "index", CHUNKING, SMALL_PARTS, echo=lambda _: None
    )
    assert (report.passages, report.encoded) == (3, 2)  # two passages, one vector computed
    store = SearchIndex(tmp_path / "index")
    query = LM2Vec.from_pretrained(tiny_llama, device="cpu").encode([text], normalize=True)
    for tenant in ("A", "B"):
        hits = store.search(query, 1, {"tenant": tenant})[0]
        assert [(hit.text, hit.metadata["tenant"]) for hit in hits] == [(text, tenant)]


# --- 5. empty sources and symlinks ------------------------------------------------------------------------------
def test_a_source_without_documents_is_refused_before_the_model_loads(tmp_path: Path, tiny_llama: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"not a document")
    result = runner.invoke(
        app, ["index", "build", str(tmp_path / "empty"), "--model", "no-such-model", "--out", str(tmp_path / "idx")]
    )
    assert result.exit_code == 2 and f"no documents found in {tmp_path / 'empty'}" in only_error_line(result.output)
    assert not (tmp_path / "idx").exists()

    build([write_docs(tmp_path / "docs")], tiny_llama, tmp_path / "index")
    manifest = (tmp_path / "index" / MANIFEST_NAME).read_bytes()
    result = runner.invoke(app, ["index", "add", str(tmp_path / "index"), str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no documents found in" in only_error_line(result.output)
    assert (tmp_path / "index" / MANIFEST_NAME).read_bytes() == manifest


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_symlinks_inside_a_source_folder_are_skipped_and_counted(tmp_path: Path, tiny_llama: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "secret.txt").write_text(paragraphs(7, 1), encoding="utf-8")
    (outside / "folder" / "more.txt").write_text(paragraphs(8, 1), encoding="utf-8")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "own.txt").write_text(paragraphs(6, 1), encoding="utf-8")
    (docs / "secret.txt").symlink_to(outside / "secret.txt")
    (docs / "folder").symlink_to(outside / "folder")

    result = runner.invoke(
        app, ["index", "build", str(docs), "--model", str(tiny_llama), "--out", str(tmp_path / "index"), *CHUNK_FLAGS]
    )
    assert result.exit_code == 0, result.output
    assert f"{docs}: skipped 2 symlinks" in result.output
    assert {source for source, _, _ in state(tmp_path / "index")} == {str(docs / "own.txt")}
    # A link named on the command line is followed.
    add_to_index(tmp_path / "index", [docs / "secret.txt", docs / "folder"], SMALL_PARTS, echo=lambda _: None)
    expected = {str(docs / "own.txt"), str(docs / "secret.txt"), str(docs / "folder" / "more.txt")}
    assert {source for source, _, _ in state(tmp_path / "index")} == expected


# --- 6. damaged index files -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> tuple[Path, Path]:
    """An index of the docs, and a smaller one (for a FAISS file of another size)."""
    folder = tmp_path_factory.mktemp("built")
    docs = write_docs(folder / "docs")
    build([docs], tiny_llama, folder / "index")
    build([docs / "b.txt"], tiny_llama, folder / "small")
    return folder / "index", folder / "small"


def _manifest(index: Path) -> dict:
    return json.loads((index / MANIFEST_NAME).read_text())


def _faiss(index: Path) -> Path:
    return index / _manifest(index)["searchable"]["faiss"]


def _edit_manifest(index: Path, change) -> None:
    manifest = _manifest(index)
    change(manifest)
    (index / MANIFEST_NAME).write_text(json.dumps(manifest))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _foreign_faiss(index: Path, small: Path) -> None:
    """Another index's FAISS file, and (as if the manifest were edited too) its checksum."""
    shutil.copy(_faiss(small), _faiss(index))
    digest = hashlib.sha256(_faiss(index).read_bytes()).hexdigest()
    _edit_manifest(index, lambda m: m["searchable"].update(sha256=digest))


DAMAGES = {
    "faiss truncated": (lambda i, s: _faiss(i).write_bytes(_faiss(i).read_bytes()[:200]), "index-"),
    "faiss empty": (lambda i, s: _faiss(i).write_bytes(b""), "index-"),
    "faiss header bit flipped": (lambda i, s: _flip(_faiss(i), 2), "index-"),
    "faiss vector bit flipped": (lambda i, s: _flip(_faiss(i), _faiss(i).stat().st_size - 9), "index-"),
    "faiss of another index": (lambda i, s: shutil.copy(_faiss(s), _faiss(i)), "index-"),
    "faiss vector count differs": (_foreign_faiss, "vectors"),
    "manifest truncated": (
        lambda i, s: (i / MANIFEST_NAME).write_text((i / MANIFEST_NAME).read_text()[:300]),
        MANIFEST_NAME,
    ),
    "manifest without model": (lambda i, s: _edit_manifest(i, lambda m: m.pop("model")), "'model'"),
    "manifest without faiss": (lambda i, s: _edit_manifest(i, lambda m: m["searchable"].pop("faiss")), "'faiss'"),
    "part deleted": (lambda i, s: (i / _manifest(i)["searchable"]["parts"][1]["path"]).unlink(), "part-"),
    "part truncated": (
        lambda i, s: (i / _manifest(i)["searchable"]["parts"][0]["path"]).write_bytes(b"PAR1"),
        "part-",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_index_is_one_error_line_that_says_how_to_repair_it(
    damage: str, built: tuple[Path, Path], tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(built[0], index)
    change, named = DAMAGES[damage]
    change(index, built[1])
    for command in (["search", str(index), "a query"], ["index", "add", str(index), str(built[0].parent / "docs")]):
        result = runner.invoke(app, command)
        line = only_error_line(result.output)
        assert result.exit_code == 2 and named in line and "damaged" in line, line
        assert "lm2vec index build" in line  # the repair: build it again


# --- 7. kill -9 during an add that replaces documents -----------------------------------------------------------
@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL")
def test_kill_9_during_an_add_that_replaces_documents(tmp_path: Path, tiny_llama: Path) -> None:
    docs, index, reference = write_docs(tmp_path / "docs"), tmp_path / "index", tmp_path / "reference"
    build([docs], tiny_llama, index)
    old = state(index)
    edit_docs(docs)
    shutil.copytree(index, reference)
    add_to_index(reference, [docs], SMALL_PARTS, echo=lambda _: None)
    new = state(reference)
    assert old != new

    arguments = ["index", "add", str(index), str(docs), "--part-size", "4", "--batch-size", "4"]
    report = tmp_path / "report.json"
    # Each run is killed at a later point: while it rewrites the first of two parts without the replaced passages,
    # while it writes the second part of new passages (after the two rewrites), while it writes the FAISS file, and
    # after the new state is committed but before the old one's files are deleted. Each time the index opens and
    # holds the old state or the new one.
    for target, nth, expected, work_in_progress in (
        ("lm2vec.serving.index:_write_table", 1, old, False),
        ("lm2vec.serving.index:_write_table", 4, old, True),
        ("lm2vec.serving.index:_write_bytes", 1, old, True),
        ("lm2vec.serving.index:_collect_unused", 2, new, False),
    ):
        run_killed(target, nth, arguments, tmp_path, report)
        assert state(index) == expected, f"killed at {target} #{nth}"
        manifest = _manifest(index)
        assert (manifest["parts"] != manifest["searchable"]["parts"]) == work_in_progress  # committed, not searchable
        if expected is old:  # another add waits for this one to be finished
            with pytest.raises(IndexStoreError, match="was interrupted; run it again"):
                add_to_index(index, [docs / "a.txt"], SMALL_PARTS, echo=lambda _: None)
    assert files_under(index) != recorded_files(index)  # the last kill left the old state's files behind

    add_to_index(index, [docs], SMALL_PARTS, echo=lambda _: None)  # the interrupted add, run again, completes
    assert_same_index(index, reference)
    assert files_under(index) == recorded_files(index)  # and nothing of the killed runs is left behind
    assert not [name for name in os.listdir(index / "parts") if name.startswith(".")]
