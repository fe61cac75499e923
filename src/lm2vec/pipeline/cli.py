"""`lm2vec train STAGE`: one training stage. With `--recipe R` it is `lm2vec run R --only STAGE`: the same
inputs (run.model, RUN/data, the earlier stages' adapters) and folders (RUN/STAGE) as the whole run, and the
stages it reads from run first if they are not done yet; without a recipe the stage's options come from `--set`
alone. A command per registered training stage (lm2vec.stages).

No `from __future__ import annotations`: the commands' annotations use the stage they are made for."""

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from lm2vec.console import user_errors
from lm2vec.stages import OWNED, Stage, TrainingStage, get_stage, registered_stages

_TRAINED = [stage.name for stage in registered_stages() if isinstance(stage, TrainingStage)]
train_app = typer.Typer(no_args_is_help=True, help=f"Train a stage: {', '.join(_TRAINED)}.")

RECIPE_HELP = (
    "TOML recipe: train this stage of its run (`lm2vec run RECIPE --only STAGE`), from the run's inputs: "
    "run.model, RUN/data, the adapters of the stages before it, which run first if they are not done yet."
)
OUT_HELP = (
    "With --recipe the run folder (default run.out, else runs/NAME; the stage writes OUT/STAGE); "
    "without, the stage's output_dir."
)


def _command(stage: Stage):
    def command(
        recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help=RECIPE_HELP)] = None,
        overrides: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                "-s",
                metavar="SECTION.KEY=VALUE",
                help=f"Override an option; repeatable. A bare KEY=VALUE means {stage.name}.KEY=VALUE.",
            ),
        ] = None,
        out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
        redo: Annotated[
            bool, typer.Option("--redo", help="With --recipe: train again, deleting its outputs and later stages'.")
        ] = False,
        resume: Annotated[
            bool, typer.Option(help="Without --recipe: continue from the latest checkpoint (a run always resumes).")
        ] = False,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="Also print third-party logs and warnings (kept in logs/).")
        ] = False,
    ) -> None:
        train(stage.name, recipe, overrides or [], out, redo, resume, verbose)

    return command


def train(
    name: str, recipe: Path | None, overrides: list[str], out: Path | None, redo: bool, resume: bool, verbose: bool
) -> None:
    from lm2vec.pipeline.run import run_recipe
    from lm2vec.recipe import RecipeError, build_config

    stage = get_stage(name)
    overrides = [_qualified(override, name) for override in overrides]
    encoder_dir = None
    with user_errors(OSError, ValueError):
        if recipe is not None:
            only = {"redo": name if redo else None, "only": name, "with_inputs": True}
            pipeline = run_recipe(recipe, overrides, out, echo=typer.echo, verbose=verbose, **only)
            if not pipeline.is_main:
                return
            steps, adapter_dir = pipeline.records[name].summary.get("steps"), pipeline.dir / name / "adapter"
        else:
            if redo:
                raise RecipeError("--redo is for a recipe's run; without --recipe, choose a new --out.")
            if foreign := [o for o in overrides if "=" in o and not o.startswith(f"{name}.")]:
                raise RecipeError(f"without --recipe only {name}.KEY=VALUE applies, not {', '.join(foreign)}.")
            if out is not None:
                overrides.append(f"{name}.output_dir={out}")
            result = stage.train(build_config(stage.options_class(), name, None, overrides), resume)
            steps, adapter_dir, encoder_dir = result.global_step, result.adapter_dir, result.encoder_dir
    exported = f", encoder {encoder_dir}" if encoder_dir else ""
    typer.echo(f"{name} done at step {steps}: adapter {adapter_dir}{exported}")


def _qualified(override: str, section: str) -> str:
    """`key=value` as `section.key=value`: the stage's own section is the default."""
    key, separator, _ = override.partition("=")
    return f"{section}.{override.strip()}" if separator and "." not in key else override


class _StageCommand(TyperCommand):
    """A `train` command whose epilog lists its stage's options, made only when help is shown (the options
    classes import torch)."""

    stage_name = ""

    @property
    def epilog(self) -> str | None:
        from lm2vec.options import options_help

        options_class = get_stage(self.stage_name).options_class()
        if options_class is None:
            return None
        return options_help(options_class, get_stage(self.stage_name).section, OWNED)

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        pass


for _stage in registered_stages():
    if isinstance(_stage, TrainingStage):
        _help = f"{_stage.help} Its options (listed below): the {_stage.section} section of a recipe, or --set."
        _class = type(f"{_stage.name.title()}Command", (_StageCommand,), {"stage_name": _stage.name})
        train_app.command(_stage.name, help=_help, cls=_class)(_command(_stage))
