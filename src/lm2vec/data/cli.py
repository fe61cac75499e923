"""`lm2vec data ...`: build MNTP and SimCSE corpora. The corpus options are the fields of WikiConfig/TextConfig
(lm2vec.options.typer_options)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from lm2vec.console import user_errors
from lm2vec.data.config import TextConfig, WikiConfig
from lm2vec.data.merge import merge_parts
from lm2vec.data.pipeline import build_text_corpus, build_wiki_corpus
from lm2vec.data.shards import Manifest
from lm2vec.options import typer_options

data_app = typer.Typer(
    no_args_is_help=True,
    help="Build clean MNTP (paragraph) and SimCSE (sentence) corpora, and a dump's weak supervised pairs.",
)

Out = Annotated[Path, typer.Option("--out", help="Output directory (new, empty, or a run to resume/overwrite).")]
Resume = Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")]
Overwrite = Annotated[bool, typer.Option(help="Delete the corpus in --out and build it again.")]


@data_app.command()
@typer_options(config=WikiConfig)
def wiki(
    dump: Annotated[Path, typer.Argument(help="MediaWiki XML dump: .xml, .xml.bz2 or .xml.gz, UTF-8 or UTF-16.")],
    out: Out,
    config: WikiConfig,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Turn a Wikipedia dump into paragraph and sentence corpora (Parquet shards and manifest.json)."""
    _run(lambda: build_wiki_corpus(dump, config, out, resume=resume, overwrite=overwrite))


@data_app.command()
@typer_options(config=TextConfig)
def text(
    source: Annotated[str, typer.Argument(help=".txt (blank-line separated documents), .jsonl, or a HF dataset.")],
    out: Out,
    config: TextConfig,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Turn your own text (or a Hugging Face dataset, online) into paragraph and sentence corpora."""
    _run(lambda: build_text_corpus(source, config, out, resume=resume, overwrite=overwrite))


@data_app.command()
def merge(
    parts: Annotated[
        list[Path], typer.Argument(help="The folders of the parts of one multistream dump (data wiki --part K/N).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output directory (new, empty, or a corpus to --overwrite).")],
    overwrite: Annotated[bool, typer.Option(help="Delete the corpus in --out and merge again.")] = False,
    workers: Annotated[
        int, typer.Option(min=0, help="Processes that key and split the paragraphs again; 0 means one per core.")
    ] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (paragraphs).")] = True,
) -> None:
    """Merge the parts of a multistream dump into one corpus, as one run over the whole dump would build it: what an
    earlier part already has (exactly or nearly) is dropped."""
    merged = lambda: merge_parts(parts, out, overwrite=overwrite, workers=workers, progress=progress)  # noqa: E731
    _run(merged, rerun="rerun with --overwrite")


def _run(build: Callable[[], Manifest], rerun: str = "rerun with --resume") -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with user_errors(ValueError):
            manifest = build()
    except KeyboardInterrupt:
        typer.echo(f"interrupted: the shards written so far are listed in manifest.json; {rerun}", err=True)
        raise typer.Exit(130) from None
    typer.echo(_summary(manifest))


def _summary(manifest: Manifest) -> str:
    counts, timing = manifest.counts, manifest.timing
    skipped = ", ".join(f"{reason} {amount:,}" for reason, amount in sorted(counts.skipped.items())) or "none"
    removed = sum(counts.duplicates_removed.values())
    return (
        f"{counts.pages_seen:,} pages seen, {counts.articles_kept:,} articles kept (skipped: {skipped})\n"
        f"{counts.paragraphs:,} paragraphs, {counts.sentences:,} sentences, {sum(counts.pairs.values()):,} pairs, "
        f"{removed:,} duplicates removed\n"
        f"{timing['elapsed_s']:.1f} s, {timing['pages_per_s']:,.0f} pages/s, {timing['mb_per_s']:.2f} MB/s"
    )
