"""Folders lm2vec owns, and writes that a kill never leaves half done.

Ownership: a folder lm2vec creates holds a JSON record whose `format` tag names lm2vec and the kind of folder
(a run's `pipeline.json`, a corpus's `manifest.json`, an encoder's `lm2vec_config.json`). lm2vec writes into a
folder only when it is new, empty or carries that record (`claim_folder`), and deletes only paths its records
list (`remove_recorded`). A non-empty folder without the record is the user's: `ForeignFolderError` names it.

Output files a command is told to write (`eval run --out`, `encode -o`, `mine -o`) carry no record: one that
exists is replaced only when the user asks for it (`--overwrite`), and a folder where a file is wanted, or a file
in a folder that does not exist, is refused before any work (`check_output_file`).

Atomic writes: files (`atomic_file`, `write_text_atomic`, `write_json_atomic`, `write_jsonl_atomic`) and folders
(`atomic_folder`) are written under a temporary sibling name, `.NAME.partial-PID`, and renamed into place, so a
reader sees the old version or the new one, never a part. The leftovers of a killed write keep that name; the next
write of the same target removes them, and nothing else ever matches it. A log that grows line by line
(`append_jsonl`) is appended to in place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lm2vec.errors import LM2VecError

PARTIAL = ".partial-"
# A run folder's record (lm2vec.pipeline.run keeps it), named here because `lm2vec report`, in a layer below the
# pipeline, tells a run folder by it.
RUN_RECORD = "pipeline.json"


class ForeignFolderError(LM2VecError, FileExistsError):
    """A path lm2vec would write or delete holds something lm2vec did not create; the message names it."""


class OutputPathError(LM2VecError, OSError):
    """An output path lm2vec cannot write to: a folder where a file is wanted, a missing or read-only folder."""


def read_record(folder: Path, name: str, format_tag: str, legacy_keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """`folder/name` if it is lm2vec's record of `format_tag`; None if there is no such file.

    A record written before format tags is accepted if it has every key in `legacy_keys`. Raises
    ForeignFolderError for a file of that name that is not lm2vec's (not JSON, or another format)."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        record = None
    legacy = (
        isinstance(record, dict) and "format" not in record and bool(legacy_keys) and set(legacy_keys) <= record.keys()
    )
    if not isinstance(record, dict) or record.get("format") != format_tag and not legacy:
        raise ForeignFolderError(f"{path} was not written by lm2vec (no format {format_tag!r}); leaving it alone.")
    return record


