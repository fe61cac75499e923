"""`lm2vec data ...`: build MNTP and SimCSE corpora. Every option is a field of WikiConfig/TextConfig."""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from lm2vec.console import user_errors
from lm2vec.data.config import CorpusConfig, TextConfig, WikiConfig
from lm2vec.data.pipeline import build_text_corpus, build_wiki_corpus
from lm2vec.data.shards import Manifest

data_app = typer.Typer(no_args_is_help=True, help="Build clean MNTP (paragraph) and SimCSE (sentence) corpora.")

_DEFAULTS = {field.name: field.default for field in fields(WikiConfig)} | {
    field.name: field.default for field in fields(TextConfig)
}

Lang = Annotated[str, typer.Option("--lang", help="Wikipedia language code: bg, en, he, ko ...")]
Out = Annotated[Path, typer.Option("--out", help="Output directory (new, empty, or a run to resume/overwrite).")]
MaxArticles = Annotated[int | None, typer.Option(help="Stop after this many kept articles (quick runs).")]
Workers = Annotated[int, typer.Option(help="Worker processes; 0 uses every core.")]
ValidationFraction = Annotated[float, typer.Option(help="Share of articles (by title hash) in validation.")]
MinArticleChars = Annotated[int, typer.Option(help="Skip articles with less clean text than this.")]
MinParagraphWords = Annotated[int, typer.Option(help="Drop shorter paragraphs.")]
MinSentenceWords = Annotated[int, typer.Option(help="Drop shorter sentences.")]
MaxSentenceWords = Annotated[int, typer.Option(help="Drop longer sentences.")]
NearDuplicateThreshold = Annotated[float, typer.Option(help="MinHash Jaccard threshold; 0 turns it off.")]
DedupCapacity = Annotated[int, typer.Option(help="Expected distinct paragraphs; sizes the dedup filters.")]
ShardSize = Annotated[int, typer.Option(help="Rows per shard before a checkpoint closes all shards.")]
Progress = Annotated[bool, typer.Option(help="Show a progress bar (MB/s, pages).")]
Resume = Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")]
Overwrite = Annotated[bool, typer.Option(help="Delete the corpus in --out and build it again.")]


@data_app.command()
def wiki(
    dump: Annotated[Path, typer.Argument(help="MediaWiki XML dump: .xml, .xml.bz2 or .xml.gz, UTF-8 or UTF-16.")],
    lang: Lang,
    out: Out,
    max_articles: MaxArticles = _DEFAULTS["max_articles"],
    workers: Workers = _DEFAULTS["workers"],
    validation_fraction: ValidationFraction = _DEFAULTS["validation_fraction"],
    min_article_chars: MinArticleChars = _DEFAULTS["min_article_chars"],
    min_paragraph_words: MinParagraphWords = _DEFAULTS["min_paragraph_words"],
    min_sentence_words: MinSentenceWords = _DEFAULTS["min_sentence_words"],
    max_sentence_words: MaxSentenceWords = _DEFAULTS["max_sentence_words"],
    near_duplicate_threshold: NearDuplicateThreshold = _DEFAULTS["near_duplicate_threshold"],
    dedup_capacity: DedupCapacity = _DEFAULTS["dedup_capacity"],
    shard_size: ShardSize = _DEFAULTS["shard_size"],
    progress: Progress = _DEFAULTS["progress"],
    drop_boilerplate_sections: Annotated[
        bool, typer.Option(help="Drop References, External links, See also ... sections.")
    ] = _DEFAULTS["drop_boilerplate_sections"],
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Turn a Wikipedia dump into paragraph and sentence corpora (Parquet shards and manifest.json)."""
    options = {name: value for name, value in locals().items() if name in WikiConfig.field_names()}
    _run(lambda config: build_wiki_corpus(dump, config, out, resume=resume, overwrite=overwrite), WikiConfig, options)


@data_app.command()
def text(
    source: Annotated[str, typer.Argument(help=".txt (blank-line separated documents), .jsonl, or a HF dataset.")],
    lang: Lang,
    out: Out,
    max_articles: MaxArticles = _DEFAULTS["max_articles"],
    workers: Workers = _DEFAULTS["workers"],
    validation_fraction: ValidationFraction = _DEFAULTS["validation_fraction"],
    min_article_chars: MinArticleChars = _DEFAULTS["min_article_chars"],
    min_paragraph_words: MinParagraphWords = _DEFAULTS["min_paragraph_words"],
    min_sentence_words: MinSentenceWords = _DEFAULTS["min_sentence_words"],
    max_sentence_words: MaxSentenceWords = _DEFAULTS["max_sentence_words"],
    near_duplicate_threshold: NearDuplicateThreshold = _DEFAULTS["near_duplicate_threshold"],
    dedup_capacity: DedupCapacity = _DEFAULTS["dedup_capacity"],
    shard_size: ShardSize = _DEFAULTS["shard_size"],
    progress: Progress = _DEFAULTS["progress"],
    text_field: Annotated[str, typer.Option(help="JSON field or dataset column with the text.")] = _DEFAULTS[
        "text_field"
    ],
    hf_split: Annotated[str, typer.Option(help="Split of a Hugging Face dataset.")] = _DEFAULTS["hf_split"],
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Turn your own text (or a Hugging Face dataset, online) into paragraph and sentence corpora."""
    options = {name: value for name, value in locals().items() if name in TextConfig.field_names()}
    _run(lambda config: build_text_corpus(source, config, out, resume=resume, overwrite=overwrite), TextConfig, options)


def _run(build, config_class: type[CorpusConfig], options: dict) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with user_errors(ValueError):
            manifest = build(config_class(**options))
    except KeyboardInterrupt:
        typer.echo("interrupted: the shards written so far are listed in manifest.json; rerun with --resume",
                   err=True)  # fmt: skip
        raise typer.Exit(130) from None
    typer.echo(_summary(manifest))


def _summary(manifest: Manifest) -> str:
    counts, timing = manifest.counts, manifest.timing
    skipped = ", ".join(f"{reason} {amount:,}" for reason, amount in sorted(counts.skipped.items())) or "none"
    removed = sum(counts.duplicates_removed.values())
    return (
        f"{counts.pages_seen:,} pages seen, {counts.articles_kept:,} articles kept (skipped: {skipped})\n"
        f"{counts.paragraphs:,} paragraphs, {counts.sentences:,} sentences, {removed:,} duplicates removed\n"
        f"{timing['elapsed_s']:.1f} s, {timing['pages_per_s']:,.0f} pages/s, {timing['mb_per_s']:.2f} MB/s"
    )
