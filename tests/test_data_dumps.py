"""lm2vec.data on real Wikipedia dumps: the English and Bulgarian samples that ship in the gensim 4.4.0
wheel (a dev dependency; the files are read from the installed package, gensim itself is not imported).
Samples: gensim's test data, from the English and Bulgarian Wikipedias, CC BY-SA."""

from __future__ import annotations

import bz2
import gzip
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasketch import MinHash
from typer.testing import CliRunner

from lm2vec.artifacts import PARTIAL
from lm2vec.data import (
    DumpError,
    OutputDirError,
    TextConfig,
    WikiConfig,
    build_text_corpus,
    build_wiki_corpus,
    load_corpus,
    load_texts,
)
from lm2vec.data.cli import data_app
from lm2vec.data.dedup import NearDuplicateKeys, normalise
from lm2vec.data.dump import DumpReader
from lm2vec.data.errors import DataError
from lm2vec.data.languages import language_profile
from lm2vec.data.pipeline import ArticleProcessor, batched, map_batches_in_order, process_written_paragraphs
from lm2vec.data.shards import Manifest
from lm2vec.data.wikitext import WikitextCleaner

ENGLISH_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
BULGARIAN_SAMPLE = "bgwiki-latest-pages-articles-shortened.xml.bz2"
MARKUP = ("{{", "}}", "[[", "]]", "<ref", "</", "'''", "{|", "|}", "thumb|", "Category:", "File:", "&nbsp;", "http")

runner = CliRunner()


def gensim_sample(name: str) -> Path:
    spec = importlib.util.find_spec("gensim")
    assert spec is not None and spec.submodule_search_locations, "install the dev extras: pip install -e .[dev]"
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data" / name


def config(lang: str, **overrides: object) -> WikiConfig:
    defaults = {"lang": lang, "workers": 1, "progress": False, "validation_fraction": 0.1, "dedup_capacity": 10**6}
    return WikiConfig(**(defaults | overrides))


def rows(directory: Path, kind: str) -> list[dict]:
    manifest = Manifest.read(directory)
    return [
        row
        for split in ("train", "validation")
        for path in manifest.shard_paths(kind, split)
        for row in pq.read_table(directory / path).to_pylist()
    ]


def assert_consistent(directory: Path) -> Manifest:
    """Counts add up, and the shards the manifest lists exist and hold exactly the counted rows."""
    manifest = Manifest.read(directory)
    counts = manifest.counts
    assert counts.pages_seen == counts.articles_kept + sum(counts.skipped.values())
    for kind in ("paragraphs", "sentences"):
        assert sum(shard["rows"] for shard in manifest.shards if shard["kind"] == kind) == getattr(counts, kind)
        assert len(rows(directory, kind)) == getattr(counts, kind)
        assert sum(counts.splits[split][kind] for split in counts.splits) == getattr(counts, kind)
    assert sum(counts.splits[split]["articles"] for split in counts.splits) == counts.articles_kept
    assert counts.characters["paragraphs"] == sum(len(row["text"]) for row in rows(directory, "paragraphs"))
    assert not [path for path in directory.rglob("*") if PARTIAL in path.name]
    return manifest


