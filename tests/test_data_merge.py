"""`lm2vec data merge`: the parts of a multistream dump into the corpus one run over the whole dump builds, with the
duplicates across parts removed. The dump is written here: articles of made-up words whose paragraphs and sentences
repeat across part boundaries, exactly and nearly."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from typer.testing import CliRunner

from lm2vec.data import build_wiki_corpus, corpus_files
from lm2vec.data.cli import data_app
from lm2vec.data.dedup import NearDuplicateKeys
from lm2vec.data.errors import DataError
from lm2vec.data.merge import merge_parts
from lm2vec.data.shards import MANIFEST_NAME, Manifest
from tests.test_data_dumps import assert_consistent, config, rows, write_multistream

runner = CliRunner()
PER_STREAM = 2  # pages per bz2 stream: 18 pages, 9 streams, 3 streams a part
_rng = random.Random(7)
_VOCABULARY = sorted(
    {"".join(_rng.choice("bdfgklmnprstvz") + _rng.choice("aeiou") for _ in range(3)) for _ in range(900)}
)


def sentence(rng: random.Random) -> str:
    words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(9, 13))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, sentences: int = 5) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def share_a_band(first: str, second: str) -> bool:
    keys = NearDuplicateKeys(config("en").near_duplicate_threshold)
    return bool(set(keys.keys(first)) & set(keys.keys(second)))


def changed(rng: random.Random, text: str, words: int, within: int | None = None) -> str:
    """`text` with `words` of its first `within` words replaced by others."""
    tokens = text.split()
    for position in rng.sample(range(within or len(tokens)), words):
        tokens[position] = rng.choice(_VOCABULARY) + ("." if tokens[position].endswith(".") else "")
    return " ".join(tokens)


def near_copy(rng: random.Random, text: str, within: int | None = None) -> str:
    """`text` with one word changed, sharing an LSH band with it: a near duplicate."""
    return next(copy for copy in (changed(rng, text, 1, within) for _ in range(100)) if share_a_band(text, copy))


def near_chain(rng: random.Random) -> tuple[str, str, str]:
    """q, d, p: d a near copy of q, p of d, but p shares no band with q. One run drops d (after q), and d's bands then
    block p; a part that has q and d but not p keeps p, and only the keys of d (which it dropped) tell the merge."""
    for _ in range(1000):
        q = paragraph(rng)
        d = changed(rng, q, 2)
        p = changed(rng, d, 2)
        if share_a_band(q, d) and share_a_band(d, p) and not share_a_band(q, p):
            return q, d, p
    raise AssertionError("no chain found")


def page(number: int, title: str, lead: list[str], history: list[str] = ()) -> str:
    text = "\n\n".join(lead) + ("\n\n== History ==\n" + "\n\n".join(history) if history else "")
    return (
        f"  <page>\n    <title>{title}</title>\n    <ns>0</ns>\n    <id>{number}</id>\n    <revision>\n"
        f'      <id>{number}</id>\n      <text xml:space="preserve">{escape(text)}</text>\n    </revision>\n  </page>\n'
    )


def duplicated_pages() -> list[str]:
    rng = random.Random(0)
    new = lambda: paragraph(rng)  # noqa: E731
    exact, near_one, near_two, shared = new(), new(), new(), sentence(rng)
    copied = [new(), new(), new()]
    q, d, p = near_chain(rng)
    q2, d2, p2 = near_chain(rng)
    near_two_copy = near_copy(rng, near_two, within=10)  # its first sentence changed: a sentence no other has
    changed_sentence = near_two_copy.split(". ")[0] + "."
    # Three paragraphs a page (about 1.3 kB a stream), but for the last two: the footer stream counts in the last
    # part's share of the bytes, and would push the first stream of part 3 into part 2.
    pages = [
        # part 1
        ("Alpha", [new(), exact], [new()]),
        ("Bravo", [new(), near_one], [new()]),
        ("Charlie", copied[:2], copied[2:]),
        ("Delta", [new() + " " + shared, new(), new()], []),
        ("Echo", [new(), near_two, new()], []),
        ("Foxtrot", [new(), new(), new()], []),
        # part 2
        ("Golf", [new(), near_copy(rng, near_one), new()], []),  # the near copy dropped: its third paragraph is 1
        ("Hotel", copied[:2], copied[2:]),  # only copies: no article, no pairs
        ("India", [new(), q, q2], []),
        ("Juliet", [d, d2, new()], []),  # d and d2 are dropped within part 2, as in one run
        ("Kilo", [new(), near_two_copy, p2], []),  # p2 goes with d2's bands, in part 2 already
        ("Lima", [new() + " " + changed_sentence, new(), new()], []),  # part 2 wrote it with Kilo, one run with Lima
        # part 3
        ("Mike", [new(), new(), new()], []),
        ("November", [new(), exact.upper().replace(". ", "; "), new()], []),  # normalised, the same text
        ("Oscar", [new() + " " + shared, new(), new()], []),  # a new paragraph, but one of its sentences part 1 has
        ("Papa", [new(), p, new()], []),  # p is not near q, which part 3 lacks too: d's dropped bands drop it
        ("Quebec", [new(), new()], []),
        ("Romeo", [new(), exact], []),  # dropped within part 3 already
    ]
    return [page(100 + number, title, lead, history) for number, (title, lead, history) in enumerate(pages)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The dump (and its index) built whole and in 3 parts."""
    tmp_path = tmp_path_factory.mktemp("merge")
    dump, index = write_multistream(tmp_path, articles=18, per_stream=PER_STREAM, pages=duplicated_pages())
    options = {"validation_fraction": 0.3, "shard_size": 7}  # several shards, both splits
    folders = {"dump": dump, "index": index, "whole": tmp_path / "whole"}
    build_wiki_corpus(dump, config("en", **options), folders["whole"])
    for number in (1, 2, 3):
        folders[f"part{number}"] = tmp_path / f"part{number}"
        build_wiki_corpus(dump, config("en", index=str(index), part=f"{number}/3", **options), folders[f"part{number}"])
    return folders


