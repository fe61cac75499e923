"""lm2vec.data's input layer: what each kind of reader makes of each file (lm2vec.data.readers), the record formats
(lm2vec.data.formats), one error class, one require_file, and training importing no evaluation code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lm2vec
from lm2vec.data.corpus import corpus_files
from lm2vec.data.errors import DataError, DumpError, require_file
from lm2vec.data.formats import read_sts, read_supervised_pairs, sts_supervised_pairs
from lm2vec.data.readers import Document, DocumentFile, load_documents, load_text_dataset, load_texts
from lm2vec.errors import LM2VecError

TWO_PARAGRAPHS = "first paragraph, line one\n  still the first paragraph\n\n\nthe second paragraph\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus of three articles built by `lm2vec data text`, every article in the train split."""
    from lm2vec.data import TextConfig, build_text_corpus

    folder = tmp_path_factory.mktemp("corpus")
    articles = [
        "Goats climb steep cliffs to reach salt. Their hooves grip narrow ledges. Kids follow their mothers closely.",
        "Copper wires carry current between towns. Engineers inspect the lines each spring. Storms often cut power.",
        "Bakers knead dough before dawn. Ovens reach high heat quickly. Fresh loaves sell out by noon every day.",
    ]
    (folder / "input.txt").write_text("\n\n".join(articles) + "\n", encoding="utf-8")
    config = TextConfig(lang="en", validation_fraction=0.0, min_article_chars=20, workers=1, progress=False)
    build_text_corpus(folder / "input.txt", config, folder / "corpus")
    return folder / "corpus"


def shard_rows(corpus: Path, kind: str) -> list[dict]:
    return [row for path in corpus_files(corpus, kind) for row in pq.read_table(path).to_pylist()]


# --- texts by kind ---------------------------------------------------------------------------------------------
def test_a_txt_file_means_what_its_kind_says(tmp_path: Path) -> None:
    """The table of lm2vec.data.readers: lines, sentences, blank-line paragraphs, one document."""
    path = tmp_path / "t.txt"
    path.write_text(TWO_PARAGRAPHS)
    assert load_texts(path, "lines") == [
        "first paragraph, line one",
        "  still the first paragraph",
        "",
        "",
        "the second paragraph",
    ]
    assert load_texts(path, "sentences") == [
        "first paragraph, line one",
        "still the first paragraph",
        "the second paragraph",
    ]
    paragraphs = ["first paragraph, line one still the first paragraph", "the second paragraph"]
    assert load_texts(path, "paragraphs") == paragraphs
    assert load_texts(path, "documents") == ["\n\n".join(paragraphs)]
    with pytest.raises(ValueError, match="kind must be one of lines, sentences, paragraphs, documents"):
        load_texts(path, "words")


def test_simcse_crops_read_paragraphs_not_lines(tmp_path: Path) -> None:
    """`positives = "crops"` asks for paragraphs: a .txt file's blank-line blocks, as MNTP reads it (its lines
    were read once: a paragraph broken over two lines gave two short crops)."""
    from lm2vec.training.contrastive.data import crop_pairs

    path = tmp_path / "p.txt"
    path.write_text("one two three four five\nsix seven eight nine ten\n\neleven twelve\n")
    paragraphs = load_texts(path, "paragraphs")
    assert paragraphs == ["one two three four five six seven eight nine ten", "eleven twelve"]
    assert list(load_text_dataset(path)["text"]) == paragraphs  # MNTP's reading of the same file
    crops = crop_pairs(paragraphs, (0.5, 0.5))  # the second paragraph is too short to crop
    assert len(crops) == 1 and len(crops[0]["query"].split()) == 5


def test_one_text_per_line_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes("a\u2028b\r\n\nc\fd\n".encode())
    assert load_texts(path, "lines") == ["a\u2028b", "", "c\fd"]
    (tmp_path / "empty.txt").write_text("")
    assert load_texts(tmp_path / "empty.txt", "lines") == []
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9\n")
    for kind in ("lines", "sentences"):
        with pytest.raises(DataError, match="latin.txt: not UTF-8 text"):
            load_texts(tmp_path / "latin.txt", kind)