@pytest.fixture(scope="module")
def english_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole English sample through two worker processes, as the CLI runs by default."""
    out = tmp_path_factory.mktemp("english") / "corpus"
    build_wiki_corpus(gensim_sample(ENGLISH_SAMPLE), config("en", workers=2), out)
    return out


def test_english_dump_manifest(english_corpus: Path) -> None:
    manifest = assert_consistent(english_corpus)
    counts = manifest.counts
    assert manifest.status == "complete" and manifest.error is None
    assert manifest.source["dbname"] == "enwiki" and manifest.source["encoding"] == "utf-8"
    gensim = {"kind": "pypi", "distribution": "gensim", "version": importlib.metadata.version("gensim")}
    assert manifest.source["origin"] == gensim  # a packaged input, fixed by its version
    assert counts.pages_seen == 206  # every <page> of the file
    assert counts.skipped["redirect"] == 99 and counts.skipped["namespace"] == 1
    assert counts.skipped["disambiguation"] >= 5
    assert 90 <= counts.articles_kept <= 106 - counts.skipped["disambiguation"]
    assert counts.sentences > 3 * counts.paragraphs > 10_000
    assert counts.splits["validation"]["articles"] > 0


def test_english_dump_content(english_corpus: Path) -> None:
    paragraphs = rows(english_corpus, "paragraphs")
    titles = {row["title"] for row in paragraphs}
    assert {"Anarchism", "Autism", "Albert Einstein", "Apollo 11", "Alabama"} <= titles
    assert "AccessibleComputing" not in titles  # a redirect
    assert not any(title.endswith("(disambiguation)") for title in titles)
    texts = [row["text"] for row in paragraphs]
    anarchism = [row for row in paragraphs if row["title"] == "Anarchism"]
    assert anarchism[0]["text"].startswith("Anarchism is a political philosophy")  # article order is kept
    assert [row["paragraph"] for row in anarchism] == list(range(len(anarchism)))
    for text in texts:
        assert not any(markup in text for markup in MARKUP), text
    sentences = [row["text"] for row in rows(english_corpus, "sentences")]
    assert "Anarchism considers the state to be undesirable, unnecessary, and harmful." in sentences
    assert all(5 <= len(sentence.split()) <= 64 for sentence in sentences)
    assert len({normalise(sentence) for sentence in sentences}) == len(sentences)  # no duplicates left


def test_split_is_by_article(english_corpus: Path) -> None:
    train = load_corpus(english_corpus, "paragraphs", "train", cache_dir=english_corpus.parent / "cache")
    validation = load_corpus(english_corpus, "sentences", "validation", cache_dir=english_corpus.parent / "cache")
    counts = Manifest.read(english_corpus).counts
    assert len(train) == counts.splits["train"]["paragraphs"] and "text" in train.column_names
    assert len(validation) == counts.splits["validation"]["sentences"]
    assert not set(train["title"]) & set(validation["title"])
    streamed = load_corpus(english_corpus, "sentences", "validation", streaming=True)
    assert next(iter(streamed))["text"] == validation[0]["text"]


def test_bulgarian_dump_in_utf16(tmp_path: Path) -> None:
    out = tmp_path / "bg"
    manifest = build_wiki_corpus(gensim_sample(BULGARIAN_SAMPLE), config("bg"), out)
    assert_consistent(out)
    assert manifest.source["encoding"] == "utf-16-le" and manifest.source["dbname"] == "bgwiki"
    assert manifest.counts.pages_seen == 3 and manifest.counts.skipped == {"namespace": 2}
    assert {row["title"] for row in rows(out, "paragraphs")} == {"Григориански календар"}
    sentences = [row["text"] for row in rows(out, "sentences")]
    # "г." and "т.е." inside a sentence do not end it.
    assert (
        "Григорианският календар е въведен в употреба на 4 октомври 1582 г. в съответствие с була от 24 февруари "
        "1582 г. на папа Григорий XIII, чието име носи и днес." in sentences
    )
    assert any("т.е. 365,2425 вместо 365,2422 дни" in sentence for sentence in sentences)
    assert "В Сърбия това става на 18.I.1919 г., в Гърция – на 9.III.1924 г. и т.н." in sentences
    for sentence in sentences:
        assert not any(markup in sentence for markup in MARKUP), sentence


def test_every_compression_and_encoding_reads_the_same(tmp_path: Path) -> None:
    utf16 = bz2.decompress(gensim_sample(BULGARIAN_SAMPLE).read_bytes())
    utf8 = utf16.decode("utf-16").replace('encoding="utf-16"', 'encoding="utf-8"').encode()
    variants = {
        "utf16.xml.bz2": gensim_sample(BULGARIAN_SAMPLE).read_bytes(),
        "utf16.xml": utf16,
        "utf16-no-bom.xml": utf16[2:],
        "utf16-be.xml": utf16.decode("utf-16").encode("utf-16-be"),
        "utf8.xml.gz": gzip.compress(utf8),
        "utf8.xml": utf8,
    }
    expected = [(page.title, page.text) for page in DumpReader(gensim_sample(BULGARIAN_SAMPLE)).pages()]
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        assert [(page.title, page.text) for page in DumpReader(tmp_path / name).pages()] == expected, name


def test_truncated_dump_keeps_its_shards_and_resumes_to_the_same_corpus(tmp_path: Path, english_corpus: Path) -> None:
    full = gensim_sample(ENGLISH_SAMPLE)
    dump = tmp_path / full.name
    dump.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.7)])  # a download cut short
    out = tmp_path / "corpus"
    with pytest.raises(DumpError, match=rf"{dump.name}: truncated bz2 stream .*at byte [\d,]+ of [\d,]+, after page"):
        build_wiki_corpus(dump, config("en", shard_size=1_000), out)
    manifest = assert_consistent(out)
    assert manifest.status == "incomplete" and "truncated" in manifest.error
    assert 0 < manifest.counts.pages_seen < 206 and len(manifest.shards) > 4  # several checkpoints

    with pytest.raises(OutputDirError, match="--resume"):
        build_wiki_corpus(dump, config("en", shard_size=1_000), out)
    with pytest.raises(OutputDirError, match="different options: min_paragraph_words"):
        build_wiki_corpus(dump, config("en", shard_size=1_000, min_paragraph_words=3), out, resume=True)

    shutil.copyfile(full, dump)  # the download, finished
    # Filters of another first size (a run begun before the default changed) still resume: they only grow differently.
    resumed = build_wiki_corpus(dump, config("en", shard_size=1_000, dedup_capacity=200_000), out, resume=True)
    assert resumed.status == "complete" and resumed.error is None
    assert_consistent(out)
    for kind in ("paragraphs", "sentences"):  # exactly what an uninterrupted run (with 2 workers) wrote
        assert [row["text"] for row in rows(out, kind)] == [row["text"] for row in rows(english_corpus, kind)]
    assert resumed.counts == Manifest.read(english_corpus).counts


def test_what_was_read_before_a_read_error_is_processed_before_the_error() -> None:
    """The workers' ordered map (builds and merges): every item read before the input fails comes out, in order,
    and then the error, so that a cut-short dump keeps the pages before the cut."""
    articles = [
        [f"Paragraph {number} of the article, with enough words to split. And a second sentence."]
        for number in range(5)
    ]

    def read() -> Iterator[list[str]]:
        yield from articles
        raise DataError("the input was cut short")

    worker, processed = (config("en"), {}, os.getpid()), []
    with pytest.raises(DataError, match="cut short"):
        for batch in map_batches_in_order(process_written_paragraphs, batched(read(), 2), 2, worker):
            processed.extend(batch)
    in_process = ArticleProcessor(config("en"), {})
    assert processed == [[in_process.written_paragraph(text) for text in texts] for texts in articles]
    assert processed[0][0].sentences and processed[0][0].near_keys


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html><body>Not a dump</body></html>", "not a MediaWiki XML dump: the root element is <html>"),
        (b"\x00\x01binary garbage\xff" * 10, "not an XML file"),
        (b"", "empty file"),
        (
            b'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><page><title>A</title></mediawiki>',
            "malformed XML at line 1",
        ),
        (b'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><page><title>A</title>', "truncated"),
        (bz2.compress(b"<mediawiki>")[:-8], "corrupt bz2 data|truncated bz2 stream"),
    ],
)
def test_bad_input_is_a_clear_cli_error(tmp_path: Path, content: bytes, message: str) -> None:
    dump = tmp_path / "input.xml"
    dump.write_bytes(content)
    result = runner.invoke(data_app, ["wiki", str(dump), "--lang", "en", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "input.xml" in result.output
    assert any(part in result.output for part in message.split("|")), result.output
    assert Manifest.read(tmp_path / "out").status == "incomplete"


def test_cli_quick_run_unknown_language_and_explicit_overwrite(tmp_path: Path) -> None:
    dump, out = str(gensim_sample(ENGLISH_SAMPLE)), str(tmp_path / "out")
    result = runner.invoke(data_app, ["wiki", dump, "--lang", "english", "--out", out])
    assert result.exit_code == 2 and "Unknown language code 'english'" in result.output
    assert "Did you mean 'en'" in result.output and not (tmp_path / "out").exists()

    quick = [
        "wiki",
        dump,
        "--lang",
        "en",
        "--out",
        out,
        "--max-articles",
        "3",
        "--workers",
        "1",
        "--dedup-capacity",
        "100000",
    ]
    result = runner.invoke(data_app, quick)
    assert result.exit_code == 0, result.output
    assert "3 articles kept" in result.output
    first = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert first["status"] == "complete" and first["counts"]["articles_kept"] == 3

    result = runner.invoke(data_app, quick)
    assert result.exit_code == 2 and "already holds a corpus" in result.output
    again = ["wiki", dump, "--lang", "en", "--out", out, "--max-articles", "2", "--overwrite", "--no-progress"]
    result = runner.invoke(data_app, again)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["articles_kept"] == 2


def test_cli_options_are_the_config_fields() -> None:
    for name, config_class in (("wiki", WikiConfig), ("text", TextConfig)):
        command = next(command for command in data_app.registered_commands if command.callback.__name__ == name)
        options = set(command.callback.__annotations__) - {"return", "dump", "source", "out", "resume", "overwrite"}
        assert options == set(config_class.field_names()), name


def test_text_and_jsonl_inputs(tmp_path: Path) -> None:
    paragraph = "Това е първото изречение от документа, т.е. началото му. Следва второто изречение в него."
    documents = [f"{paragraph} Документ номер {number}." for number in range(30)] + [paragraph + " Документ номер 0."]
    (tmp_path / "docs.txt").write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "docs.jsonl.gz", "wt", encoding="utf-8") as file:
        file.writelines(
            json.dumps({"id": f"d{n}", "text": text}, ensure_ascii=False) + "\n" for n, text in enumerate(documents)
        )
    options = {"lang": "bg", "workers": 1, "progress": False, "min_article_chars": 20, "near_duplicate_threshold": 0}
    for name in ("docs.txt", "docs.jsonl.gz"):
        manifest = build_text_corpus(tmp_path / name, TextConfig(**options), tmp_path / name.replace(".", "_"))
        counts = manifest.counts
        assert manifest.status == "complete" and counts.pages_seen == 31, name
        assert counts.duplicates_removed["paragraphs_exact"] == 30  # the documents differ only in their number
        assert counts.skipped == {"duplicate": 30} and counts.sentences == 2
        assert manifest.source["origin"] == {"kind": "file"}  # the user's own
    assert load_texts(tmp_path / "docs.txt", "paragraphs") == documents

    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    result = runner.invoke(
        data_app, ["text", str(tmp_path / "bad.jsonl"), "--lang", "bg", "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 2 and "bad.jsonl, line 2" in result.output


def test_local_huggingface_dataset_folder(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    subjects = ["rivers", "mountains", "music", "chemistry", "football"]
    texts = [
        f"This document talks about {subject}, a subject that no other document here covers." for subject in subjects
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps({"content": text}) + "\n" for text in texts))
    config = TextConfig(lang="en", workers=1, progress=False, min_article_chars=10, text_field="content")
    manifest = build_text_corpus(str(folder), config, tmp_path / "out")
    assert manifest.source["kind"] == "huggingface" and manifest.counts.articles_kept == 5


def test_overwrite_and_resume_touch_only_lm2vec_corpora(tmp_path: Path) -> None:
    """`--overwrite` used to delete any paragraphs/ and sentences/ folder in --out, and a foreign manifest.json
    ended in KeyError: 'counts'."""
    words = "red blue green cat dog tree house river city road car man woman child music".split()
    rng = random.Random(0)
    documents = [" ".join(rng.choice(words) for _ in range(14)) + "." for _ in range(12)]
    (tmp_path / "docs.txt").write_text("\n\n".join(documents))
    common = [
        "text",
        str(tmp_path / "docs.txt"),
        "--lang",
        "en",
        "--workers",
        "1",
        "--no-progress",
        "--min-article-chars",
        "20",
        "--near-duplicate-threshold",
        "0",
    ]
    users = tmp_path / "users"
    (users / "paragraphs").mkdir(parents=True)
    (users / "paragraphs" / "my-notes.txt").write_text("mine")
    result = runner.invoke(data_app, [*common, "--out", str(users), "--overwrite"])
    assert result.exit_code == 2 and f"{users} is not empty and was not made by lm2vec" in result.output
    assert (users / "paragraphs" / "my-notes.txt").read_text() == "mine"

    (users / "manifest.json").write_text('{"name": "another tool\'s manifest"}')
    for mode in ([], ["--resume"], ["--overwrite"]):
        result = runner.invoke(data_app, [*common, "--out", str(users), *mode])
        assert result.exit_code == 2 and "manifest.json was not written by lm2vec" in result.output, mode

    corpus = tmp_path / "corpus"
    assert runner.invoke(data_app, [*common, "--out", str(corpus), "--shard-size", "5"]).exit_code == 0
    shards = sorted(path.name for path in (corpus / "paragraphs").iterdir())
    (corpus / "paragraphs" / "README.txt").write_text("a note of the user's, inside lm2vec's folder")
    result = runner.invoke(data_app, [*common, "--out", str(corpus), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (corpus / "paragraphs").iterdir()) == ["README.txt", "train-00000.parquet"]
    assert len(shards) == 3 and Manifest.read(corpus).counts.paragraphs == 12


def test_a_folder_given_as_input_is_named_as_one(tmp_path: Path) -> None:
    result = runner.invoke(data_app, ["wiki", str(tmp_path), "--lang", "en", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "is a folder, not a file" in result.output
    (tmp_path / "records.jsonl").write_text('{"text": "fine words here"}\n{"text": ["a", "list"]}\n')
    result = runner.invoke(
        data_app,
        ["text", str(tmp_path / "records.jsonl"), "--lang", "en", "--out", str(tmp_path / "out2"), "--workers", "1"],
    )
    assert result.exit_code == 2 and "records.jsonl, line 2: 'text' is a list, not a string" in result.output


def test_the_progress_bar_stays_out_of_logs_that_are_not_a_terminal(tmp_path: Path, capfd) -> None:
    texts = [
        f"Document number {n} talks about {word}, which no other document covers."
        for n, word in enumerate("rivers mountains music chemistry football".split())
    ]
    (tmp_path / "docs.txt").write_text("\n\n".join(texts))
    config = TextConfig(lang="en", workers=1, progress=True, min_article_chars=10)
    capfd.readouterr()
    build_text_corpus(str(tmp_path / "docs.txt"), config, tmp_path / "out")
    console = "".join(capfd.readouterr())
    assert "\r" not in console and "reading" not in console  # pytest's capture is not a terminal


# --- multistream dumps read in parts ----------------------------------------------------------------------------
def write_multistream(
    tmp_path: Path, articles: int, per_stream: int, pages: list[str] | None = None
) -> tuple[Path, Path]:
    """The first `articles` articles of the English sample (or of `pages`, <page> elements a test wrote) and every
    other redirect between them, as Wikimedia writes a multistream dump: one bz2 stream for the header (<siteinfo>),
    one per `per_stream` pages, one for the footer, concatenated; and its bz2 index, `OFFSET:PAGE_ID:TITLE` for every
    page."""
    xml = bz2.decompress(gensim_sample(ENGLISH_SAMPLE).read_bytes()).decode()
    header, _, rest = xml.partition("  <page>")
    every = pages or ["  <page>" + block.split("</page>")[0] + "</page>\n" for block in rest.split("  <page>")]
    last = [number for number, block in enumerate(every) if "<redirect" not in block][articles - 1]
    blocks = [block for number, block in enumerate(every[: last + 1]) if "<redirect" not in block or number % 2]
    dump, index = tmp_path / "enwiki-multistream.xml.bz2", tmp_path / "enwiki-multistream-index.txt.bz2"
    lines, data = [], bz2.compress(header.encode())
    for start in range(0, len(blocks), per_stream):
        for block in blocks[start : start + per_stream]:
            title = block.split("<title>")[1].split("</title>")[0]
            page_id = block.split("<id>")[1].split("</id>")[0]
            lines.append(f"{len(data)}:{page_id}:{title}\n")
        data += bz2.compress("".join(blocks[start : start + per_stream]).encode())
    dump.write_bytes(data + bz2.compress(b"</mediawiki>\n"))
    index.write_bytes(bz2.compress("".join(lines).encode()))
    return dump, index


def test_multistream_parts_are_disjoint_and_together_the_whole_run(tmp_path: Path) -> None:
    dump, index = write_multistream(tmp_path, articles=12, per_stream=4)
    whole = build_wiki_corpus(dump, config("en"), tmp_path / "whole")  # read as one file: no --part
    pages = whole.counts.pages_seen
    assert whole.counts.articles_kept >= 8 and whole.counts.skipped["redirect"] >= 4
    parts = [tmp_path / f"part{number}" for number in (1, 2, 3)]
    for number, out in enumerate(parts, start=1):
        manifest = build_wiki_corpus(dump, config("en", index=str(index), part=f"{number}/3"), out)
        assert manifest.status == "complete" and manifest.source["part"] == f"{number}/3"
        assert manifest.source["dbname"] == "enwiki"  # the header stream was read too
        assert_consistent(out)
    seen = [Manifest.read(out).counts.pages_seen for out in parts]
    assert sum(seen) == pages and all(count > 0 for count in seen)
    assert all(count % 4 == 0 for count in seen[:-1])  # whole streams: the last one may be short
    for kind in ("paragraphs", "sentences"):
        in_parts = [rows(out, kind) for out in parts]
        articles = [{row["article_id"] for row in part_rows} for part_rows in in_parts]
        assert sum(map(len, articles)) == len(set().union(*articles))  # no article in two parts
        union = sorted((row for part_rows in in_parts for row in part_rows), key=json.dumps)
        assert union == sorted(rows(tmp_path / "whole", kind), key=json.dumps)
    # More parts than streams: a part whose share of the bytes holds no stream start is an empty corpus.
    empty = build_wiki_corpus(dump, config("en", index=str(index), part="2/40"), tmp_path / "empty")
    assert empty.status == "complete" and empty.counts.pages_seen == 0


def test_bad_parts_are_clear_cli_errors_before_any_work(tmp_path: Path) -> None:
    dump, index = write_multistream(tmp_path, articles=2, per_stream=2)
    lines = bz2.decompress(index.read_bytes()).decode().splitlines()
    shifted = [f"{int(offset) + 1}:{rest}" for offset, rest in (line.split(":", 1) for line in lines)]
    (tmp_path / "shifted-index.txt").write_text("\n".join(shifted))  # one byte off: no bz2 stream starts there
    (tmp_path / "plain.xml").write_bytes(bz2.decompress(dump.read_bytes()))
    cases = [
        (dump, ["--part", "2/3"], "part needs index"),
        (dump, ["--index", str(index), "--part", "4/3"], "part must be K/N with 1 <= K <= N"),
        (dump, ["--index", str(tmp_path / "shifted-index.txt"), "--part", "1/2"], "not the index of"),
        (dump, ["--index", str(dump), "--part", "1/2"], "not a multistream index line"),
        (tmp_path / "plain.xml", ["--index", str(index), "--part", "1/2"], "needs a bz2 multistream dump"),
    ]
    for number, (path, options, message) in enumerate(cases):
        out = tmp_path / f"out{number}"
        result = runner.invoke(data_app, ["wiki", str(path), "--lang", "en", "--out", str(out), *options])
        assert result.exit_code == 2 and message in result.output, (options, result.output)
        assert not out.exists()  # found before the output directory is made


# --- the fast paths give what the slow ones gave ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("wikitext", "sections"),
    [
        (
            "Lead with a [[File:A.jpg|thumb|A caption with [[a link]] and {{t|x}}]] file.\n\nA [[link|label|second "
            "label]] and [[:Category:Shown]] [[Category:Hidden]] [[de:Fremd]] [[de:Fremd|shown]].",
            [((), ["Lead with a file.", "A label|second label and:Category:Shown shown."])],
        ),
        (
            "Text &amp; &#x41;&#66; &nbsp;entities, [http://example.org an external label] and "
            "[http://bare.example.org] <ref name=a>{{cite|[[x]]}}</ref><ref name=b/> end.",
            [((), ["Text & AB entities, an external label and end."])],
        ),
        (
            '== History {{anchor|h}} ==\nFirst <b>bold</b> <span class="x">span text</span>.<br>After break.\n'
            "=== Sub ===\n* item one\n* item ''two''\n; term : definition\n== References ==\nDropped text.\n"
            "=== Notes ===\nStill dropped.\n== Later ==\nKept again.",
            [
                (("History",), ["First bold span text. After break."]),
                (("History", "Sub"), ["item one", "item two", "term", "definition"]),
                (("Later",), ["Kept again."]),
            ],
        ),
        (
            "{| class=wikitable\n|-\n| cell || cell\n|}\nAfter table <div>div text</div> <!-- a comment --> "
            "{{{1|argument}}} [[{{t}}|templated target]] [[a{{t}}b]].",
            [((), ["After table templated target ab."])],
        ),
        ("<p>Para <i>one</i></p><p>Para two <ref>unclosed ref", [((), ["Para one<p>Para two <ref>unclosed ref"])]),
    ],
)
def test_wikitext_rendered_from_tokens_as_from_the_tree(wikitext: str, sections: list) -> None:
    """The cleaner walks the tokenizer's tokens, not mwparserfromhell's node tree; the expected sections are what
    rendering the tree gave (lm2vec before 2026-12), for the constructs where the two could part: nested links and
    templates, separators, entities, tags with and without closing tags, headings with markup."""
    cleaner = WikitextCleaner(language_profile("en"), {6: "File", 14: "Category"}, drop_boilerplate_sections=True)
    assert [(section.headings, section.paragraphs) for section in cleaner.sections(wikitext)] == sections


def test_minhash_signature_is_datasketchs() -> None:
    keys = NearDuplicateKeys(0.8)
    for text in ("Anarchism is a political philosophy and movement that is sceptical of authority", "Две думи", ""):
        words = re.findall(r"\w+", text.casefold())
        grams = {" ".join(words[start : start + 3]).encode() for start in range(len(words) - 2)}
        reference = MinHash(128, seed=1, scheme="affine32")
        reference.update_batch(list(grams))
        signature = keys.signature(text)
        assert signature is None if not grams else (signature == reference.hashvalues).all()
