"""Where lm2vec keeps what it can make again: `$LM2VEC_CACHE`, else the user's cache directory.

Each layer keeps its files in a subfolder: packaged models and converted GGUF weights (lm2vec.modeling.sources),
evaluation data (lm2vec.data.packaged) and cached embeddings (lm2vec.evaluation.embedding_cache)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from filelock import FileLock


def cache_dir() -> Path:
    """The lm2vec cache: `$LM2VEC_CACHE`, else the user's cache directory."""
    return Path(os.environ.get("LM2VEC_CACHE") or platformdirs.user_cache_dir("lm2vec"))


def cache_lock(entry: Path) -> FileLock:
    """A lock beside the cache `entry`: processes that want it at once (torchrun's ranks, a server's workers, test
    workers) make it once while the others wait; making it stays atomic (a temporary sibling renamed)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{entry}.lock")
