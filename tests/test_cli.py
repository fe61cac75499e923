"""The command line over a tiny model folder: convert, encode, info, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
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


def test_run_help_lists_the_run_and_eval_options_and_names_the_stage_sections() -> None:
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Options (RunOptions), set with --set run.KEY=VALUE or a recipe's [run]" in text
    assert 'supervised_after (str, default "mntp"): the adapters supervised training starts from' in text
    assert "Options (EvalOptions), set with --set eval.KEY=VALUE or a recipe's [eval]" in text
    assert "limit (int | None, default none): at most this many examples per task" in text
    for stage in ("mntp", "simcse", "supervised"):
        assert f"[{stage}]:" in text and f"`lm2vec train {stage} --help`" in text
    assert "[data]:" in text and "`lm2vec data wiki --help`" in text
    for section, option in (("merge", "weights (list[float]"), ("export", "stage (str")):  # no command of their own
        assert f"[{section}]:" in text and f"set with --set {section}.KEY=VALUE" in text and option in text


def test_options_are_described_from_metadata() -> None:
    from lm2vec.options import describe
    from lm2vec.pipeline.plan import RunOptions
    from lm2vec.stages.eval import EvalOptions

    run = {doc.name: doc for doc in describe(RunOptions)}
    assert run["supervised_after"].help.startswith("the adapters supervised training starts from")
    assert run["max_length"].type == "int" and run["max_length"].default == "512"
    evaluation = {doc.name: doc for doc in describe(EvalOptions)}
    assert evaluation["batch_size"].help == "texts per forward pass"
    assert evaluation["limit"].type == "int | None" and evaluation["limit"].default == "none"
    assert evaluation["suites"].default == '["english"]'
    from lm2vec.stages import get_stage

    simcse = {doc.name: doc for doc in describe(get_stage("simcse").options_class())}  # a changed default keeps
    assert simcse["dropout"].default == "0.3" and simcse["dropout"].help.startswith("Attention dropout")  # the help


def _options_dataclasses() -> list[type]:
    """Every options dataclass of the package: the dataclasses named *Options or *Config, module by module."""
    import dataclasses
    import importlib
    import inspect
    import pkgutil

    import lm2vec

    found = []
    for module_info in pkgutil.walk_packages(lm2vec.__path__, "lm2vec."):
        if module_info.name == "lm2vec.__main__":
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
                and name.endswith(("Options", "Config"))
            ):
                found.append(value)
    return found


def test_every_field_of_every_options_dataclass_has_help() -> None:
    from lm2vec.options import describe

    classes = _options_dataclasses()
    names = {cls.__name__ for cls in classes}
    assert {
        "TrainingOptions",
        "MNTPConfig",
        "SimCSEOptions",
        "SupervisedOptions",
        "MiningOptions",
        "WikiConfig",
        "TextConfig",
        "EncoderConfig",
        "ChunkingOptions",
        "WriteOptions",
        "ServeOptions",
        "RunOptions",
        "EvalOptions",
    } <= names
    missing = [f"{cls.__name__}.{doc.name}" for cls in classes for doc in describe(cls) if not doc.help.strip()]
    assert not missing, f"fields without help: {missing}"


def _commands(command, path=()):
    if hasattr(command, "commands"):  # a group (typer has its own copy of click)
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def test_help_of_every_command_lists_every_option_with_help() -> None:
    import typer

    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) >= 12
    for path, command in commands:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, (path, result.output)
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert (param.help or "").strip(), f"lm2vec {' '.join(path)} {param.opts[0]} has no help"
                assert param.opts[0] in result.output, f"lm2vec {' '.join(path)} --help lacks {param.opts[0]}"


def test_options_come_from_the_dataclasses() -> None:
    import dataclasses

    import typer

    from lm2vec.data.config import WikiConfig
    from lm2vec.serving.documents import ChunkingOptions
    from lm2vec.serving.index import WriteOptions
    from lm2vec.training.mining import MiningOptions

    def flags(*path: str) -> set[str]:
        command = typer.main.get_command(app)
        for name in path:
            command = command.commands[name]
        return {option for param in command.params for option in (*param.opts, *param.secondary_opts)}

    def kebab(options_class: type) -> set[str]:
        return {"--" + field.name.replace("_", "-") for field in dataclasses.fields(options_class)}

    assert kebab(WikiConfig) <= flags("data", "wiki") and "--no-progress" in flags("data", "wiki")
    assert kebab(ChunkingOptions) | kebab(WriteOptions) <= flags("index", "build")
    assert kebab(WriteOptions) <= flags("index", "add") and "--passage-tokens" not in flags("index", "add")
    assert kebab(MiningOptions) <= flags("mine")


def test_typer_options_builds_the_dataclass_and_reports_bad_values() -> None:
    from dataclasses import dataclass, field

    import typer

    from lm2vec.options import typer_options

    @dataclass
    class Demo:
        size: int = field(default=2, metadata={"help": "a size"})
        name: str | None = field(default=None, metadata={"help": "a name"})
        fast: bool = field(default=True, metadata={"help": "go fast"})
        dims: list[int] = field(default_factory=lambda: [1], metadata={"help": "sizes"})

        def __post_init__(self) -> None:
            if self.size < 1:
                raise ValueError(f"size must be at least 1, got {self.size}.")

    seen = []
    demo = typer.Typer()

    @demo.command()
    @typer_options(options=Demo)
    def show(options: Demo, tag: str = "x") -> None:
        seen.append((options, tag))

    assert runner.invoke(demo, []).exit_code == 0 and seen[-1] == (Demo(), "x")
    result = runner.invoke(demo, ["--size", "3", "--name", "n", "--no-fast", "--dims", "4,8", "--dims", "16"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == (Demo(3, "n", False, [4, 8, 16]), "x")
    result = runner.invoke(demo, ["--size", "0"])
    assert result.exit_code == 2 and "error: size must be at least 1, got 0." in result.output
    result = runner.invoke(demo, ["--dims", "a"])
    assert result.exit_code == 2 and "error: --dims='a' is not an integer." in result.output

    # A recipe's `--set` goes through the same conversion: the same strings give the same options.
    from lm2vec.recipe import RecipeError, build_config

    assert build_config(Demo, "demo", {}, ["size=3", "name=n", "fast=no", "dims=4,8,16"]) == seen[-1][0]
    assert build_config(Demo, "demo", {"demo": {"dims": [4, 8]}}).dims == [4, 8]
    with pytest.raises(RecipeError, match="dims='a' is not an integer"):
        build_config(Demo, "demo", {}, ["dims=4,a"])
    with pytest.raises(RecipeError, match="dims=4.5 is not an integer"):
        build_config(Demo, "demo", {"demo": {"dims": [4.5]}})


def test_help_keeps_recipe_sections_and_types_as_written() -> None:
    """Help is plain text: `[supervised]` and `list[str]` are not eaten as markup, and nothing is escaped."""
    result = runner.invoke(app, ["mine", "--help"], env={"COLUMNS": "200"})
    assert "for `[supervised] data`" in " ".join(result.output.split())
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "list[str]" in result.output and "\\[" not in result.output
