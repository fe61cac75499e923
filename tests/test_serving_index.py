"""lm2vec index build/add and lm2vec search on real BBC News articles, with a tiny random encoder."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.data.packaged import bbc_dir
from lm2vec.serving.documents import Chunker, ChunkingOptions, read_documents
from lm2vec.serving.index import (
    MANIFEST_NAME,
    IndexStoreError,
    SearchIndex,
    WriteOptions,
    add_to_index,
    build_index,
)
from tests.tiny_models import save_tiny_model, tiny_tokenizer

runner = CliRunner()
CHUNKING = ChunkingOptions(passage_tokens=48, overlap_tokens=12)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bbc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real articles from two topics: a corpus that is small and quick, but real text."""
    folder = tmp_path_factory.mktemp("bbc")
    for topic in ("tech", "business"):
        (folder / topic).mkdir()
        for article in sorted((bbc_dir() / topic).glob("*.txt"))[:3]:
            shutil.copy(article, folder / topic / article.name)
    return folder


def index_vectors(folder: Path) -> np.ndarray:
    store = SearchIndex(folder)
    return store.index.reconstruct_n(0, store.index.ntotal)


def test_chunker_cuts_whole_sentences_within_the_budget_with_overlap() -> None:
    tokenizer = tiny_tokenizer()  # one token per word or punctuation mark
    a, b, c, d = "The cat sat on the mat.", "A dog ran fast.", "Music is big.", "The big red car is on the road."
    chunker = Chunker(tokenizer, ChunkingOptions(passage_tokens=12, overlap_tokens=5))
    # 7 + 5 tokens fill a passage; the next starts with b (5 tokens: fits the overlap); d (9) fits beside nothing.
    assert chunker.split(f"{a} {b}\n\n{c} {d}") == [f"{a} {b}", f"{b} {c}", d]
    no_overlap = Chunker(tokenizer, ChunkingOptions(passage_tokens=12, overlap_tokens=4))
    assert no_overlap.split(f"{a} {b} {c} {d}") == [f"{a} {b}", f"{c}", d]


def test_a_sentence_longer_than_a_passage_is_cut_between_tokens() -> None:
    tokenizer = tiny_tokenizer()
    words = "the cat sat on the mat and the dog ran fast on the road in the city with the man".split()
    passages = Chunker(tokenizer, ChunkingOptions(passage_tokens=8, overlap_tokens=0)).split(" ".join(words))
    assert [p.split() for p in passages] == [words[i : i + 8] for i in range(0, len(words), 8)]


def test_sources_of_every_kind_become_documents(tmp_path: Path, bbc: Path) -> None:
    (tmp_path / "notes.md").write_text("# Title\n\nFirst paragraph.\n\nSecond one.\n", encoding="utf-8")
    records = [{"id": "a1", "text": "Alpha text.", "title": "A", "lang": "en"}, {"text": "Beta text.", "year": 2004}]
    (tmp_path / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"id": ["p1"], "text": ["Parquet text."], "topic": ["tech"]}), tmp_path / "rows.parquet")
    (tmp_path / "old.txt").write_bytes("A £15.8m signing.".encode("cp1252"))  # as some BBC News files are
    documents = list(read_documents(tmp_path))
    assert [(label.split("/")[-1], d.doc_id, d.metadata) for label, d in documents] == [
        ("notes.md", "notes", {}),
        ("old.txt", "old", {}),
        ("records.jsonl#a1", "a1", {"lang": "en"}),
        ("records.jsonl#2", "2", {"year": 2004}),
        ("rows.parquet#p1", "p1", {"topic": "tech"}),
    ]
    assert documents[0][1].text == "# Title\n\nFirst paragraph.\n\nSecond one."
    assert documents[1][1].text == "A £15.8m signing."
    articles = list(read_documents(bbc))
    assert len(articles) == 6 and articles[0][1].title and "\n\n" in articles[0][1].text


def test_an_lm2vec_data_corpus_is_read_back_as_its_articles(tmp_path: Path) -> None:
    from lm2vec.data import TextConfig, build_text_corpus

    articles = [
        "Goats climb steep cliffs to reach salt. Their hooves grip narrow ledges. Kids follow their mothers closely.",
        "Copper wires carry current between towns. Engineers inspect the lines each spring. Storms often cut power.",
        "Bakers knead dough before dawn. Ovens reach high heat quickly. Fresh loaves sell out by noon every day.",
    ]
    (tmp_path / "input.txt").write_text("\n\n".join(articles) + "\n", encoding="utf-8")
    config = TextConfig(lang="en", validation_fraction=0.0, min_article_chars=20, workers=1)
    build_text_corpus(tmp_path / "input.txt", config, tmp_path / "corpus")
    documents = [document for _, document in read_documents(tmp_path / "corpus")]
    assert sorted(document.text for document in documents) == sorted(articles)


