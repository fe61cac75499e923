"""Weak supervised pairs from a dump's structure (lm2vec.data.pairs) and supervised training on a mixture of data
paths: a hand-written dump checked pair by pair, held-out titles, the Bulgarian sample, resume, and batches that keep
each path's datasets apart."""

from __future__ import annotations

import bz2
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lm2vec.cli import app
from lm2vec.data import WikiConfig, build_wiki_corpus
from lm2vec.data.corpus import corpus_files
from lm2vec.data.errors import DataError, OutputDirError
from lm2vec.data.formats import read_supervised_pairs
from lm2vec.data.packaged import expand_path
from lm2vec.data.pairs import INSTRUCTIONS
from lm2vec.data.shards import MANIFEST_NAME, Manifest
from lm2vec.pipeline.plan import plan_run
from lm2vec.recipe import RecipeError
from lm2vec.training.contrastive import ContrastiveCollator, SupervisedOptions, train_supervised
from lm2vec.training.contrastive import driver as contrastive_driver
from lm2vec.training.contrastive.data import supervised_data

FERNS_LEAD = [
    "Zanzibar ferns are a group of plants that grow on the islands of the Zanzibar archipelago.",
    "They were first described by botanists in the nineteenth century.",
]
FERNS_LEAD_2 = [
    "They thrive in humid forests near the coast.",
    "Some of them grow on the trunks of old trees and never touch the ground.",
]
FERNS_DESCRIPTION = [
    "The fronds of these ferns are long and narrow, with a glossy green upper surface.",
    "Their spores ripen during the rainy season and are spread by the wind.",
]
FERNS_SPORES = [
    "Each spore case holds many tiny spores that can travel for miles.",
    "Only a few of them ever land in a suitable place to grow.",
]
HARBOUR_LEAD = [
    "Harbour Lights is a lighthouse that stands on a rocky point above the old fishing harbour.",
    "Its lamp can be seen from twenty miles out at sea on a clear night.",
]
HARBOUR_HISTORY = [
    "The tower was built of local granite by the harbour board in the year of the great storm.",
    "Keepers lived in the cottage beside it until the light was automated.",
]
FERNS = f"""'''Zanzibar ferns''' are a group of plants that grow on the islands of the [[Zanzibar]] archipelago. \
{FERNS_LEAD[1]}<ref>Smith, ''Ferns'', 1901.</ref>

{" ".join(FERNS_LEAD_2)}

== Description ==
{" ".join(FERNS_DESCRIPTION)}

=== Spores ===
{" ".join(FERNS_SPORES)}

== Gallery ==
A few photos exist.

== References ==
{{{{reflist}}}}
[[Category:Ferns]]"""
HARBOUR = f"""{{{{Infobox lighthouse|name=Harbour Lights}}}}
'''Harbour Lights''' is a [[lighthouse]] that stands on a rocky point above the old fishing harbour. \
{HARBOUR_LEAD[1]}

==History==
{" ".join(HARBOUR_HISTORY)}"""


def page(title: str, page_id: int, text: str) -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f"<page><title>{title}</title><ns>0</ns><id>{page_id}</id>"
        f'<revision><id>{page_id}0</id><text xml:space="preserve">{escaped}</text></revision></page>'
    )