def pairs(directory: Path) -> list[dict]:
    return [
        json.loads(line)
        for split in ("train", "validation")
        for path in corpus_files(directory, "pairs", split)
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


@pytest.mark.parametrize("workers", ["1", "2"])  # the paragraphs keyed and split in this process, or on 2 workers
def test_merged_parts_are_the_whole_run(built: dict[str, Path], tmp_path: Path, caplog, workers: str) -> None:
    parts = [built["part3"], built["part1"], built["part2"]]  # as a shell glob may list them: merged in part order
    assert [Manifest.read(part).counts.pages_seen for part in sorted(parts)] == [6, 6, 6]
    out = tmp_path / "merged"
    with caplog.at_level(logging.INFO, logger="lm2vec.data.merge"):
        result = runner.invoke(data_app, ["merge", *map(str, parts), "--out", str(out), "--workers", workers])
    assert result.exit_code == 0, result.output
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        f"part {number}/3 ({built[f'part{number}']})" for number in (1, 2, 3)
    ]
    merged, whole = assert_consistent(out), Manifest.read(built["whole"])
    assert merged.status == "complete" and merged.source["fingerprint"] == whole.source["fingerprint"]
    assert merged.counts == whole.counts  # kept, skipped, duplicates removed, pairs by kind, per split
    assert whole.counts.splits["validation"]["articles"] > 0 and whole.counts.duplicates_removed["paragraphs_near"] >= 4
    for kind in ("paragraphs", "sentences"):  # the same rows in the same order
        assert rows(out, kind) == rows(built["whole"], kind)
        assert sum(len(rows(built[f"part{number}"], kind)) for number in (1, 2, 3)) > len(rows(out, kind))
    assert pairs(out) == pairs(built["whole"])
    assert sum(len(pairs(built[f"part{number}"])) for number in (1, 2, 3)) > len(pairs(out))

    def numbers(directory: Path, title: str) -> list[int]:
        return [row["paragraph"] for row in rows(directory, "paragraphs") if row["title"] == title]

    assert numbers(built["part2"], "Golf") == [0, 1, 2] and numbers(out, "Golf") == [0, 1]  # numbered as one run does
    assert numbers(built["part2"], "Hotel") and not numbers(out, "Hotel")  # nothing left of it: no pairs either
    assert [pair for pair in pairs(built["part2"]) if pair["query"].startswith("Hotel")]
    assert not [pair for pair in pairs(out) if pair["query"].startswith("Hotel")]
    assert numbers(built["part3"], "Papa") == [0, 1, 2] and numbers(out, "Papa") == [0, 1]  # p went with d's bands
    assert numbers(built["part3"], "November") == [0, 1, 2] and numbers(out, "November") == [0, 1]

    def sentences(directory: Path, title: str) -> set[str]:
        return {row["text"] for row in rows(directory, "sentences") if row["title"] == title}

    assert sentences(built["part2"], "Kilo") & sentences(out, "Lima")  # Kilo's paragraph with it is now dropped


