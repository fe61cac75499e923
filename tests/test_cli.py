"""The command line over a tiny model folder: convert, encode, info, and clean errors."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app

runner = CliRunner()


def test_convert_then_encode_txt_and_jsonl(tiny_llama, tmp_path) -> None:
    out = tmp_path / "encoder"
    result = runner.invoke(app, ["convert", str(tiny_llama), str(out), "--pooling", "last_token"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "lm2vec_config.json").read_text())["pooling"] == "last_token"

    texts = ["a dog ran", "the cat sat on the mat", "music"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    expected = LM2Vec.from_pretrained(out, device="cpu").encode(texts)
    for name in ("texts.txt", "texts.jsonl"):
        target = tmp_path / f"{name}.npy"
        result = runner.invoke(app, ["encode", "-m", str(out), "-i", str(tmp_path / name), "-o", str(target)])
        assert result.exit_code == 0, result.output
        np.testing.assert_allclose(np.load(target), expected, atol=1e-5)


def test_info_reports_the_probe(tiny_llama) -> None:
    result = runner.invoke(app, ["info", str(tiny_llama)])
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)
    assert details["architecture"] == "llama"
    assert details["bidirectional_probe"] == "bidirectional"
    assert details["parameters"] > 0


def test_errors_are_messages_not_tracebacks(tiny_llama, tmp_path) -> None:
    result = runner.invoke(app, ["info", "pkg:nope"])
    assert result.exit_code == 2
    assert "Unknown packaged model 'pkg:nope'" in result.output
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n')
    result = runner.invoke(app, ["encode", "-m", str(tiny_llama), "-i", str(tmp_path / "bad.jsonl"), "-o", "x.npy"])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output