@pytest.fixture(scope="module")
def tiny_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two articles: a lead of two paragraphs, two sections (one nested) and a too short one; a lead and a section."""
    path = tmp_path_factory.mktemp("dump") / "tinywiki.xml.bz2"
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">'
        '<siteinfo><dbname>enwiki</dbname><namespaces><namespace key="0" /><namespace key="14">Category</namespace>'
        "</namespaces></siteinfo>"
        f"{page('Zanzibar ferns', 1, FERNS)}{page('Harbour Lights', 2, HARBOUR)}</mediawiki>"
    )
    path.write_bytes(bz2.compress(xml.encode()))
    return path


def config(**overrides: object) -> WikiConfig:
    defaults = {
        "lang": "en",
        "workers": 1,
        "progress": False,
        "validation_fraction": 0.0,
        "min_article_chars": 100,
        "min_paragraph_words": 5,
        "pair_min_words": 5,
        "pair_sentences_per_paragraph": 2,  # both sentences of every paragraph: nothing left to chance
    }
    return WikiConfig(**(defaults | overrides))


def pairs_of(corpus: Path) -> list[dict]:
    return [pair for path in corpus_files(corpus, "pairs", "train") for pair in read_supervised_pairs(path)]


def by_dataset(pairs: list[dict], dataset: str) -> list[tuple[str, str]]:
    return [(pair["query"], pair["positive"]) for pair in pairs if pair["dataset"] == dataset]


def both_ways(sentences: list[str]) -> list[tuple[str, str]]:
    return [(sentences[0], sentences[1]), (sentences[1], sentences[0])]


def test_pairs_of_a_hand_written_dump(tiny_dump: Path, tmp_path: Path) -> None:
    manifest = build_wiki_corpus(tiny_dump, config(), tmp_path / "corpus")
    pairs = pairs_of(tmp_path / "corpus")
    assert by_dataset(pairs, "wiki-title-lead") == [
        ("Zanzibar ferns", " ".join(FERNS_LEAD + FERNS_LEAD_2)),  # the lead's two paragraphs, markup and <ref> gone
        ("Harbour Lights", " ".join(HARBOUR_LEAD)),
    ]
    assert by_dataset(pairs, "wiki-heading-section") == [
        ("Zanzibar ferns: Description", " ".join(FERNS_DESCRIPTION)),  # its own text, not its subsection's
        ("Zanzibar ferns: Description > Spores", " ".join(FERNS_SPORES)),
        ("Harbour Lights: History", " ".join(HARBOUR_HISTORY)),
    ]  # "Gallery" is too short (4 words < pair_min_words), References is boilerplate
    assert by_dataset(pairs, "wiki-sentence-paragraph") == [
        pair
        for sentences in (FERNS_LEAD, FERNS_LEAD_2, FERNS_DESCRIPTION, FERNS_SPORES, HARBOUR_LEAD, HARBOUR_HISTORY)
        for pair in both_ways(sentences)  # the sentence is taken out of its paragraph
    ]
    assert all(pair["instruction"] == INSTRUCTIONS[pair["dataset"].removeprefix("wiki-")] for pair in pairs)
    assert manifest.counts.pairs == {"wiki-sentence-paragraph": 12, "wiki-title-lead": 2, "wiki-heading-section": 3}
    assert sum(shard["rows"] for shard in manifest.shards if shard["kind"] == "pairs") == len(pairs) == 17

    # Cut to pair_max_words, one pair per paragraph drawn with the seed, only the kinds asked for.
    build_wiki_corpus(tiny_dump, config(pair_max_words=6, pair_kinds=["title-lead"]), tmp_path / "cut")
    assert by_dataset(pairs_of(tmp_path / "cut"), "wiki-title-lead") == [
        ("Zanzibar ferns", "Zanzibar ferns are a group of"),
        ("Harbour Lights", "Harbour Lights is a lighthouse that"),
    ]
    assert len(pairs_of(tmp_path / "cut")) == 2
    drawn = []
    for name in ("one", "again"):
        one_each = config(pair_sentences_per_paragraph=1, pair_kinds=["sentence-paragraph"])
        build_wiki_corpus(tiny_dump, one_each, tmp_path / name)
        drawn.append(by_dataset(pairs_of(tmp_path / name), "wiki-sentence-paragraph"))
    assert drawn[0] == drawn[1] and len(drawn[0]) == 6
    assert all(pair in both_ways(FERNS_LEAD) for pair in drawn[0][:1])


def test_held_out_titles_give_no_pairs_but_keep_their_text(tiny_dump: Path, tmp_path: Path) -> None:
    holdout = tmp_path / "eval-titles.txt"
    holdout.write_text("Harbour_Lights\n\n")  # as a URL writes it
    for name, options in (("listed", {"holdout_titles": ["zanzibar ferns"]}), ("file", {"holdout_file": str(holdout)})):
        manifest = build_wiki_corpus(tiny_dump, config(**options), tmp_path / name)
        held_out = "Zanzibar ferns" if name == "listed" else "Harbour Lights"
        pairs = pairs_of(tmp_path / name)
        assert pairs and not [pair for pair in pairs if held_out in pair["query"] or held_out in pair["positive"]]
        assert not [pair for pair in pairs if pair["query"] in (FERNS_LEAD if name == "listed" else HARBOUR_LEAD)]
        assert manifest.counts.articles_kept == 2  # the paragraphs are still there
    with pytest.raises(DataError, match="missing.txt: file not found"):
        build_wiki_corpus(tiny_dump, config(holdout_file=str(tmp_path / "missing.txt")), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before the folder was claimed


def test_a_resumed_build_writes_the_pairs_of_an_uninterrupted_one(tiny_dump: Path, tmp_path: Path) -> None:
    build_wiki_corpus(tiny_dump, config(), tmp_path / "whole")
    whole = pairs_of(tmp_path / "whole")
    build_wiki_corpus(tiny_dump, config(max_articles=1), tmp_path / "resumed")
    manifest = Manifest.read(tmp_path / "resumed")
    manifest.status = "incomplete"  # as if killed after the first article's checkpoint
    manifest.write(tmp_path / "resumed")
    build_wiki_corpus(tiny_dump, config(), tmp_path / "resumed", resume=True)
    assert pairs_of(tmp_path / "resumed") == whole
    assert [shard["path"] for shard in Manifest.read(tmp_path / "resumed").shards if shard["kind"] == "pairs"] == [
        "pairs/train-00000.jsonl",
        "pairs/train-00001.jsonl",
    ]


def test_a_resume_compares_the_held_out_titles_not_where_their_file_is(tiny_dump: Path, tmp_path: Path) -> None:
    titles = tmp_path / "titles.txt"
    titles.write_text("Harbour Lights\n")
    build_wiki_corpus(tiny_dump, config(holdout_file=str(titles)), tmp_path / "whole")
    build_wiki_corpus(tiny_dump, config(holdout_file=str(titles), max_articles=1), tmp_path / "resumed")
    manifest = Manifest.read(tmp_path / "resumed")
    manifest.status = "incomplete"  # as if killed after the first article's checkpoint
    manifest.write(tmp_path / "resumed")
    other = tmp_path / "other.txt"
    other.write_text("Zanzibar ferns\n")
    with pytest.raises(OutputDirError, match="cannot resume with different options: holdout_file"):
        build_wiki_corpus(tiny_dump, config(holdout_file=str(other)), tmp_path / "resumed", resume=True)
    moved = titles.rename(tmp_path / "moved.txt")
    build_wiki_corpus(tiny_dump, config(holdout_file=str(moved)), tmp_path / "resumed", resume=True)
    assert pairs_of(tmp_path / "resumed") == pairs_of(tmp_path / "whole")


def test_the_bulgarian_sample_gives_pairs_in_cyrillic(tmp_path: Path) -> None:
    dump = expand_path("${gensim_data}/bgwiki-latest-pages-articles-shortened.xml.bz2")
    manifest = build_wiki_corpus(dump, config(lang="bg", pair_min_words=10, pair_sentences_per_paragraph=1), tmp_path)
    pairs = pairs_of(tmp_path)
    assert {pair["dataset"] for pair in pairs} == {"wiki-title-lead", "wiki-heading-section", "wiki-sentence-paragraph"}
    assert len(pairs) == sum(manifest.counts.pairs.values()) >= 5
    cyrillic = re.compile("[а-яА-Я]")
    assert all(cyrillic.search(pair["query"]) and cyrillic.search(pair["positive"]) for pair in pairs)
    assert ("Григориански календар", "wiki-title-lead") in {(pair["query"], pair["dataset"]) for pair in pairs}


def write_mixture(folder: Path) -> tuple[Path, Path]:
    """A JSONL file of two datasets (8 records each) and an STS file (8 pairs scored 4 or more)."""
    records = [
        {"query": f"{name} query {i}", "positive": f"{name} text {i}", "dataset": name}
        for name in "ab"
        for i in range(8)
    ]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    (folder / "sts.tsv").write_text("".join(f"sts left {i}\tsts right {i}\t{4 + i % 2}\n" for i in range(8)))
    return folder / "pairs.jsonl", folder / "sts.tsv"


def test_supervised_data_reads_a_mixture_and_caps_each_dataset(tmp_path: Path) -> None:
    jsonl, sts = write_mixture(tmp_path)
    single = supervised_data(SupervisedOptions(data=str(jsonl)))
    assert single.records == read_supervised_pairs(jsonl)  # one path: the very records, the same groups
    assert single.groups == [list(range(8)), list(range(8, 16))]
    mixture = supervised_data(SupervisedOptions(data=[str(jsonl), str(sts)]))
    assert mixture.records[:16] == single.records and len(mixture.records) == 24
    assert mixture.groups == [*single.groups, list(range(16, 24))] and mixture.sources == [range(16), range(16, 24)]
    capped = supervised_data(SupervisedOptions(data=[str(jsonl), str(sts)], max_pairs_per_dataset=3))
    assert [len(group) for group in capped.groups] == [3, 3, 3]
    queries = [record["query"] for record in capped.records]
    assert queries[:3] == sorted(queries[:3], key=lambda query: int(query.split()[-1]))  # file order is kept
    assert (
        capped.records
        == supervised_data(SupervisedOptions(data=[str(jsonl), str(sts)], max_pairs_per_dataset=3)).records
    )


def test_supervised_training_on_two_files_never_mixes_datasets(tiny_llama, tmp_path: Path, monkeypatch) -> None:
    jsonl, sts = write_mixture(tmp_path)
    batches: list[list[str]] = []

    class RecordingCollator(ContrastiveCollator):
        def __call__(self, records):
            batches.append([record["query"] for record in records])
            return super().__call__(records)

    monkeypatch.setattr(contrastive_driver, "ContrastiveCollator", RecordingCollator)
    options = SupervisedOptions(
        model=str(tiny_llama),
        data=[str(jsonl), str(sts)],
        output_dir=str(tmp_path / "run"),
        max_steps=6,  # every batch of 4: two of each dataset
        per_device_batch_size=4,
        warmup_steps=0,
        max_length=16,
        export=False,
    )
    assert train_supervised(options).global_step == 6
    assert len(batches) == 6
    assert sorted({query.rsplit(" ", 2)[0] for batch in batches for query in batch}) == ["a", "b", "sts"]
    assert all(len({query.rsplit(" ", 2)[0] for query in batch}) == 1 for batch in batches)


def test_a_bad_path_in_the_list_is_named_before_any_model_loads(tiny_llama, tiny_dump: Path, tmp_path: Path) -> None:
    jsonl, sts = write_mixture(tmp_path)
    missing = tmp_path / "missing.jsonl"
    options = SupervisedOptions(model=str(tmp_path / "no-model"), data=[str(jsonl), str(missing), str(sts)])
    with pytest.raises(DataError, match=f"{re.escape(str(missing))}: file not found"):
        train_supervised(options)  # the model does not exist either: the data is checked first

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'[run]\nmodel = "{tiny_llama}"\n[data]\ninputs = ["{tiny_dump}"]\nlang = "en"\n[mntp]\n'
        f'[supervised]\ndata = ["${{data}}", "{sts}"]\nmax_pairs_per_dataset = 100\n'
    )
    plan = plan_run(recipe, out=tmp_path / "run")
    assert plan.options["supervised"].data == [str(tmp_path / "run" / "data"), str(sts)]
    assert "data" in plan.stage("supervised").needs(plan)  # `${data}` is the data stage's output
    recipe.write_text(recipe.read_text().replace(f'"{sts}"]', f'"{sts}", "{missing}"]'))
    with pytest.raises(RecipeError, match=re.escape(f"[supervised] data: {missing} does not exist")):
        plan_run(recipe, out=tmp_path / "run")
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "cli-run")])
    assert result.exit_code == 2 and f"{missing} does not exist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cli-run" / "data" / MANIFEST_NAME).exists()
