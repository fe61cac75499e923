"""`lm2vec train ...`: one command per training stage, each a thin wrapper over its module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

train_app = typer.Typer(no_args_is_help=True, help="Train a stage: mntp, simcse, supervised.")


@train_app.command()
def mntp(
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="TOML recipe (its mntp section).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe option; repeatable.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in output_dir.")] = False,
) -> None:
    """Masked next-token prediction with LoRA (LLM2Vec step 2); options: see lm2vec.training.mntp.MNTPConfig."""
    from lm2vec.recipe import RecipeError
    from lm2vec.training.mntp import run_from_recipe

    try:
        result = run_from_recipe(recipe, overrides or [], resume)
    except (RecipeError, FileExistsError, FileNotFoundError, ValueError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"MNTP done at step {result.global_step}: adapter {result.adapter_dir}")


def _contrastive(mode: str, recipe: Path | None, overrides: list[str] | None, resume: bool) -> None:
    from lm2vec.recipe import RecipeError
    from lm2vec.training.contrastive import run_from_recipe

    try:
        result = run_from_recipe(mode, recipe, overrides or [], resume)
    except (RecipeError, FileExistsError, FileNotFoundError, ValueError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    exported = f", encoder {result.encoder_dir}" if result.encoder_dir else ""
    typer.echo(f"{mode} done at step {result.global_step}: adapter {result.adapter_dir}{exported}")


@train_app.command()
def simcse(
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="TOML recipe (its simcse section).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe option; repeatable.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in output_dir.")] = False,
) -> None:
    """Unsupervised SimCSE with LoRA (LLM2Vec step 3); options: see lm2vec.training.contrastive.SimCSEOptions."""
    _contrastive("simcse", recipe, overrides, resume)


@train_app.command()
def supervised(
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="TOML recipe (its supervised section).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe option; repeatable.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in output_dir.")] = False,
) -> None:
    """Supervised contrastive training with hard negatives; options: lm2vec.training.contrastive.SupervisedOptions."""
    _contrastive("supervised", recipe, overrides, resume)