def test_a_resumed_part_remembers_the_bands_of_the_paragraphs_it_dropped(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """A resumed run reloads the keys of what it wrote; a part's merge log adds those of what it dropped as near
    duplicates, so that d2, dropped before the interruption, still drops p2 after it."""
    dump, options = built["dump"], {"part": "2/3", "validation_fraction": 0.3, "shard_size": 7}
    out = tmp_path / "resumed"
    build_wiki_corpus(dump, config("en", max_articles=4, index=str(built["index"]), **options), out)  # up to Juliet
    manifest = Manifest.read(out)
    manifest.status = "incomplete"  # as if killed after Juliet's checkpoint
    manifest.write(out)
    index = shutil.copy(built["index"], tmp_path / "index-elsewhere.txt.bz2")  # the same index, kept elsewhere
    build_wiki_corpus(dump, config("en", index=str(index), **options), out, resume=True)
    for kind in ("paragraphs", "sentences"):
        assert rows(out, kind) == rows(built["part2"], kind)
    assert Manifest.read(out).counts == Manifest.read(built["part2"]).counts


def copy_part(built: dict[str, Path], tmp_path: Path, name: str, edit: dict, number: int = 2) -> Path:
    """A copy of part `number` whose manifest has the keys in `edit` (`section.key` for a nested one) changed."""
    folder = shutil.copytree(built[f"part{number}"], tmp_path / name)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for key, value in edit.items():
        *section, field = key.split(".")
        (manifest[section[0]] if section else manifest)[field] = value
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_parts_that_cannot_be_merged_are_cli_errors_before_any_work(built: dict[str, Path], tmp_path: Path) -> None:
    part1, part2 = str(built["part1"]), str(built["part2"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "notes.txt").write_text("mine")
    cases = [
        ([str(tmp_path / "empty"), part2], "not a corpus, there is no manifest.json"),
        ([str(copy_part(built, tmp_path, "running", {"status": "incomplete"})), part1], "not complete"),
        ([str(built["whole"]), part2], "not a part of a multistream dump (built without --part)"),
        ([part1, str(copy_part(built, tmp_path, "old", {"merge_log": False}))], "the part has no merge log"),
        ([part1, part2, part1], f"part 1/3 is given twice: {part1} and {part1}"),
        ([part1, str(copy_part(built, tmp_path, "other", {"source.fingerprint": "0" * 64}))], "another dump"),
        (
            [part1, str(copy_part(built, tmp_path, "options", {"config.min_paragraph_words": 3}))],
            "built with other options than part 1/3 (" + part1 + "): min_paragraph_words 3 (not 10)",
        ),
        ([part1, str(copy_part(built, tmp_path, "quarter", {"config.part": "2/4"}))], "different numbers of parts"),
        (
            [
                str(
                    copy_part(
                        built, tmp_path, "held1", {"config.holdout_file": "/a/t.txt", "files": {"holdout_file": "1"}}, 1
                    )
                ),
                str(
                    copy_part(
                        built, tmp_path, "held2", {"config.holdout_file": "/a/t.txt", "files": {"holdout_file": "2"}}
                    )
                ),
            ],
            "built with other options than part 1/3",
        ),
        ([part1, part2, "--out", part1], "--out is part 1/3"),
        ([part1, part2, "--out", str(tmp_path / "users")], "is not empty and was not made by lm2vec"),
        ([part1, part2, "--out", str(built["whole"])], "already holds a corpus; pass --overwrite to replace it"),
    ]
    for number, (arguments, message) in enumerate(cases):
        out = tmp_path / f"out{number}"
        result = runner.invoke(data_app, ["merge", *arguments, *([] if "--out" in arguments else ["--out", str(out)])])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], (message, result.output)
        assert not out.exists() and "Traceback" not in result.output
    assert (tmp_path / "users" / "notes.txt").read_text() == "mine"
    assert Manifest.read(built["whole"]).status == "complete"
    with pytest.raises(DataError, match="workers must not be negative, got -1"):
        merge_parts([part1, part2], tmp_path / "negative", workers=-1)
    assert not (tmp_path / "negative").exists()

    # The same held-out titles, kept at other paths on the machines that built the parts: merged.
    part1 = str(
        copy_part(built, tmp_path, "here", {"config.holdout_file": "/a/t.txt", "files": {"holdout_file": "1"}}, 1)
    )
    part2 = str(
        copy_part(built, tmp_path, "there", {"config.holdout_file": "/b/t.txt", "files": {"holdout_file": "1"}})
    )
    out = tmp_path / "again"
    for mode in ([], ["--overwrite"]):  # a merged corpus is replaced only when asked
        result = runner.invoke(data_app, ["merge", part1, part2, "--out", str(out), *mode])
        assert result.exit_code == 0, result.output
    assert Manifest.read(out).source["parts"] == [
        {"folder": part1, "part": "1/3"},
        {"folder": part2, "part": "2/3"},
    ]


def test_a_near_copy_that_only_one_run_keeps_is_reported(tmp_path: Path, caplog) -> None:
    """The one loss the merge knows of: part 1 has r, part 2 has q (r with another year: the same exact key, other
    bands) and then d, a near copy of q but not of r. Part 2 drops d for q's bands; one run drops q as a copy of r, so
    q's bands are not there to drop d, and keeps d, whose text is in no part."""
    rng = random.Random(1)
    for _ in range(1000):
        words = paragraph(rng).split()
        r = " ".join([*words[:20], "1990", *words[20:]])
        q, d = r.replace("1990", "1991"), changed(rng, r.replace("1990", "1991"), 2)
        if share_a_band(q, d) and not share_a_band(r, d):
            break
    else:
        raise AssertionError("no such paragraphs found")
    pages = [page(100, "Sierra", [r, paragraph(rng), paragraph(rng)]), page(101, "Tango", [q, d])]
    dump, index = write_multistream(tmp_path, articles=2, per_stream=1, pages=pages)
    build_wiki_corpus(dump, config("en"), tmp_path / "whole")
    for number in (1, 2):
        build_wiki_corpus(dump, config("en", index=str(index), part=f"{number}/2"), tmp_path / f"part{number}")
    assert "Tango" in {row["title"] for row in rows(tmp_path / "part2", "paragraphs")}  # two parts, as meant
    with caplog.at_level(logging.WARNING, logger="lm2vec.data.merge"):
        merge_parts([tmp_path / "part1", tmp_path / "part2"], tmp_path / "merged")
    assert [record.getMessage().split(";")[0] for record in caplog.records] == [
        "paragraphs that one run over the whole dump keeps but the merge cannot: 1"
    ]
    missing = [
        row for row in rows(tmp_path / "whole", "paragraphs") if row not in rows(tmp_path / "merged", "paragraphs")
    ]
    assert [row["text"] for row in missing] == [d]
