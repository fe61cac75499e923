"""What `eval run`, `report`, `encode` and `mine` write, and what they refuse before any model loads.

One rule for outputs (lm2vec.artifacts): an output file that exists is replaced only with `--overwrite`; a report
folder must be new, empty or an earlier report's (its results.json says so). Every mistake is one `error:` line,
exit status 2, found before a model loads: the commands here name `pkg:never-loaded`, a model that does not
exist, so a command that got as far as loading one would say so instead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lm2vec.artifacts import ForeignFolderError, OutputPathError, check_output_file, write_text_atomic
from lm2vec.cli import app
from lm2vec.data.errors import DataError
from lm2vec.data.formats import read_supervised_pairs
from lm2vec.evaluation.errors import EvalConfigError
from lm2vec.evaluation.report import write_report
from lm2vec.evaluation.runner import ModelResult, Results, TaskResult, evaluate
from lm2vec.evaluation.specs import ModelSpec

NEVER = "pkg:never-loaded"
runner = CliRunner()


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    """A registry with one three-pair STS task, `pairs`."""
    (tmp_path / "pairs.tsv").write_text("a red car\ta red car\t5\na red car\tbread\t0\nbread\tfresh bread\t4\n")
    registry = tmp_path / "tasks.toml"
    registry.write_text('[tasks.pairs]\ntype = "sts"\npath = "pairs.tsv"\n')
    return registry


def invoke(*arguments: object):
    return runner.invoke(app, [str(a) for a in arguments])


def error_line(result) -> str:
    """The one `error:` line of a refused command (exit 2, no traceback), its message on one line."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def eval_run(tasks: Path, *options: object):
    return invoke("eval", "run", "--tasks", tasks, "-t", "pairs", "--no-cache", *options)


def report(tasks: Path, *options: object):
    return invoke("report", "--tasks", tasks, "-t", "pairs", "--no-reference", "--no-cache", *options)


