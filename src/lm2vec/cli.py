"""The `lm2vec` command line: a thin typer layer over the library."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Turn a decoder-only LLM into a text encoder (LLM2Vec).")
