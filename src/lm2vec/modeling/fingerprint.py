"""What tells one model's weights from another's on disk, for the evaluation's embedding cache and for an index.

The embedding cache keys on stamps (resolved path, size, modification time of every weight file, subfolders
too): cheap, and retrained weights are never served from the cache. An index records the SHA-256 of its model's
top-level weight files with their sizes and modification times, and hashes them again only when one of those
changed: a copied model is still the same model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def weight_files(path: Path, recursive: bool = False) -> list[Path]:
    """`path` itself if it is a file; else the weight files in the folder (and its subfolders if `recursive`),
    sorted; [] when there is nothing at `path`."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    found = path.rglob("*") if recursive else path.iterdir()
    return sorted(file for file in found if file.suffix in WEIGHT_SUFFIXES and file.is_file())


def weights_stamp(path: Path) -> list:
    """[resolved path, size, mtime] of a file; of a folder, the stamps of the weight files under it (its resolved
    path if it holds none); of a path where nothing is, the path."""
    if path.is_file():
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    if path.is_dir():
        return [weights_stamp(file) for file in weight_files(path, recursive=True)] or [str(path.resolve())]
    return [str(path)]


def adapters_stamp(
    adapters: Sequence[str | Path],
    weights: Sequence[float] | None = None,
    method: str = "linear",
    density: float | None = None,
) -> list:
    """The stamps of a chain of adapters (`weights_stamp`) and, when they are merged other than plainly (weights not
    all 1, another method), how: a weighted chain is another model. A plain chain's stamp stays the bare list, so the
    embeddings cached for it stay valid."""
    stamps = [weights_stamp(Path(adapter)) for adapter in adapters]
    weights = [1.0] * len(stamps) if weights is None else [float(weight) for weight in weights]
    if method == "linear" and density is None and all(weight == 1 for weight in weights):
        return stamps
    return [*stamps, {"weights": weights, "method": method, "density": density}]


def weights_record(folder: Path) -> dict[str, Any]:
    """`weights_sha256` (over the names and contents of the folder's top-level weight files) and `weight_files`
    (each one's name, size and mtime)."""
    files = weight_files(folder)
    return {"weights_sha256": _sha256(files), "weight_files": _stats(files)}


def same_weights(folder: Path, recorded: Mapping[str, Any]) -> bool:
    """Whether `folder` holds the weights `recorded` (a `weights_record`) describes; the files are hashed again only
    when a size or modification time changed."""
    files = weight_files(folder)
    return _stats(files) == recorded["weight_files"] or _sha256(files) == recorded["weights_sha256"]


def _sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()


def _stats(files: list[Path]) -> list[list[Any]]:
    return [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in files]
