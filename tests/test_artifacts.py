"""lm2vec.artifacts: which folders lm2vec may write into or delete, and writes that a failure never leaves half done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm2vec.artifacts import (
    PARTIAL,
    ForeignFolderError,
    atomic_folder,
    claim_folder,
    read_record,
    remove_recorded,
    write_json_atomic,
)


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
    (tmp_path / f".model{PARTIAL}12345").mkdir()  # the leftover of a killed write
    with atomic_folder(target, replaceable=True) as folder:
        (folder / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
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
