"""lm2vec.readers: the shared input formats, and training importing no evaluation code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lm2vec.readers import (
    DataFileError,
    Document,
    read_blank_line_documents,
    read_jsonl_texts,
    read_lines,
    read_sentences,
    read_sts,
    read_supervised_pairs,
    read_texts_per_line,
    sts_supervised_pairs,
)


def test_one_text_per_line_keeps_every_row(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes("a\u2028b\r\n\nc\fd\n".encode())
    assert read_lines(path) == ["a\u2028b", "", "c\fd"]
    assert read_texts_per_line(path) == read_lines(path)
    (tmp_path / "empty.txt").write_text("")
    assert read_lines(tmp_path / "empty.txt") == []
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_lines(tmp_path / "latin.txt")


def test_jsonl_texts(tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n\n{"body": "b", "text": "c"}\n')
    assert read_jsonl_texts(path) == ["a", "c"] == read_texts_per_line(path)
    path.write_text('{"text": "a"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: not a JSON object with a 'text' string"):
        read_jsonl_texts(path)


def test_sentences_are_stripped_and_blank_ones_skipped(tmp_path) -> None:
    (tmp_path / "s.txt").write_text("one sentence\n\n two \n")
    assert read_sentences(tmp_path / "s.txt") == ["one sentence", "two"]
    with pytest.raises(FileNotFoundError):
        read_sentences(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no sentences"):
        read_sentences(tmp_path / "blank.txt")


def test_blank_line_documents(tmp_path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("first line\nsame document\n\n\nsecond\n")
    assert [d.text for d in read_blank_line_documents(path)] == ["first line same document", "second"]
    records = tmp_path / "d.jsonl"
    records.write_text(json.dumps({"id": 7, "title": "T", "text": "x", "lang": "en"}) + "\n")
    assert read_blank_line_documents(records) == [Document("7", "T", "x", {"lang": "en"})]


def test_supervised_and_similarity_pairs(tmp_path) -> None:
    (tmp_path / "p.jsonl").write_text('{"query": "q", "positive": "p", "negatives": "n"}\n')
    assert read_supervised_pairs(tmp_path / "p.jsonl") == [
        {"query": "q", "positive": "p", "negatives": ["n"], "instruction": "", "dataset": "default",
         "symmetric": False}
    ]  # fmt: skip
    (tmp_path / "sts.tsv").write_text("a\tb\t4.5\nc\td\t1.0\n")
    assert read_sts(tmp_path / "sts.tsv").scores == [4.5, 1.0]
    pairs = sts_supervised_pairs(tmp_path / "sts.tsv", 4.0, "similar")
    assert [(p["query"], p["positive"], p["dataset"], p["symmetric"]) for p in pairs] == [("a", "b", "sts", True)]
    with pytest.raises(DataFileError, match="sts.tsv:1: gold score"):
        (tmp_path / "sts.tsv").write_text("a\tb\tmany\n")
        read_sts(tmp_path / "sts.tsv")


def test_evaluation_reports_reader_errors_as_its_own() -> None:
    from lm2vec.evaluation.errors import EvalDataError
    from lm2vec.evaluation.readers import read_sts as evaluation_read_sts

    assert EvalDataError is DataFileError and evaluation_read_sts is read_sts


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
