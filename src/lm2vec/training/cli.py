"""`lm2vec train ...`: one command per training stage, each a thin wrapper over its module."""

from __future__ import annotations

import typer

train_app = typer.Typer(no_args_is_help=True, help="Train a stage: mntp, simcse, supervised.")
