"""`lm2vec data merge`: the parts of a multistream dump (`lm2vec data wiki --part K/N`, each deduplicated within
itself) into one corpus holding the rows that one run over the whole dump holds.

The merge replays one run's deduplication (`Deduplicator`: the same keys, thresholds and filter sizes) over the parts
in part order, each part's articles in the order it read them (its merge log numbers them, so the two splits
interleave as they did). It asks about every paragraph a part wrote (keys recomputed from the text) and, in its place
among them, every paragraph the part dropped as a near duplicate: the log keeps their keys, the only keys the shards
lack, because in one run a dropped paragraph's bands still block later copies. The paragraphs that one run keeps go
through the build's own `ArticleWriter`: numbered again within their article, their sentences split again (a sentence
a part wrote with a paragraph now dropped belongs to the next paragraph that has it), with their pairs, and the
article's own pairs while it keeps a paragraph. It reads Parquet and JSONL, no wikitext. Keying and splitting the
paragraphs again, most of its work, runs on worker processes as in a build (`--workers`); the deduplication, in this
process, asks in the same order whatever their number.

What a part dropped, one run drops too, but for a paragraph a part dropped as a near copy of one that one run drops
as an exact copy (of an earlier part's paragraph with other digits, spacing or punctuation, so with other bands): one
run may keep it, and its text is in no part. Those are counted and reported. (And as in any run, a Bloom filter's rare
false positive, in a part or in the merge, drops a paragraph that one run may keep.)
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm import tqdm

from lm2vec.artifacts import check_folder
from lm2vec.data.config import RUN_ONLY_FIELDS, WikiConfig, changed_options, parse_part
from lm2vec.data.dedup import EXACT_DUPLICATE, NEAR_DUPLICATE, Deduplicator
from lm2vec.data.errors import DataError, OutputDirError
from lm2vec.data.pipeline import (
    ArticleProcessor,
    ArticleWriter,
    ProcessedArticle,
    ProcessedParagraph,
    batched,
    map_batches_in_order,
    process_written_paragraphs,
)
from lm2vec.data.shards import (
    CORPUS_FORMAT,
    MANIFEST_NAME,
    MERGE_LOG,
    PAIRS,
    SPLITS,
    TEXT_KINDS,
    CorpusWriter,
    Manifest,
    prepare_output,
)

logger = logging.getLogger(__name__)

# Options the parts may differ in: which part, where the index lay, and how a run went (not what it wrote).
_PART_OPTIONS = RUN_ONLY_FIELDS | {"part", "index"}
_DUMP_IDENTITY = ("dbname", "fingerprint")  # the same dump wherever each machine keeps it (size_bytes: the part's)
_BATCH_ARTICLES = 32


@dataclass(frozen=True)
class Part:
    folder: Path
    manifest: Manifest
    number: int
    count: int

    def __str__(self) -> str:
        return f"part {self.number}/{self.count} ({self.folder})"


def read_part(folder: Path) -> Part:
    """The part in `folder`; DataError unless it is a complete corpus of a `--part` run with a merge log."""
    manifest = Manifest.read(folder)  # a folder without lm2vec's manifest.json is refused here
    if manifest.status != "complete":
        raise DataError(f"the corpus is {manifest.status}, not complete; finish it first (--resume)", folder)
    numbers = parse_part(manifest.config.get("part") or "")
    if numbers is None:
        raise DataError("not a part of a multistream dump (built without --part)", folder)
    if not manifest.merge_log:
        raise DataError("the part has no merge log (built by an lm2vec before `data merge`); build it again", folder)
    missing = [shard["path"] for shard in manifest.shards if not (folder / shard["path"]).is_file()]
    if missing:
        raise DataError(f"{missing[0]} is listed in {MANIFEST_NAME} but missing", folder)
    return Part(folder, manifest, *numbers)


def check_parts(folders: Sequence[Path], out: Path) -> list[Part]:
    """The parts in part order (one run's reading order, whatever order a shell glob gives them in), if they are
    parts of one dump built with the same options, each once, and `out` is none of them; DataError otherwise."""
    parts = [read_part(Path(folder)) for folder in folders]
    first, numbers = parts[0], {}
    for part in parts:
        if part.folder.resolve() == out.resolve():
            raise DataError(f"--out is {part}; choose a new folder for the merged corpus")
        if part.count != first.count:
            raise DataError(f"{part} and {first} split the dump in different numbers of parts")
        if part.number in numbers:
            raise DataError(f"part {part.number}/{part.count} is given twice: {numbers[part.number]} and {part.folder}")
        numbers[part.number] = part.folder
        theirs, ours = part.manifest.source, first.manifest.source
        if any(theirs.get(key) != ours.get(key) for key in _DUMP_IDENTITY):
            raise DataError(
                f"{part} is a part of another dump ({theirs.get('path')}) than {first} ({ours.get('path')})"
            )
        theirs, ours = part.manifest.config, first.manifest.config
        if changed := changed_options(theirs, ours, part.manifest.files, first.manifest.files, _PART_OPTIONS):
            options = ", ".join(f"{key} {theirs.get(key)!r} (not {ours.get(key)!r})" for key in changed)
            raise DataError(f"{part} was built with other options than {first}: {options}")
    if missing := sorted(set(range(1, first.count + 1)) - numbers.keys()):
        logger.warning(
            "parts %s of %d are not given: the corpus holds the given parts' pages only", missing, first.count
        )
    return sorted(parts, key=lambda part: part.number)


def merge_parts(
    folders: Sequence[str | Path], out: str | Path, *, overwrite: bool = False, workers: int = 0, progress: bool = True
) -> Manifest:
    """`lm2vec data merge PART_DIR... --out OUT`: the parts into one corpus in `out`; its manifest. `workers`
    processes (0: one per core) compute the paragraphs' keys and sentences; `progress` shows a bar on a terminal.

    Raises DataError before any work for folders that are not parts of one dump built alike, and for an `out` that
    lm2vec may not write (not new or empty, and not a corpus to replace with `overwrite`)."""
    if workers < 0:
        raise DataError(f"workers must not be negative, got {workers}")
    out = Path(out)
    parts = check_parts([Path(folder) for folder in folders], out)
    if not overwrite and check_folder(out, MANIFEST_NAME, CORPUS_FORMAT) is not None:
        raise OutputDirError(f"{out} already holds a corpus; pass --overwrite to replace it")
    return _Merger(parts, out, overwrite, workers, progress).run()


def _rows(part: Part, kind: str, split: str) -> Iterator[dict[str, Any]]:
    for path in part.manifest.shard_paths(kind, split):
        if kind == PAIRS:
            with (part.folder / path).open(encoding="utf-8") as lines:
                yield from map(json.loads, lines)
        else:
            for batch in pq.ParquetFile(part.folder / path).iter_batches():
                yield from batch.to_pylist()


def _damaged(part: Part) -> DataError:
    return DataError(f"{part}: its merge log does not match its shards; build the part again")


@dataclass(frozen=True)
class _LoggedArticle:
    """An article as a part logged it: its merge log entry, the paragraphs it wrote and their pairs."""

    split: str
    entry: dict[str, Any]
    written: list[dict[str, Any]]
    pairs: list[list[dict[str, Any]]]  # after each written paragraph
    article_pairs: list[dict[str, Any]]


def _read_article(
    part: Part, split: str, entry: dict[str, Any], paragraph_rows: Iterator[dict], pair_rows: Iterator[dict]
) -> _LoggedArticle:
    """The next article of a part's `split`, its rows read from the part's shards in the order it wrote them."""
    written = list(itertools.islice(paragraph_rows, len(entry["paragraph_pairs"])))
    pairs = [list(itertools.islice(pair_rows, count)) for count in entry["paragraph_pairs"]]
    article_pairs = list(itertools.islice(pair_rows, entry["article_pairs"]))
    found = [*map(len, pairs), len(article_pairs)] == [*entry["paragraph_pairs"], entry["article_pairs"]]
    if not found or [row["article_id"] for row in written] != [entry["article_id"]] * len(pairs):
        raise _damaged(part)
    return _LoggedArticle(split, entry, written, pairs, article_pairs)


class _Merger:
    def __init__(self, parts: list[Part], out: Path, overwrite: bool, workers: int, progress: bool) -> None:
        self._parts, self._out = parts, out
        first = parts[0].manifest
        one_run = {"part": "", "index": ""}  # what one run over the dump had; how this merge runs
        self._config = WikiConfig(**(first.config | one_run | {"workers": workers, "progress": progress}))
        prepare_output(out, resume=False, overwrite=overwrite)
        source = {key: value for key, value in first.source.items() if key not in ("part", "index")}
        source["parts"] = [{"folder": str(part.folder), "part": f"{part.number}/{part.count}"} for part in parts]
        files = {key: value for key, value in first.files.items() if key != "index"}
        self._manifest = Manifest("running", source, self._config.to_dict(), files=files)
        self._manifest.write(out)  # first, so the folder is marked lm2vec's before any shard exists
        self._counts = self._manifest.counts
        self._seen = Deduplicator(self._config.dedup_capacity, self._config.near_duplicate_threshold)
        kinds = (*TEXT_KINDS, PAIRS) if self._config.writes_pairs else TEXT_KINDS
        self._writer = CorpusWriter(out, [], self._config.shard_size, kinds)
        self._articles = ArticleWriter(self._writer, self._counts, self._seen)
        self._kept_by_one_run = 0  # near copies a part dropped that one run would keep (see the module's docstring)

    def run(self) -> Manifest:
        read = sum(
            (part.folder / shard["path"]).stat().st_size for part in self._parts for shard in part.manifest.shards
        )
        started = time.perf_counter()
        paragraphs = sum(part.manifest.counts.paragraphs for part in self._parts)
        bar = tqdm(total=paragraphs, unit="paragraph", desc="merging", disable=None if self._config.progress else True)
        try:
            with bar:
                for part in self._parts:
                    self._add(part, bar)
            self._manifest.status = "complete"
        except BaseException as error:
            self._manifest.record_failure(error)
            raise
        finally:
            self._manifest.record_timing(time.perf_counter() - started, self._counts.pages_seen, read)
            self._checkpoint()
        if self._kept_by_one_run:
            logger.warning(
                "paragraphs that one run over the whole dump keeps but the merge cannot: %d; their part dropped them as"
                " near copies of a paragraph that an earlier part has with other digits, spacing or punctuation",
                self._kept_by_one_run,
            )
        return self._manifest

    def _add(self, part: Part, bar: tqdm) -> None:
        counts, theirs = self._counts, part.manifest.counts
        counts.pages_seen += theirs.pages_seen
        for table, amounts in ((counts.skipped, theirs.skipped), (counts.filtered, theirs.filtered)):
            for reason, amount in amounts.items():
                counts.add(table, reason, amount)
        # A part's exact duplicates repeat its earlier paragraphs, which the replay asks about: one run drops them too.
        counts.add(counts.duplicates_removed, EXACT_DUPLICATE, theirs.duplicates_removed[EXACT_DUPLICATE])
        paragraphs_before = counts.paragraphs
        paragraphs = {split: _rows(part, "paragraphs", split) for split in SPLITS}
        pairs = {split: _rows(part, PAIRS, split) for split in SPLITS}
        logs = [zip(itertools.repeat(split), _rows(part, MERGE_LOG, split)) for split in SPLITS]
        articles = (
            _read_article(part, split, entry, paragraphs[split], pairs[split])
            for split, entry in heapq.merge(*logs, key=lambda logged: logged[1]["page"])
        )
        for article, processed in self._processed(articles):
            self._add_article(article, processed)
            bar.update(len(processed))
            if self._writer.checkpoint_due:
                self._checkpoint()
        if any(next(rows, None) is not None for rows in (*paragraphs.values(), *pairs.values())):
            raise _damaged(part)
        logger.info(
            "%s: %d pages, %d of its %d paragraphs kept",
            part,
            theirs.pages_seen,
            counts.paragraphs - paragraphs_before,
            theirs.paragraphs,
        )

    def _processed(
        self, articles: Iterator[_LoggedArticle]
    ) -> Iterator[tuple[_LoggedArticle, list[ProcessedParagraph]]]:
        """Each article with its written paragraphs' keys and sentences, computed as a build does, on the workers:
        most of a merge's time, and the same for any order of asking (the deduplication stays in this process)."""
        if self._config.worker_count == 1:
            processor = ArticleProcessor(self._config, {})
            for article in articles:
                yield article, [processor.written_paragraph(row["text"]) for row in article.written]
            return
        read: deque[list[_LoggedArticle]] = deque()  # the batches sent, in order, to pair with their results

        def texts() -> Iterator[list[list[str]]]:
            for batch in batched(articles, _BATCH_ARTICLES):
                read.append(batch)
                yield [[row["text"] for row in article.written] for article in batch]

        worker = (self._config, {}, os.getpid())
        workers = self._config.worker_count
        for processed in map_batches_in_order(process_written_paragraphs, texts(), workers, worker):
            yield from zip(read.popleft(), processed, strict=True)

    def _add_article(self, article: _LoggedArticle, processed: list[ProcessedParagraph]) -> None:
        """One article of a part: its paragraphs and near duplicates asked about in the order the part asked."""
        entry = article.entry
        near_duplicates = defaultdict(list)  # by the number of paragraphs written before them
        for dropped in entry["near_duplicates"]:
            near_duplicates[dropped["after"]].append(dropped)
        kept = []
        for number, paragraph in enumerate(processed):
            self._add_near_duplicates(near_duplicates[number])
            if duplicate := self._seen.paragraph(paragraph.exact_key, paragraph.near_keys):
                self._counts.add(self._counts.duplicates_removed, duplicate)
                continue
            # Sentences split again: the part wrote only those new to it, one run those new to the dump so far.
            kept.append(replace(paragraph, pairs=article.pairs[number]))
        self._add_near_duplicates(near_duplicates[len(processed)])
        if processed:  # else the part counted the article as a skipped duplicate already
            written = ProcessedArticle(entry["article_id"], article.written[0]["title"], pairs=article.article_pairs)
            self._articles.write(written, article.split, kept, with_pairs=True)  # the part left out held-out pairs

    def _add_near_duplicates(self, dropped: list[dict[str, Any]]) -> None:
        for paragraph in dropped:
            duplicate = self._seen.paragraph(paragraph["exact_key"], paragraph["near_keys"])
            self._kept_by_one_run += duplicate is None
            self._counts.add(self._counts.duplicates_removed, duplicate or NEAR_DUPLICATE)

    def _checkpoint(self) -> None:
        self._manifest.shards.extend(self._writer.close_shards())
        self._manifest.write(self._out)
