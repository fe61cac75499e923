"""Reading a built corpus back: `load_corpus` is the one reader of its shards (`lm2vec.data.readers` reads a corpus
folder through it, for training, evaluation and `index build` alike)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from lm2vec.data.errors import DataError
from lm2vec.data.shards import KINDS, MANIFEST_NAME, SPLITS, TEXT_KINDS, Manifest

if TYPE_CHECKING:
    import datasets


def is_corpus(directory: str | Path) -> bool:
    """A corpus folder (with manifest.json), or a folder of corpus folders (several inputs, read as one)."""
    return bool(_parts(Path(directory)))


def _parts(directory: Path) -> list[Path]:
    if (directory / MANIFEST_NAME).is_file():
        return [directory]
    if not directory.is_dir():
        return []
    return sorted(child for child in directory.iterdir() if (child / MANIFEST_NAME).is_file())


def corpus_files(directory: str | Path, kind: str = "paragraphs", split: str = "train") -> list[Path]:
    """The Parquet shards of one kind and split, in write order, as the manifest lists them; for a folder of
    corpora, those of each corpus in turn (sorted by folder name)."""
    directory = Path(directory)
    if kind not in KINDS or split not in SPLITS:
        raise ValueError(f"kind must be one of {KINDS} and split one of {SPLITS}, got {kind!r}, {split!r}")
    parts = _parts(directory)
    if not parts:
        raise DataError(f"{directory}: not a corpus, there is no {MANIFEST_NAME} in it or in its sub-folders")
    files = []
    for part in parts:
        manifest = Manifest.read(part)
        if manifest.status != "complete":
            warnings.warn(f"{part}: the corpus is {manifest.status} ({manifest.error})", stacklevel=2)
        files += [part / path for path in manifest.shard_paths(kind, split)]
    return files


def load_corpus(
    directory: str | Path,
    kind: str = "paragraphs",
    split: str = "train",
    *,
    streaming: bool = False,
    cache_dir: str | Path | None = None,
    required: bool = True,
) -> datasets.Dataset | datasets.IterableDataset | None:
    """A corpus built by `lm2vec data` as a `datasets` dataset with a `text` column (and title,
    article_id; paragraphs also have their index in the article), rows in article order.

    kind: "paragraphs" (MNTP) or "sentences" (SimCSE); split: "train" or "validation". `streaming` reads the
    shards as they are, without the `datasets` cache. A split without shards is a DataError, or None if not
    `required`. (The pairs are JSONL records: `corpus_files(directory, "pairs")`.)
    """
    import datasets  # slow to import: only where a corpus is read

    if kind not in TEXT_KINDS:
        raise ValueError(f"kind must be one of {TEXT_KINDS}, got {kind!r}")
    files = corpus_files(directory, kind, split)
    if not files:
        if not required:
            return None
        raise DataError(f"{directory}: no {kind} shards in the {split} split")
    return datasets.load_dataset(
        "parquet",
        data_files=[str(path) for path in files],
        split="train",  # the builder's own split name, not the corpus's
        streaming=streaming,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )
