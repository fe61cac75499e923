"""`lm2vec index build|add|remove`, `lm2vec search` and `lm2vec serve`: thin typer commands over lm2vec.serving."""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from lm2vec.console import user_errors
from lm2vec.options import typer_options
from lm2vec.serving.documents import ChunkingOptions
from lm2vec.serving.index import WriteOptions
from lm2vec.serving.options import ServeOptions

index_app = typer.Typer(no_args_is_help=True, help="Passage indexes of your own documents, for `lm2vec search`.")

Sources = Annotated[list[Path], typer.Argument(help="Folders of .txt/.md, .jsonl, .parquet files, lm2vec corpora.")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")]

# The builtin errors these commands report as `error: ...` besides lm2vec's own (a bad option, a missing file).
_EXPECTED = (FileNotFoundError, ValueError)


@index_app.command("build")
@typer_options(chunking=ChunkingOptions, options=WriteOptions)
def build(
    sources: Sources,
    model: Annotated[str, typer.Option("--model", "-m", help="Encoder folder, .gguf, hub id or pkg: alias.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index folder: new, or an interrupted build to resume.")],
    chunking: ChunkingOptions,
    options: WriteOptions,
    device: Device = None,
) -> None:
    """Split SOURCES into passages, encode them as documents and store them with a FAISS index in OUT."""
    from lm2vec.serving.index import build_index

    with user_errors(*_EXPECTED):
        report = build_index(sources, model, out, chunking, options, device=device, echo=typer.echo)
    typer.echo(report.summary(out))


@index_app.command("add")
@typer_options(options=WriteOptions)
def add(
    index: Annotated[Path, typer.Argument(help="An index folder made by `lm2vec index build`.")],
    sources: Sources,
    options: WriteOptions,
    device: Device = None,
) -> None:
    """Index SOURCES into INDEX: the documents it holds from these paths become what they hold now (changed ones
    replaced, deleted ones removed; no text is encoded twice)."""
    from lm2vec.serving.index import add_to_index

    with user_errors(*_EXPECTED):
        report = add_to_index(index, sources, options, device=device, echo=typer.echo)
    typer.echo(report.summary(index))


@index_app.command("remove")
def remove(
    index: Annotated[Path, typer.Argument(help="An index folder made by `lm2vec index build`.")],
    sources: Annotated[
        list[str], typer.Argument(help="Files or folders (they need not exist any more), or FILE#ID for one record.")
    ],
) -> None:
    """Remove the documents INDEX holds from SOURCES (search reads the previous index until this is done)."""
    from lm2vec.serving.index import remove_from_index

    with user_errors(*_EXPECTED):
        report = remove_from_index(index, sources, echo=typer.echo)
    typer.echo(f"{index}: {report.removed:,} passages removed, {report.passages:,} left ({report.index_kind} index)")


def search(
    index: Annotated[Path, typer.Argument(help="An index folder made by `lm2vec index build`.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many passages.")] = 5,
    instruction: Annotated[
        str | None, typer.Option(help="Query instruction (default: the one the model was trained with; '' none).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
    device: Device = None,
) -> None:
    """The passages of INDEX closest to QUERY, best first, with scores and sources."""
    from lm2vec.serving.index import SearchIndex, load_index_model

    if k < 1:
        raise typer.BadParameter(f"must be at least 1, got {k}", param_hint="--k")
    with user_errors(*_EXPECTED):
        store = SearchIndex(index)
        encoder = load_index_model(store.model, device)
        instruction = encoder.config.query_instruction if instruction is None else instruction
        vector = encoder.encode([query], prompt=instruction or None, normalize=True)
        hits = store.search(vector, k)[0]
    if as_json:
        typer.echo(json.dumps([asdict(hit) for hit in hits], ensure_ascii=False, indent=2))
        return
    for hit in hits:
        title = f" ({hit.title})" if hit.title else ""
        typer.echo(f"{hit.rank}. {hit.score:.4f}  {hit.source}{title}")
        typer.echo(f"   {_excerpt(hit.text)}")
    if not hits:
        typer.echo("no passages")


def _excerpt(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


@typer_options(options=ServeOptions)
def serve(
    model: Annotated[str, typer.Argument(help="Encoder folder, .gguf, hub id or pkg: alias.")],
    options: ServeOptions,
    index: Annotated[Path | None, typer.Option(help="Serve /v1/search over this index too.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes the service to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port (0: a free one).")] = 8000,
    name: Annotated[str | None, typer.Option(help="Model id clients send (default: the folder's name).")] = None,
    device: Device = None,
) -> None:
    """An OpenAI-compatible embedding service (/v1/embeddings), with /v1/search when an index is given."""
    # OpenMP threads that spin between operators take the CPU the event loop and the clients' connections need
    # (benchmarks/README.md, serving); read by libgomp when torch loads it, so set before the first torch import.
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from lm2vec.serving.app import bind, create_app, load_service

    with user_errors(*_EXPECTED):
        listener = bind(host, port)
    with listener:
        with user_errors(*_EXPECTED):
            service = load_service(model, index, options, name=name, device=device)
        searching = f", index {index} ({len(service.index):,} passages)" if service.index is not None else ""
        auth = "on" if options.api_key else "off"
        address = f"[{host}]" if ":" in host else host
        typer.echo(
            f"serving {service.name} on http://{address}:{listener.getsockname()[1]}/v1{searching}; API key {auth}"
        )
        # uvicorn raises the SIGTERM it shut down for again once it has stopped: that ends the command with exit 0.
        signal.signal(signal.SIGTERM, _exit_normally)
        # Nothing goes to stdout (no access log): nobody may be reading it any more, and a write to a closed pipe
        # must not stop a shutdown. Requests in flight at a SIGTERM get shutdown_timeout_s to finish.
        config = uvicorn.Config(
            create_app(service),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=options.shutdown_timeout_s,
        )
        uvicorn.Server(config).run(sockets=[listener])


def _exit_normally(_signal: int, _frame: object) -> None:
    raise SystemExit(0)


def register(app: typer.Typer) -> None:
    """Add `index`, `search` and `serve` to the lm2vec command line."""
    app.add_typer(index_app, name="index")
    app.command("search")(search)
    app.command("serve")(serve)
