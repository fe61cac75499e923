"""LM2VecError: the base of every lm2vec error, and what every command makes of it (`error: ...`, exit 2)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import typer
from typer.testing import CliRunner

import lm2vec
from lm2vec import LM2VecError
from lm2vec.cli import app
from lm2vec.console import user_errors

runner = CliRunner()

# Exception classes of lm2vec that are not errors for the user, and why.
NOT_USER_ERRORS = {
    # An HTTP error response of `lm2vec serve` (status, OpenAI error type): the service answers it to the client,
    # the command line never sees it.
    "lm2vec.serving.app.APIError",
}

# The builtin base each family keeps, so `except ValueError` (...) goes on catching it.
BUILTIN_BASES = {
    "lm2vec.recipe.RecipeError": ValueError,
    "lm2vec.pipeline.run.PipelineError": RuntimeError,
    "lm2vec.data.errors.UnknownLanguageError": ValueError,
    "lm2vec.data.errors.DataError": ValueError,  # evaluation.errors.EvalDataError
    "lm2vec.evaluation.errors.EvalConfigError": ValueError,
    "lm2vec.artifacts.ForeignFolderError": FileExistsError,
    "lm2vec.artifacts.OutputPathError": OSError,
    "lm2vec.modeling.loading.DeviceError": ValueError,
    "lm2vec.serving.app.ServeError": ValueError,
    "lm2vec.modeling.bidirectional.UnsupportedArchitectureError": ValueError,
    "lm2vec.modeling.bidirectional.StillCausalError": RuntimeError,
    "lm2vec.modeling.sources.ModelSourceError": OSError,
    "lm2vec.training.lora.FusedLoraError": RuntimeError,
}


def lm2vec_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the lm2vec package (all modules imported)."""
    found = {}
    for module_info in pkgutil.walk_packages(lm2vec.__path__, prefix="lm2vec."):
        if module_info.name.endswith("__main__"):  # runs the command line
            continue
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_every_lm2vec_error_is_an_lm2vec_error() -> None:
    classes = lm2vec_exception_classes()
    assert "lm2vec.data.errors.DumpError" in classes and "lm2vec.serving.index.IndexStoreError" in classes
    assert NOT_USER_ERRORS <= classes.keys()
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, LM2VecError))
    assert strays == sorted(NOT_USER_ERRORS), "not LM2VecError subclasses (or no longer present)"
    assert BUILTIN_BASES.keys() <= classes.keys()
    for name, base in BUILTIN_BASES.items():
        assert issubclass(classes[name], base), name
    assert lm2vec.LM2VecError is classes["lm2vec.errors.LM2VecError"]


class ToyError(LM2VecError):
    """An LM2VecError no command names: what the commands catch is the base."""


def _raise(*args, **kwargs):
    raise ToyError("something the user can fix")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "texts.txt").write_text("a text\n")
    (tmp_path / "pairs.jsonl").write_text('{"query": "q", "positive": "p"}\n')
    return tmp_path


# command line -> the function it calls that raises
COMMANDS = {
    "run": (["run", "{t}/recipe.toml"], "lm2vec.pipeline.run.run_recipe"),
    "plan": (["plan", "{t}/recipe.toml"], "lm2vec.pipeline.plan.plan_run"),
    "convert": (["convert", "some-model", "{t}/out"], "lm2vec.modeling.encoder.LM2Vec.from_pretrained"),
    "encode": (
        ["encode", "-m", "m", "-i", "{t}/texts.txt", "-o", "{t}/out.npy"],
        "lm2vec.modeling.encoder.LM2Vec.from_pretrained",
    ),
    "mine": (
        ["mine", "-m", "m", "-p", "{t}/pairs.jsonl", "-o", "{t}/out.jsonl"],
        "lm2vec.training.mining.read_mining_inputs",
    ),
    "info": (["info", "some-model"], "lm2vec.modeling.encoder.LM2Vec.from_pretrained"),
    "train mntp": (["train", "mntp", "--recipe", "{t}/recipe.toml"], "lm2vec.pipeline.run.run_recipe"),
    "train simcse": (["train", "simcse"], "lm2vec.recipe.build_config"),
    "train supervised": (["train", "supervised", "--recipe", "{t}/recipe.toml"], "lm2vec.pipeline.run.run_recipe"),
    "data wiki": (
        ["data", "wiki", "{t}/dump.xml", "--lang", "en", "--out", "{t}/c"],
        "lm2vec.data.cli.build_wiki_corpus",
    ),
    "data text": (
        ["data", "text", "{t}/texts.txt", "--lang", "en", "--out", "{t}/c"],
        "lm2vec.data.cli.build_text_corpus",
    ),
    "data merge": (["data", "merge", "{t}/part1", "{t}/part2", "--out", "{t}/c"], "lm2vec.data.cli.merge_parts"),
    "eval run": (["eval", "run", "-m", "a=pkg:smollm2"], "lm2vec.evaluation.cli._run"),
    "eval list": (["eval", "list"], "lm2vec.evaluation.registry.Registry.from_files"),
    "eval fetch-data": (["eval", "fetch-data"], "lm2vec.data.packaged.libreoffice_messages"),
    "report": (["report", "a=pkg:smollm2"], "lm2vec.evaluation.report.resolve_models"),
    "index build": (["index", "build", "{t}", "-m", "m", "-o", "{t}/index"], "lm2vec.serving.index.build_index"),
    "index add": (["index", "add", "{t}/index", "{t}"], "lm2vec.serving.index.add_to_index"),
    "index remove": (["index", "remove", "{t}/index", "{t}"], "lm2vec.serving.index.remove_from_index"),
    "search": (["search", "{t}/index", "a query"], "lm2vec.serving.index.SearchIndex"),
    "serve": (["serve", "some-model", "--port", "0"], "lm2vec.serving.app.load_service"),
}


def test_every_command_is_listed() -> None:
    import click

    command = typer.main.get_command(app)

    def leaves(group, prefix=()):
        for name, sub in group.commands.items():
            if isinstance(sub, click.Group) or hasattr(sub, "commands"):
                yield from leaves(sub, (*prefix, name))
            else:
                yield " ".join((*prefix, name))

    assert set(leaves(command)) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_lm2vec_error_anywhere_is_error_and_exit_2(name, files, monkeypatch) -> None:
    arguments, target = COMMANDS[name]
    module_name, _, attribute = target.rpartition(".")
    try:
        owner = importlib.import_module(module_name)
    except ModuleNotFoundError:  # a class attribute: module.Class.method
        module_name, _, class_name = module_name.rpartition(".")
        owner = getattr(importlib.import_module(module_name), class_name)
    monkeypatch.setattr(owner, attribute, staticmethod(_raise) if inspect.isclass(owner) else _raise)
    result = runner.invoke(app, [a.format(t=files) for a in arguments])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.strip() == "error: something the user can fix"
    assert "Traceback" not in result.output


def test_other_errors_are_not_swallowed() -> None:
    with pytest.raises(RuntimeError, match="a bug"), user_errors(ValueError):
        raise RuntimeError("a bug")
    with pytest.raises(typer.Exit) as exit_info, user_errors(RuntimeError):  # typer.Exit is a RuntimeError too
        raise typer.Exit(code=0)
    assert exit_info.value.exit_code == 0
    with pytest.raises(typer.Exit) as exit_info, user_errors(ValueError):
        raise ValueError("a bad option")
    assert exit_info.value.exit_code == 2
