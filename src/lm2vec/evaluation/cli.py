"""`lm2vec eval run|list|fetch-data` and `lm2vec report`."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from lm2vec.console import user_errors

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate encoders on offline MTEB-style tasks.")

TasksFile = Annotated[list[Path] | None, typer.Option("--tasks", help="A task registry TOML (repeatable).")]
Suite = Annotated[list[str] | None, typer.Option("--suite", "-s", help="english, bulgarian, word, or one of --tasks'.")]
TaskName = Annotated[list[str] | None, typer.Option("--task", "-t", help="A single task by name (repeatable).")]
Limit = Annotated[
    int | None, typer.Option(help="Use at most this many examples per task (quick runs; default: every example).")
]
BatchSize = Annotated[int, typer.Option(help="Texts per forward pass.")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if available).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the on-disk embedding cache.")]
Overwrite = Annotated[bool, typer.Option(help="Replace the output file if it exists (refused otherwise).")]
MODEL_HELP = (
    "name=source[,adapters=a+b][,adapter_weights=1+0.5][,pooling=..][,causal][,max_length=N][,template=echo]"
    "[,backend=onnx][,onnx_file=onnx/model.onnx]; source: folder, .gguf, pkg:smollm2, ref:all-minilm-l6-v2 "
    "(all options: lm2vec.evaluation.specs)"
)


def _tasks(tasks_files, suites, names, limit):
    from lm2vec.evaluation.registry import Registry

    registry = Registry.from_files(tasks_files or [])
    if not suites and not names:
        suites = ["english"]
    return [registry.load(name, limit) for name in registry.select(suites or [], names or [])]


def _check(specs, limit: int | None, batch_size: int, device: str | None) -> None:
    """What would fail once a model is loaded, refused before: counts under 1, a device this machine lacks, a
    name given twice, a missing source or adapter."""
    from lm2vec.evaluation.errors import EvalConfigError
    from lm2vec.evaluation.specs import check_specs
    from lm2vec.modeling.loading import check_device

    for option, value in (("--limit", limit), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise EvalConfigError(f"{option} must be at least 1, got {value}")
    check_device(device)
    check_specs(specs)


def _echo_results(results) -> None:
    """The scores' table, then whether the best average's lead over each other model is beyond noise."""
    from lm2vec.evaluation.report import markdown_table, noise_comparison

    typer.echo(markdown_table(results))
    if comparison := noise_comparison(results):
        typer.echo("\n" + comparison)


def _run(specs, tasks_files, suites, names, limit, batch_size, device, no_cache):
    from lm2vec.evaluation.runner import evaluate

    tasks = _tasks(tasks_files, suites, names, limit)
    return evaluate(specs, tasks, cache_root=None if no_cache else "default", batch_size=batch_size, device=device)


@eval_app.command("run")
def run_command(
    model: Annotated[list[str], typer.Option("--model", "-m", help=MODEL_HELP)],
    tasks: TasksFile = None,
    suite: Suite = None,
    task: TaskName = None,
    limit: Limit = None,
    out: Annotated[Path, typer.Option(help="Results JSON (replaced only if --overwrite).")] = Path("eval-results.json"),
    batch_size: BatchSize = 32,
    device: Device = None,
    no_cache: NoCache = False,
    overwrite: Overwrite = False,
) -> None:
    """Evaluate models on a suite (default: english) and write the results as JSON and a table."""
    from lm2vec.artifacts import check_output_file
    from lm2vec.evaluation.specs import ModelSpec

    with user_errors(OSError):
        specs = [ModelSpec.parse(m) for m in model]
        check_output_file(out, overwrite)
        _check(specs, limit, batch_size, device)
        results = _run(specs, tasks, suite, task, limit, batch_size, device, no_cache)
        results.save(out)
    _echo_results(results)
    typer.echo(f"wrote {out}")


@eval_app.command("list")
def list_command(tasks: TasksFile = None) -> None:
    """The suites and tasks of the built-in registry (and of --tasks files)."""
    from lm2vec.evaluation.registry import Registry

    with user_errors():
        registry = Registry.from_files(tasks or [])
    for suite, names in registry.suites.items():
        typer.echo(f"suite {suite}: {', '.join(names)}")
    for name, definition in registry.tasks.items():
        typer.echo(f"  {name} [{definition['type']}] {definition.get('description', definition['path'])}")


@eval_app.command("fetch-data")
def fetch_data(lang: Annotated[str, typer.Option(help="LibreOffice language pack.")] = "bg") -> None:
    """Download Debian's libreoffice-l10n-LANG with apt-get and unpack its .mo catalogues into the lm2vec cache."""
    from lm2vec.data.packaged import libreoffice_messages

    with user_errors(OSError):
        folder = libreoffice_messages(lang)
    typer.echo(f"LibreOffice {lang} catalogues: {folder}")


def report(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run folders of `lm2vec run` (the models in their stages.json, which the run's eval stage writes), "
            "TOML files of models, or " + MODEL_HELP
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(help="Folder for report.md, report.png and results.json: new, empty or an earlier report's."),
    ] = Path("eval-report"),
    tasks: TasksFile = None,
    suite: Suite = None,
    task: TaskName = None,
    limit: Limit = None,
    baselines: Annotated[
        str | None,
        typer.Option(
            help="Also add the zero-training baselines of this source: causal last-token, mean, echo and "
            "PromptEOL, and bidirectional untrained."
        ),
    ] = None,
    reference: Annotated[bool, typer.Option(help="Add the all-MiniLM-L6-v2 reference encoder.")] = True,
    title: Annotated[str, typer.Option(help="Report title.")] = "lm2vec evaluation",
    batch_size: BatchSize = 32,
    device: Device = None,
    no_cache: NoCache = False,
) -> None:
    """Compare models stage by stage on the same tasks: a markdown table and a PNG bar chart."""
    from lm2vec.evaluation.report import (
        baseline_specs,
        check_report_folder,
        resolve_models,
        write_report,
    )

    with user_errors(OSError):
        specs = (baseline_specs(baselines) if baselines else []) + resolve_models(models or [], reference=reference)
        check_report_folder(out)
        _check(specs, limit, batch_size, device)
        started = time.perf_counter()
        results = _run(specs, tasks, suite, task, limit, batch_size, device, no_cache)
    invoked = Path(sys.argv[0]).name == "lm2vec" and sys.argv[1:2] == ["report"]
    command = "lm2vec report " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if invoked else None
    with user_errors(OSError):
        paths = write_report(results, out, title, command)
    _echo_results(results)
    typer.echo(f"wrote {paths['markdown']} and {paths['chart']} in {time.perf_counter() - started:.0f} s")