# --- one rule for outputs ----------------------------------------------------------------------------------------
def test_an_existing_file_is_replaced_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    assert check_output_file(target) == target
    target.write_text("the user's")
    with pytest.raises(ForeignFolderError, match="out.json exists; .*pass --overwrite"):
        check_output_file(target)
    assert check_output_file(target, overwrite=True) == target
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_file(tmp_path, overwrite=True)
    with pytest.raises(OutputPathError, match="its folder does not exist"):
        check_output_file(tmp_path / "missing" / "out.json")
    assert target.read_text() == "the user's"


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        write_text_atomic(tmp_path / "folder", "text")
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_write_report_keeps_out_of_a_folder_it_does_not_own(tmp_path: Path) -> None:
    results = Results(
        tasks={"t": {"type": "sts", "main_metric": "spearman", "size": 1, "language": "en", "description": ""}}
    )
    results.models["m"] = ModelResult("m", "m=x", "f", {"t": TaskResult("t", "sts", "spearman", 0.5, {}, 0.0, 1)})
    (tmp_path / "progress.png").write_bytes(b"a chart")
    with pytest.raises(ForeignFolderError, match="not empty and was not made by lm2vec"):
        write_report(results, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["progress.png"]
    write_report(results, tmp_path, owned=True)  # a run's report folder, where the run drew progress.png first
    assert Results.load(tmp_path / "results.json").models["m"].results["t"].main_score == 0.5


def test_report_refuses_a_folder_of_user_files_and_rewrites_its_own(tasks: Path, tiny_llama: Path) -> None:
    folder = tasks.parent / "thesis"
    folder.mkdir()
    (folder / "report.md").write_text("my report")
    (folder / "results.json").write_text('{"my": "results"}')
    assert "results.json was not written by lm2vec" in error_line(report(tasks, f"x={NEVER}", "--out", folder))
    (folder / "results.json").unlink()
    assert "is not empty and was not made by lm2vec" in error_line(report(tasks, f"x={NEVER}", "--out", folder))
    assert (folder / "report.md").read_text() == "my report"
    thesis = tasks.parent / "thesis.txt"
    thesis.write_text("my thesis")
    assert "thesis.txt is a file, not a folder" in error_line(report(tasks, f"x={NEVER}", "--out", thesis))
    assert thesis.read_text() == "my thesis"

    ours = tasks.parent / "report"
    for _ in range(2):  # a report folder lm2vec wrote is its own to write again
        result = report(tasks, f"tiny={tiny_llama}", "--out", ours)
        assert result.exit_code == 0, result.output
    assert json.loads((ours / "results.json").read_text())["format"] == "lm2vec-eval-results"
    assert sorted(p.name for p in ours.iterdir()) == ["report.md", "report.png", "results.json"]


def test_eval_run_replaces_an_existing_file_only_with_overwrite(tasks: Path, tiny_llama: Path) -> None:
    out = tasks.parent / "results.json"
    out.write_text("the user's results")
    assert "results.json exists" in error_line(eval_run(tasks, "-m", f"x={NEVER}", "--out", out))
    assert out.read_text() == "the user's results"
    result = eval_run(tasks, "-m", f"tiny={tiny_llama}", "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "pairs" in json.loads(out.read_text())["models"]["tiny"]["results"]


def test_eval_run_into_a_folder_is_refused_and_leaves_nothing(tasks: Path) -> None:
    folder = tasks.parent / "results"
    folder.mkdir()
    before = sorted(p.name for p in tasks.parent.iterdir())
    assert "results is a folder" in error_line(eval_run(tasks, "-m", f"x={NEVER}", "--out", folder))
    assert sorted(p.name for p in tasks.parent.iterdir()) == before and not any(folder.iterdir())


def test_encode_replaces_an_existing_file_only_with_overwrite(tmp_path: Path, tiny_llama: Path) -> None:
    (tmp_path / "texts.txt").write_text("a red car\nmusic\n")
    out = tmp_path / "user.npy"
    out.write_bytes(b"the user's array")
    arguments = ["encode", "-i", tmp_path / "texts.txt", "-o", out]
    assert "user.npy exists" in error_line(invoke(*arguments, "-m", NEVER))
    assert out.read_bytes() == b"the user's array"
    result = invoke(*arguments, "-m", tiny_llama, "--overwrite")
    assert result.exit_code == 0, result.output
    assert np.load(out).shape[0] == 2


def test_mine_replaces_an_existing_file_only_with_overwrite(tmp_path: Path, tiny_llama: Path) -> None:
    (tmp_path / "pairs.jsonl").write_text(
        '{"query": "who plays", "positive": "a man plays guitar"}\n{"query": "a dog", "positive": "the dog ran fast"}\n'
    )
    out = tmp_path / "mined.jsonl"
    out.write_text("the user's records")
    arguments = ["mine", "-p", tmp_path / "pairs.jsonl", "-o", out, "--num-negatives", "1"]
    assert "mined.jsonl exists" in error_line(invoke(*arguments, "-m", NEVER))
    assert out.read_text() == "the user's records"
    result = invoke(*arguments, "-m", tiny_llama, "--overwrite")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["query"] for line in out.read_text().splitlines()] == ["who plays", "a dog"]


# --- silently wrong results ---------------------------------------------------------------------------------------
def test_two_models_of_one_name_are_refused_before_any_work(tasks: Path) -> None:
    message = error_line(eval_run(tasks, "-m", f"x={NEVER}", "-m", "x=pkg:never-either"))
    assert "several models are named x" in message
    with pytest.raises(EvalConfigError, match="several models are named x"):
        evaluate([ModelSpec("x", NEVER), ModelSpec("x", "pkg:never-either")], [], progress=False)


# --- tracebacks instead of `error:` lines ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["eval", "run", "-m", f"x={NEVER},pooling=bogus"], "pooling 'bogus' is not one of mean"),
        (["eval", "run", "-m", f"x={NEVER}", "--limit", "-5"], "--limit must be at least 1, got -5"),
        (["eval", "run", "-m", f"x={NEVER}", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["eval", "run", "-m", "x=pkg:smollm2,adapters={t}/nowhere"], "nowhere is not a LoRA adapter folder"),
        (["eval", "run", "-m", f"x={NEVER}", "--device", "bogus"], "device 'bogus' is not a torch device"),
        (["report", f"x={NEVER}", "--device", "cuda:7"], "device 'cuda:7': this machine has"),
        (["encode", "-m", NEVER, "-i", "{t}/texts.txt", "-o", "{t}/out.npy", "--device", "bogus"], "'bogus'"),
        (["mine", "-m", NEVER, "-p", "{t}/pairs.jsonl", "-o", "{t}/out.jsonl", "--device", "cuda:7"], "cuda:7"),
        (["report", f"x={NEVER}", "--limit", "0"], "--limit must be at least 1, got 0"),
        (["report", f"x={NEVER}", "--batch-size", "-1"], "--batch-size must be at least 1, got -1"),
        (["report", "{t}/run"], "has no stages.json yet"),
        (["encode", "-m", NEVER, "-i", "{t}/texts.txt", "-o", "{t}/out.npy", "--pooling", "bogus"], "'bogus'"),
        (["mine", "-m", NEVER, "-p", "{t}/pairs.jsonl", "-o", "{t}/out.jsonl", "--pooling", "bogus"], "'bogus'"),
        (["mine", "-m", NEVER, "-p", "{t}/pairs.jsonl", "-o", "{t}/out.jsonl", "--batch-size", "-3"], "batch_size"),
        (["mine", "-m", NEVER, "-p", "{t}/pairs.jsonl", "-o", "{t}/out.jsonl", "--query-chunk", "0"], "query_chunk"),
        (["mine", "-m", NEVER, "-p", "{t}/pairs.jsonl", "-o", "{t}/out.jsonl", "--corpus", "{t}"], "is not a file"),
    ],
)
def test_bad_options_are_one_error_line_before_any_model_loads(tmp_path: Path, command, message) -> None:
    (tmp_path / "texts.txt").write_text("a text\n")
    (tmp_path / "pairs.jsonl").write_text('{"query": "q", "positive": "p"}\n')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "pipeline.json").write_text('{"format": "lm2vec-run"}')  # a run before its eval stage
    assert message in error_line(invoke(*(a.format(t=tmp_path) for a in command)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]\n", "pairs.jsonl:1: expected a JSON object"),
        ('{"query": "q", "positive": "p"}\n\n{"query": "q", \n', "pairs.jsonl:3: not valid JSON"),
        ('{"query": "q", "positive": ""}\n', "pairs.jsonl:1: 'positive' must be a non-empty string"),
        ('{"query": " \\t", "positive": "p"}\n', "pairs.jsonl:1: 'query' must be a non-empty string"),
        ('{"query": "q", "positive": 7}\n', "pairs.jsonl:1: 'positive' must be a non-empty string"),
        ('{"query": "q"}\n', "pairs.jsonl:1: missing field(s) positive"),
        ('{"query": "q", "positive": "p", "negatives": [1]}\n', "pairs.jsonl:1: 'negatives' must be"),
        ('{"query": "q", "positive": "p", "instruction": ["x"]}\n', "pairs.jsonl:1: 'instruction' must be"),
        ('{"query": "q", "positive": "p", "score": "high"}\n', "pairs.jsonl:1: 'score' must be a finite number"),
        ("\n\n", "pairs.jsonl: no records"),
    ],
)
def test_bad_pairs_name_file_and_line_before_any_model_loads(tmp_path: Path, content: str, message: str) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(content)
    assert message in error_line(invoke("mine", "-m", NEVER, "-p", pairs, "-o", tmp_path / "out.jsonl"))
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_supervised_pairs(pairs)  # the supervised stage reads its records with the same function


def test_a_bad_mining_corpus_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pairs.jsonl").write_text('{"query": "q", "positive": "p"}\n')
    (tmp_path / "corpus.jsonl").write_text('{"text": "a text"}\nnot json\n')
    command = ["mine", "-m", NEVER, "-p", tmp_path / "pairs.jsonl", "-o", tmp_path / "out.jsonl"]
    assert "corpus.jsonl:2: not valid JSON" in error_line(invoke(*command, "--corpus", tmp_path / "corpus.jsonl"))


def test_report_help_names_the_file_a_run_folder_is_read_from() -> None:
    help_text = " ".join(invoke("report", "--help").output.split())
    assert "stages.json" in help_text and "eval stage" in help_text
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert "its `stages.json`" in readme  # the README names the same file
