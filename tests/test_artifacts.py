"""lm2vec.artifacts: which folders lm2vec may write into or delete, and writes that a failure never leaves half done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm2vec.artifacts import (
    PARTIAL,
    ForeignFolderError,
    append_jsonl,
    atomic_folder,
    claim_folder,
    read_record,
    remove_recorded,
    write_json_atomic,
    write_jsonl_atomic,
)
from lm2vec.data import shards
from lm2vec.data.shards import CorpusWriter, Manifest, prepare_output
from lm2vec.pipeline.plan import plan_run
from lm2vec.pipeline.run import Pipeline

QUICK = Path(__file__).resolve().parents[1] / "recipes" / "smollm2-en-quick.toml"


def test_a_folder_is_claimed_only_when_new_empty_or_lm2vecs(tmp_path: Path) -> None:
    assert claim_folder(tmp_path / "new" / "run", "record.json", "lm2vec-test") is None
    assert (tmp_path / "new" / "run").is_dir()
    assert claim_folder(tmp_path / "new" / "run", "record.json", "lm2vec-test") is None  # still empty

    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.tex").write_text("mine")
    with pytest.raises(ForeignFolderError, match=f"{users} is not empty and was not made by lm2vec"):
        claim_folder(users, "record.json", "lm2vec-test")
    (users / "record.json").write_text('{"name": "some other tool"}')
    with pytest.raises(ForeignFolderError, match="was not written by lm2vec"):
        claim_folder(users, "record.json", "lm2vec-test")
    (users / "record.json").write_text("not even JSON")
    with pytest.raises(ForeignFolderError, match="was not written by lm2vec"):
        read_record(users, "record.json", "lm2vec-test")

    write_json_atomic(users / "record.json", {"format": "lm2vec-test", "n": 1})
    assert claim_folder(users, "record.json", "lm2vec-test") == {"format": "lm2vec-test", "n": 1}
    (users / "old.json").write_text(json.dumps({"stages": {}, "recipe": "r"}))
    assert read_record(users, "old.json", "lm2vec-test", legacy_keys=("stages", "recipe")) is not None
    assert (users / "thesis.tex").read_text() == "mine"


def test_an_atomic_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "weights").write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())

    with atomic_folder(target) as folder:
        (folder / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    with pytest.raises(ForeignFolderError, match="was not written by lm2vec"), atomic_folder(target):
        pass  # not known to be replaceable: refused before anything is written
    (tmp_path / f".model{PARTIAL}{dead_pid()}").mkdir()  # the leftover of a killed write
    with atomic_folder(target, replaceable=True) as folder:
        (folder / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def dead_pid() -> int:
    """The PID of a process that has exited: a killed writer's."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_what_another_live_process_is_writing_is_no_leftover(tmp_path: Path) -> None:
    """Two processes writing one target (two `lm2vec export`s into one folder): the second's clean-up of killed
    writes leaves the first one's temporary sibling alone; the later rename decides which one wins."""
    target = tmp_path / "model"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as writer:
        try:
            (tmp_path / f".model{PARTIAL}{writer.pid}").mkdir()  # its write in progress
            (tmp_path / f".model{PARTIAL}old-{writer.pid}").mkdir()  # the version it is replacing
            (tmp_path / f".model{PARTIAL}{dead_pid()}").mkdir()  # a killed write
            with atomic_folder(target) as folder:
                (folder / "weights").write_text("v1")
            assert sorted(path.name for path in tmp_path.iterdir()) == [
                f".model{PARTIAL}{writer.pid}",
                f".model{PARTIAL}old-{writer.pid}",
                "model",
            ]
        finally:
            writer.kill()
    writer.wait()
    with atomic_folder(target, replaceable=True) as folder:  # once it is gone, what it left is
        (folder / "weights").write_text("v2")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_only_recorded_paths_inside_the_folder_are_removed(tmp_path: Path) -> None:
    (tmp_path / "mntp" / "adapter").mkdir(parents=True)
    (tmp_path / "stages.json").write_text("{}")
    (tmp_path / "mine.txt").write_text("keep")
    removed = remove_recorded(tmp_path, ["mntp", "stages.json", "never-written"])
    assert removed == [tmp_path.resolve() / "mntp", tmp_path.resolve() / "stages.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine.txt"]
    for escape in ("..", "../x", "/etc", "a/../.."):
        with pytest.raises(ForeignFolderError, match="not a path inside"):
            remove_recorded(tmp_path, [escape])


def test_records_without_a_format_tag_are_not_lm2vecs(tmp_path: Path) -> None:
    """Before format tags, a run's pipeline.json and a corpus manifest were recognised by their keys; now such a
    folder is one lm2vec did not make, refused like any other, and left as it was."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "pipeline.json").write_text(json.dumps({"recipe": "r.toml", "run": {}, "stages": {}}))
    with pytest.raises(ForeignFolderError, match="pipeline.json was not written by lm2vec"):
        Pipeline(plan_run(QUICK, out=run_dir, check_inputs=False), echo=lambda line: None)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    old_manifest = {"format_version": 1, "status": "complete", "counts": {}, "shards": []}
    (corpus / "manifest.json").write_text(json.dumps(old_manifest))
    for read in (lambda: Manifest.read(corpus), lambda: prepare_output(corpus, resume=False, overwrite=True)):
        with pytest.raises(ForeignFolderError, match="manifest.json was not written by lm2vec"):
            read()
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["corpus", "manifest.json", "pipeline.json", "run"]


def test_jsonl_is_rewritten_whole_or_appended_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    write_jsonl_atomic(path, [{"text": "Здравей"}, {"n": 1}])
    append_jsonl(path, {"step": 2, "loss": 0.5})
    assert path.read_text(encoding="utf-8") == '{"text": "Здравей"}\n{"n": 1}\n{"step": 2, "loss": 0.5}\n'
    write_jsonl_atomic(path, [{"n": 3}])  # replaces the file, through a temporary sibling
    assert path.read_text(encoding="utf-8") == '{"n": 3}\n'
    with pytest.raises(TypeError):
        write_jsonl_atomic(path, [{"n": 4}, {"not JSON": object()}])
    assert path.read_text(encoding="utf-8") == '{"n": 3}\n'  # a failed rewrite leaves the old file, no leftover
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]


def test_a_shard_is_written_under_a_temporary_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An open shard is a hidden temporary sibling (`.NAME.partial-PID`), like every other write: a reader never
    lists it, and resuming after a kill removes it."""
    monkeypatch.setattr(shards, "_ROW_GROUP_ROWS", 1)  # each row is written at once: the shard is open on disk
    corpus = tmp_path / "corpus"
    prepare_output(corpus, resume=False, overwrite=False)
    Manifest(status="running", source={}, config={}).write(corpus)
    writer = CorpusWriter(corpus, [], shard_size=10)
    writer.add("sentences", "train", ("a red car", "Cars", "1"))
    assert [path.name for path in (corpus / "sentences").iterdir()] == [f".train-00000.parquet{PARTIAL}{os.getpid()}"]
    assert writer.close_shards() == [
        {"path": "sentences/train-00000.parquet", "kind": "sentences", "split": "train", "rows": 1}
    ]
    assert [path.name for path in (corpus / "sentences").iterdir()] == ["train-00000.parquet"]

    writer.add("sentences", "train", ("a blue car", "Cars", "1"))  # the next shard, never closed: a kill
    prepare_output(corpus, resume=True, overwrite=False)
    assert not [path for path in corpus.rglob("*") if PARTIAL in path.name]