def test_jsonl_texts(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n\n{"body": "b", "text": " c "}\n')
    assert load_texts(path, "lines") == ["a", " c "]
    assert load_texts(path, "sentences") == ["a", "c"]
    assert load_texts(path, "paragraphs") == ["a", " c "]
    with pytest.raises(DataError, match=r"t.jsonl:1: not a JSON object with a 'body' string"):
        load_texts(path, "lines", text_field="body")
    for content, message in (
        ('{"text": "a"}\n{"text": 3}\n', r"t.jsonl:2: not a JSON object with a 'text' string"),
        ('{"text": "a"}\nnot json\n', r"t.jsonl:2: not valid JSON"),
    ):
        path.write_text(content)
        for kind in ("lines", "sentences"):
            with pytest.raises(DataError, match=message):
                load_texts(path, kind)


def test_sentences_are_stripped_and_blank_ones_skipped(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("one sentence\n\n two \n")
    assert load_texts(tmp_path / "s.txt", "sentences") == ["one sentence", "two"]
    with pytest.raises(DataError, match="missing.txt: file not found"):
        load_texts(tmp_path / "missing.txt", "sentences")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match="blank.txt: holds no sentences"):
        load_texts(tmp_path / "blank.txt", "sentences")
    with pytest.raises(DataError, match="not a corpus"):
        load_texts(tmp_path, "sentences")


def test_a_corpus_is_read_through_one_function(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind reads a corpus's shards through `load_corpus`, and gets what the shards hold."""
    from lm2vec.data import corpus as corpus_module
    from lm2vec.data import readers

    sentences, paragraphs = shard_rows(corpus, "sentences"), shard_rows(corpus, "paragraphs")
    assert load_texts(corpus, "sentences") == [row["text"] for row in sentences]
    assert load_texts(corpus, "paragraphs") == [row["text"] for row in paragraphs]
    assert load_text_dataset(corpus).column_names == ["text", "title", "article_id", "paragraph"]
    assert load_text_dataset(corpus, split="validation") is None  # MNTP then holds out its own share
    documents = list(load_documents(corpus))
    assert [label for label, _ in documents] == [f"{corpus}#{row['article_id']}" for row in paragraphs]
    assert [document.text for _, document in documents] == [row["text"] for row in paragraphs]
    streamed = corpus_module.load_corpus(corpus, "paragraphs", streaming=True)
    assert list(streamed) == paragraphs  # `lm2vec eval`'s Wikipedia retrieval reads the rows so

    read = []
    real = corpus_module.load_corpus
    monkeypatch.setattr(readers, "load_corpus", lambda *args, **kwargs: read.append(args[1]) or real(*args, **kwargs))
    load_texts(corpus, "sentences")
    load_texts(corpus, "paragraphs")
    list(load_documents(corpus))
    assert read == ["sentences", "paragraphs", "paragraphs", "paragraphs"]  # documents: each split in turn


def test_documents(tmp_path: Path) -> None:
    (tmp_path / "note.md").write_text("Title line\n\nbody text\nmore body\n")
    assert list(load_documents(tmp_path / "note.md")) == [
        (str(tmp_path / "note.md"), Document("note", "Title line", "Title line\n\nbody text more body"))
    ]
    records = tmp_path / "d.jsonl"
    records.write_text(json.dumps({"id": 7, "title": "T", "text": "x", "lang": "en"}) + "\n")
    assert list(load_documents(records)) == [(f"{records}#7", Document("7", "T", "x", {"lang": "en"}))]
    pq.write_table(pa.table({"text": ["y", "z"], "year": [1999, 2000]}), tmp_path / "rows.parquet")
    assert [document for _, document in load_documents(tmp_path / "rows.parquet")] == [
        Document("1", "", "y", {"year": 1999}),
        Document("2", "", "z", {"year": 2000}),
    ]
    (tmp_path / "latin.txt").write_bytes(b"costs \xa34\n")  # Windows-1252, as BBC News is
    assert load_texts(tmp_path / "latin.txt", "documents") == ["costs \u00a34"]


def test_blank_line_documents_stream(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("first line\nsame document\n\n\nsecond\n")
    assert [d.text for d in DocumentFile(path).items()] == ["first line same document", "second"]
    (tmp_path / "bad.jsonl").write_text('{"text": ["a", "list"]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 1: 'text' is a list, not a string"):
        list(DocumentFile(tmp_path / "bad.jsonl").items())


# --- records ---------------------------------------------------------------------------------------------------
def test_supervised_and_similarity_pairs(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"query": "q", "positive": "p", "negatives": "n"}\n')
    assert read_supervised_pairs(tmp_path / "p.jsonl") == [
        {"query": "q", "positive": "p", "negatives": ["n"], "instruction": "", "dataset": "default", "symmetric": False}
    ]
    (tmp_path / "sts.tsv").write_text("a\tb\t4.5\nc\td\t1.0\n")
    assert read_sts(tmp_path / "sts.tsv").scores == [4.5, 1.0]
    pairs = sts_supervised_pairs(tmp_path / "sts.tsv", 4.0, "similar")
    assert [(p["query"], p["positive"], p["dataset"], p["symmetric"]) for p in pairs] == [("a", "b", "sts", True)]
    with pytest.raises(DataError, match="sts.tsv: no pair is scored 5.0 or more"):
        sts_supervised_pairs(tmp_path / "sts.tsv", 5.0, "similar")
    with pytest.raises(DataError, match="sts.tsv:1: gold score"):
        (tmp_path / "sts.tsv").write_text("a\tb\tmany\n")
        read_sts(tmp_path / "sts.tsv")


# --- one error, one require_file, one layer --------------------------------------------------------------------
def test_one_error_class_for_every_input(tmp_path: Path) -> None:
    from lm2vec.evaluation.errors import EvalDataError

    assert EvalDataError is DataError and issubclass(DataError, LM2VecError) and issubclass(DataError, ValueError)
    assert issubclass(DumpError, DataError)
    error = DataError("gold score 'x' is not a number", tmp_path / "a.tsv", 3)
    assert str(error) == f"{tmp_path / 'a.tsv'}:3: gold score 'x' is not a number" and error.line == 3
    assert str(DataError("no sources given")) == "no sources given"


def test_one_require_file(tmp_path: Path) -> None:
    from lm2vec.data.dump import DumpReader

    (tmp_path / "a.txt").write_text("a")
    assert require_file(str(tmp_path / "a.txt")) == tmp_path / "a.txt"
    with pytest.raises(DataError, match="nowhere.txt: file not found"):
        require_file(tmp_path / "nowhere.txt")
    with pytest.raises(DumpError, match="is a folder, not a file"):
        DumpReader(tmp_path)
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_supervised_pairs(tmp_path)
    source = Path(lm2vec.__file__).parent
    defining = [str(p.relative_to(source)) for p in source.rglob("*.py") if "def require_file(" in p.read_text()]
    assert defining == ["data/errors.py"]


def test_every_reader_lives_in_lm2vec_data() -> None:
    source = Path(lm2vec.__file__).parent
    readers = sorted(str(path.relative_to(source)) for path in source.rglob("readers.py"))
    assert readers == ["data/readers.py"]


def test_training_imports_no_evaluation_code() -> None:
    code = (
        "import pkgutil, importlib, sys, lm2vec.training as t\n"
        "for m in pkgutil.walk_packages(t.__path__, 'lm2vec.training.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.startswith('lm2vec.evaluation')))\n"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # this checkout's lm2vec
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    assert result.stdout.strip() == "[]", result.stdout


def test_the_command_line_imports_no_model_or_scipy_code_until_a_command_needs_it() -> None:
    """`lm2vec data ...` (and every command's --help) starts in under a second instead of the ~5 s of importing
    torch and transformers, and its worker processes stay small; datasketch and scipy are not needed either."""
    heavy = "{'torch', 'transformers', 'scipy'}"
    code = f"import sys, lm2vec.cli\nprint(sorted({{name.split('.')[0] for name in sys.modules}} & {heavy}))"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # this checkout's lm2vec
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    assert result.stdout.strip() == "[]", result.stdout
