"""What a pipeline stage prints: lm2vec's own lines (and one progress bar); third-party logs and warnings (peft's
FutureWarnings, transformers' load reports) go to the stage's log file instead, or to both with `--verbose`.

Also how every command reports a problem the user can fix: `user_errors()` turns any `LM2VecError` (and the
builtin errors a command names) into `error: MESSAGE` on stderr and exit status 2 (`fail`)."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from lm2vec.errors import LM2VecError


def fail(error: BaseException) -> NoReturn:
    """Print `error: MESSAGE` to stderr (red on a terminal) and exit with status 2."""
    import typer

    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2) from None


@contextmanager
def user_errors(*also: type[Exception]) -> Iterator[None]:
    """Every `LM2VecError` raised in the block, and every error of the classes `also` (builtins a command expects,
    such as ValueError from a bad option), becomes `fail(error)`: `error: MESSAGE` and exit status 2."""
    import typer

    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # typer's own exits and usage errors (typer.Exit is also a RuntimeError) pass through untouched
    except (LM2VecError, *also) as error:
        fail(error)


@contextmanager
def stage_log(path: Path | None, verbose: bool = False) -> Iterator[None]:
    """Route Python logging and warnings to `path` (appended; None: nowhere, for the non-main processes of a
    distributed run) while the block runs; the console keeps them only with `verbose`."""
    import transformers.utils.logging as transformers_logging

    handler: logging.Handler = logging.NullHandler()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [handler, logging.StreamHandler()] if verbose else [handler]
    root = logging.getLogger()
    previous_level = root.level
    for each in handlers:
        root.addHandler(each)
    root.setLevel(logging.INFO)
    transformers_logging.disable_default_handler()  # its records reach the root's handlers instead
    transformers_logging.enable_propagation()
    logging.captureWarnings(True)
    bars_were_on = transformers_logging.is_progress_bar_enabled()
    if not verbose:  # loading, saving and dataset bars: the stage's own bar is the one display
        _set_library_bars(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each warning once per place, into the log
            yield
    finally:
        _set_library_bars(bars_were_on)
        logging.captureWarnings(False)
        transformers_logging.enable_default_handler()
        transformers_logging.disable_propagation()
        root.setLevel(previous_level)
        for each in handlers:
            root.removeHandler(each)
        handler.close()


def _set_library_bars(enabled: bool) -> None:
    import datasets
    import transformers.utils.logging as transformers_logging

    if enabled:
        transformers_logging.enable_progress_bar()
        datasets.enable_progress_bars()
    else:
        transformers_logging.disable_progress_bar()
        datasets.disable_progress_bars()


def on_terminal() -> bool:
    """Progress bars only where a person watches: CI logs and files get no carriage-return redraws."""
    return sys.stderr.isatty()


def hide_progress_bars_unless_terminal() -> None:
    """transformers' loading/saving bars and datasets' ones redraw with carriage returns: off in CI logs."""
    if not on_terminal():
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
