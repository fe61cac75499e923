"""Folders lm2vec creates and may therefore rewrite: a marker file with a format name proves the claim.

Kept minimal on purpose: a shared helper for every lm2vec artefact is planned (lm2vec.artifacts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class NotOwnedError(Exception):
    """The folder holds files lm2vec did not write."""


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary sibling and rename, so a reader sees the old file or the new one, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_owned(folder: Path, marker: str, format_name: str) -> dict[str, Any] | None:
    """The marker's content if `folder` is ours; None if it is new or empty; NotOwnedError otherwise."""
    path = folder / marker
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and data.get("format") == format_name:
            return data
        raise NotOwnedError(f"{path} is not an {format_name} manifest; lm2vec will not write into {folder}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise NotOwnedError(f"{folder} exists and was not created by lm2vec (no {marker}); choose a new folder")
    return None
