"""The command line over a tiny model folder: convert, encode, info, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_encode_rows_are_lines_and_bad_input_is_refused_before_loading(tiny_llama, tmp_path) -> None:
    # U+2028, U+0085 and a form feed are characters inside a line, not line breaks: 2 lines give 2 rows.
    (tmp_path / "two.txt").write_text("a red car\u2028the dog\u0085ran\r\nfast \x0c music\n", encoding="utf-8")
    target = tmp_path / "two"  # no .npy suffix: written exactly where asked
    result = runner.invoke(app, ["encode", "-m", str(tiny_llama), "-i", str(tmp_path / "two.txt"), "-o", str(target)])
    assert result.exit_code == 0, result.output
    expected = LM2Vec.from_pretrained(tiny_llama, device="cpu").encode(
        ["a red car\u2028the dog\u0085ran", "fast \x0c music"]
    )
    np.testing.assert_allclose(np.load(target), expected, rtol=1e-5, atol=1e-6)

    def encode(name: str, output: Path) -> str:
        result = runner.invoke(app, ["encode", "-m", "pkg:never-loaded", "-i", str(tmp_path / name), "-o", str(output)])
        assert result.exit_code == 2
        return " ".join(result.output.split())

    assert "its folder does not exist" in encode("two.txt", tmp_path / "missing" / "out.npy")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert "not UTF-8 text" in encode("latin1.txt", tmp_path / "out.npy")
    (tmp_path / "numbers.jsonl").write_text('{"text": "ok"}\n{"text": 42}\n')
    assert "numbers.jsonl:2: not a JSON object with a 'text' string" in encode("numbers.jsonl", tmp_path / "out.npy")
    assert "does not exist or is not a file" in encode("", tmp_path / "out.npy")  # the folder itself
    (tmp_path / "surrogate.jsonl").write_text('{"text": "ab\\ud800"}\n')
    result = runner.invoke(
        app, ["encode", "-m", str(tiny_llama), "-i", str(tmp_path / "surrogate.jsonl"), "-o", "x.npy"]
    )
    assert result.exit_code == 2 and "lone surrogate" in result.output


def test_train_help_lists_the_stages_options() -> None:
    result = runner.invoke(app, ["train", "mntp", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Options (MNTPConfig), set with --set mntp.KEY=VALUE or a recipe's [mntp]" in text
    assert 'mask_strategy (str, default "bert"): bert: 80% mask / 10% random / 10% kept' in text
    assert "lora_target_modules (list[str]" in text and "output_dir" in text and "the run sets it" in text
    result = runner.invoke(app, ["train", "supervised", "--help"], env={"COLUMNS": "200"})
    assert "Options (SupervisedOptions)" in " ".join(result.output.split())


def test_options_are_described_from_metadata_and_comments() -> None:
    from lm2vec.options import describe
    from lm2vec.pipeline import RunOptions
    from lm2vec.stages.eval import EvalOptions

    run = {doc.name: doc for doc in describe(RunOptions)}
    assert run["supervised_after"].help.startswith("the adapters supervised training starts from")
    assert run["max_length"].type == "int" and run["max_length"].default == "512"
    evaluation = {doc.name: doc for doc in describe(EvalOptions)}
    assert evaluation["limit"].type == "int | None" and evaluation["limit"].default == "none"
    assert evaluation["suites"].default == '["english"]'