def test_build_add_and_search(tmp_path: Path, tiny_llama: Path, bbc: Path) -> None:
    out, tech = tmp_path / "index", tmp_path / "tech"
    shutil.copytree(bbc / "tech", tech)
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            str(tech),
            "--model",
            str(tiny_llama),
            "--out",
            str(out),
            "--passage-tokens",
            "48",
            "--overlap-tokens",
            "12",
        ],
    )
    assert result.exit_code == 0, result.output
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    chunker = Chunker(encoder.tokenizer, CHUNKING)
    expected = [p.text for label, d in read_documents(tech) for p in chunker.passages(label, d)]
    assert f"{len(expected):,} passages, exact (IndexFlatIP) index of 32 dims" in result.output
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["status"] == "complete" and manifest["chunking"] == {
        "passage_tokens": 48,
        "overlap_tokens": 12,
        "lang": "en",
    }
    assert len(manifest["model"]["weights_sha256"]) == 64 and manifest["model"]["encoder"]["pooling"] == "mean"

    store = SearchIndex(out)
    assert [p["text"] for p in store.passages] == expected
    # Passages are encoded as documents (no instruction), normalised: the stored vectors are encode()'s.
    assert np.allclose(index_vectors(out), encoder.encode(expected, normalize=True), atol=1e-5)

    # Each passage finds itself first (the tiny model's vectors are distinct for distinct texts).
    query = encoder.encode(expected[7:8], normalize=True)
    assert store.search(query, 3)[0][0].text == expected[7]

    # The folder of both topics: its tech articles are other files with the same texts, so only the business
    # articles are encoded; adding it again changes nothing.
    result = runner.invoke(app, ["index", "add", str(out), str(bbc)])
    assert result.exit_code == 0, result.output
    business = [p.text for label, d in read_documents(bbc / "business") for p in chunker.passages(label, d)]
    assert f"{len(business):,} passages encoded" in result.output
    assert f"{len(expected):,} reused (same text encoded before)" in result.output
    again = add_to_index(out, [bbc], WriteOptions())
    assert (again.encoded, again.unchanged, again.removed) == (0, len(expected) + len(business), 0)
    assert again.passages == 2 * len(expected) + len(business)

    # An article edited in place: its passages become the new ones, and only the new text is encoded.
    first = sorted(tech.glob("*.txt"))[0]
    first.write_text(first.read_text(encoding="utf-8") + "\n\nA brand new closing paragraph.\n", encoding="utf-8")
    assert add_to_index(out, [tech], WriteOptions()).encoded == 1
    new = [p.text for label, d in read_documents(first) for p in chunker.passages(str(first), d)]
    assert [p["text"] for p in SearchIndex(out).passages if p["source"] == str(first)] == new

    result = runner.invoke(app, ["search", str(out), expected[7], "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [hit["rank"] for hit in hits] == [1, 2] and hits[0]["text"] == expected[7]
    assert hits[0]["source"].endswith(".txt") and hits[0]["score"] >= hits[1]["score"]
    result = runner.invoke(app, ["search", str(out), expected[7], "--k", "1"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"1\. 1\.0000  \S+/tech/\d+\.txt \(.+\)\n   .+\n", result.stdout), result.stdout


def test_metadata_filter_and_the_approximate_index(tmp_path: Path, tiny_llama: Path) -> None:
    pairs = [(colour, animal) for colour in ("red", "blue", "green") for animal in ("cat", "dog", "man")]
    records = [{"id": str(i), "text": f"the {c} {a} ran on the road .", "colour": c} for i, (c, a) in enumerate(pairs)]
    (tmp_path / "animals.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    report = build_index(
        [tmp_path / "animals.jsonl"],
        str(tiny_llama),
        tmp_path / "index",
        CHUNKING,
        WriteOptions(exact_limit=4),
        echo=lambda _: None,
    )
    assert report.index_kind.startswith("approximate (IVF")
    store = SearchIndex(tmp_path / "index")
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    hits = store.search(encoder.encode(["the red cat ran on the road ."], normalize=True), 9, {"colour": "blue"})[0]
    assert hits and {hit.metadata["colour"] for hit in hits} == {"blue"}
    assert store.search(encoder.encode(["x"], normalize=True), 3, {"colour": "pink"}) == [[]]


def test_refusals(tmp_path: Path, tiny_llama: Path, bbc: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    result = runner.invoke(app, ["index", "build", str(bbc), "--model", str(tiny_llama), "--out", str(foreign)])
    assert result.exit_code == 2 and "was not made by lm2vec" in result.output
    assert (foreign / "keep.txt").read_text() == "not ours" and sorted(foreign.iterdir()) == [foreign / "keep.txt"]
    result = runner.invoke(
        app, ["index", "build", str(tmp_path / "missing"), "--model", str(tiny_llama), "--out", str(tmp_path / "i")]
    )
    assert result.exit_code == 2 and "no such file or folder" in result.output
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            str(bbc),
            "--model",
            str(tiny_llama),
            "--out",
            str(tmp_path / "i"),
            "--overlap-tokens",
            "300",
        ],
    )
    assert result.exit_code == 2 and "overlap_tokens" in result.output
    result = runner.invoke(
        app, ["index", "build", str(bbc), "--model", str(tiny_llama), "--out", str(tmp_path / "i"), "--part-size", "0"]
    )
    assert result.exit_code == 2 and "part_size must be at least 1" in result.output
    result = runner.invoke(app, ["search", str(foreign), "query"])
    assert result.exit_code == 2 and "not an lm2vec index" in result.output

    out = tmp_path / "index"
    build_index([bbc / "tech"], str(tiny_llama), out, CHUNKING, WriteOptions(), echo=lambda _: None)
    with pytest.raises(IndexStoreError, match="already holds a complete index"):
        build_index([bbc / "tech"], str(tiny_llama), out, CHUNKING, WriteOptions(), echo=lambda _: None)
    other_model = save_tiny_model("llama", tmp_path / "other-model", seed=1)
    from lm2vec.serving.index import check_same_model

    with pytest.raises(IndexStoreError, match="weights differ"):
        check_same_model(SearchIndex(out).model, str(other_model), LM2Vec.from_pretrained(other_model, device="cpu"))


def _build_command(source: Path, model: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lm2vec",
        "index",
        "build",
        str(source),
        "--model",
        str(model),
        "--out",
        str(out),
        "--passage-tokens",
        "24",
        "--overlap-tokens",
        "6",
        "--part-size",
        "4",
        "--batch-size",
        "4",
    ]


def test_kill_9_during_build_then_resume_gives_the_same_index(tmp_path: Path, tiny_llama: Path, bbc: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    process = subprocess.Popen(
        _build_command(bbc, tiny_llama, interrupted),
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        manifest = interrupted / MANIFEST_NAME
        if manifest.is_file() and len(json.loads(manifest.read_text())["parts"]) >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = json.loads((interrupted / MANIFEST_NAME).read_text())
    assert killed["status"] == "building" and killed["searchable"] is None, "the build ended before the kill"
    with pytest.raises(IndexStoreError, match="has not finished"):
        SearchIndex(interrupted)  # a half-built index is never read

    resumed = subprocess.run(
        _build_command(bbc, tiny_llama, interrupted), env=environment, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming the build in {interrupted}" in resumed.stdout
    kept = sum(part["passages"] for part in killed["parts"])
    assert f"{interrupted}: {kept:,} passages kept" in resumed.stdout

    build_index(
        [bbc],
        str(tiny_llama),
        whole,
        ChunkingOptions(24, 6),
        WriteOptions(part_size=4, batch_size=4),
        echo=lambda _: None,
    )
    assert SearchIndex(interrupted).passages == SearchIndex(whole).passages
    assert np.allclose(index_vectors(interrupted), index_vectors(whole), atol=1e-5)
    # What the killed run wrote after its last commit is gone: the parts folder holds the manifest's parts.
    parts = json.loads((interrupted / MANIFEST_NAME).read_text())["parts"]
    assert sorted(p.name for p in (interrupted / "parts").iterdir()) == sorted(Path(p["path"]).name for p in parts)


def test_search_puts_the_trained_query_instruction_on_queries(tmp_path: Path, tiny_llama: Path, bbc: Path) -> None:
    from lm2vec.training.contrastive import SupervisedOptions, query_instruction, supervised_data

    records = [{"query": "q", "positive": "p", "instruction": i} for i in ("retrieve similar text", "", "find x")]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in records[:1] * 2 + records), "utf-8")
    instruction = query_instruction(supervised_data(SupervisedOptions(data=str(tmp_path / "pairs.jsonl"))).records)
    assert instruction == "retrieve similar text"  # the one most training queries carried, saved on export

    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    encoder.config.query_instruction = instruction
    encoder.save_pretrained(tmp_path / "model")
    build_index(
        [bbc / "tech"], str(tmp_path / "model"), tmp_path / "index", CHUNKING, WriteOptions(), echo=lambda _: None
    )
    store, query = SearchIndex(tmp_path / "index"), "the cat sat on the mat"
    for option, expected_query in (([], (instruction, query)), (["--instruction", ""], query)):
        result = runner.invoke(app, ["search", str(tmp_path / "index"), query, "--k", "1", "--json", *option])
        assert result.exit_code == 0, result.output
        expected = store.search(encoder.encode([expected_query], normalize=True), 1)[0][0]
        assert json.loads(result.stdout)[0]["score"] == pytest.approx(expected.score, abs=1e-5)
    with_instruction = store.search(encoder.encode([(instruction, query)], normalize=True), 1)[0][0].score
    assert abs(with_instruction - store.search(encoder.encode([query], normalize=True), 1)[0][0].score) > 1e-4