def check_folder(folder: Path, name: str, format_tag: str, legacy_keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Whether lm2vec may write into `folder`, checked without creating it: its record if lm2vec owns it, else None
    (new or empty). Raises ForeignFolderError if `folder` is a file, or is not empty and has no lm2vec record
    `name`."""
    folder = Path(folder)
    record = read_record(folder, name, format_tag, legacy_keys)
    if record is None and folder.exists():
        if not folder.is_dir():
            raise ForeignFolderError(f"{folder} is a file, not a folder.")
        if any(folder.iterdir()):
            raise ForeignFolderError(
                f"{folder} is not empty and was not made by lm2vec (no {name}); choose a new or empty folder."
            )
    return record


def claim_folder(folder: Path, name: str, format_tag: str, legacy_keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Make `folder` ready for lm2vec to write into (`check_folder`, then create it); its record if lm2vec owns it."""
    record = check_folder(folder, name, format_tag, legacy_keys)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return record


def check_output_file(path: Path, overwrite: bool = False) -> Path:
    """`path`, if a command may write a file there; checked before any work, so a mistake costs nothing.

    Raises OutputPathError for a folder, or a file in a folder that does not exist or cannot be written, and
    ForeignFolderError for an existing file unless `overwrite` (the user asked to replace it)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder; name a file to write.")
    if not path.parent.is_dir():
        raise OutputPathError(f"cannot write {path}: its folder does not exist.")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {path}: its folder is not writable.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise ForeignFolderError(
            f"{path} exists; lm2vec does not overwrite files it did not write (pass --overwrite to replace it)."
        )
    return path


def temporary_sibling(path: Path, writer: str | None = None) -> Path:
    """Where `path` is written before it is renamed into place: the same folder, a name no user file has.

    `writer` names who writes it (default: this process); processes that fill one folder together share it."""
    return path.with_name(f".{path.name}{PARTIAL}{writer or os.getpid()}")


def remove_path(path: Path) -> bool:
    """Delete what is at `path`: a folder with its contents, or a file or link (never followed). Whether there was
    anything."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return False
    return True


def remove_leftovers(path: Path) -> None:
    """Delete what killed writes of `path` left behind (its temporary siblings); a glob pattern as `path`'s name
    (`checkpoint-*`) covers every target it matches. A sibling that another live process of this machine is still
    writing (its PID ends the name) is left alone."""
    for leftover in path.parent.glob(f".{path.name}{PARTIAL}*"):
        if not _written_by_another_live_process(leftover.name):
            remove_path(leftover)


def _written_by_another_live_process(name: str) -> bool:
    writer = name.rpartition(PARTIAL)[2].removeprefix("old-")
    if not writer.isdigit() or int(writer) == os.getpid():
        return False
    try:
        os.kill(int(writer), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yields the temporary sibling of `path` to write; when the block succeeds it is renamed to `path`. On an
    error (the rename's too: `path` is a folder) the temporary file is removed and `path` is untouched."""
    path = Path(path)
    temporary = temporary_sibling(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` (UTF-8) through a temporary sibling, flushed to disk before the rename."""
    with atomic_file(path) as temporary, temporary.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def _jsonl_line(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_jsonl_atomic(path: Path, records: Iterable[Any]) -> None:
    """Write `records` to `path` as JSON lines (UTF-8), replacing the whole file at once (`write_text_atomic`)."""
    write_text_atomic(path, "".join(map(_jsonl_line, records)))


def append_jsonl(path: Path, record: Any) -> None:
    """Add `record` to `path` as one more JSON line: a log that grows while a run goes on, not a rewrite."""
    with Path(path).open("a", encoding="utf-8") as file:
        file.write(_jsonl_line(record))


@contextmanager
def atomic_folder(target: Path, replaceable: bool = False) -> Iterator[Path]:
    """Yields an empty temporary sibling of `target` to fill; when the block succeeds it becomes `target`.

    An existing `target` is replaced only if `replaceable` (the caller knows lm2vec wrote it) or it is an empty
    folder; otherwise ForeignFolderError. On an error the temporary folder is removed and `target` is untouched."""
    target = Path(target)
    if target.exists() and not replaceable and (not target.is_dir() or any(target.iterdir())):
        raise ForeignFolderError(f"{target} exists and was not written by lm2vec; choose another folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    temporary = temporary_sibling(target)
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary)
        raise
    if target.is_dir() and not target.is_symlink():
        # Set the old version aside under a temporary name first: a kill between the renames leaves no
        # `target`, never a mixture, and the next write removes the old one.
        retired = target.with_name(f".{target.name}{PARTIAL}old-{os.getpid()}")
        os.replace(target, retired)
        os.replace(temporary, target)
        shutil.rmtree(retired)
    else:
        if target.exists():
            target.unlink()
        os.replace(temporary, target)


def remove_recorded(folder: Path, relative_paths: Iterable[str]) -> list[Path]:
    """Delete the paths under `folder` that an lm2vec record lists (files or folders); the ones removed.

    A listed path that would leave `folder` (absolute, `..`, a symlink out) is refused, not followed."""
    folder = Path(folder).resolve()
    removed = []
    for relative in relative_paths:
        path = folder / relative
        inside = path.parent.resolve() / path.name  # a listed symlink is removed, never followed
        escapes = Path(relative).is_absolute() or path.name in ("", ".", "..") or not inside.is_relative_to(folder)
        if escapes or inside == folder:
            raise ForeignFolderError(f"{relative!r} is not a path inside {folder}; not deleting it.")
        if remove_path(path):
            removed.append(path)
            remove_leftovers(path)
    return removed
