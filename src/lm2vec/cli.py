"""The `lm2vec` command line: a thin typer layer over the library.

Every command reports a problem the user can fix as `error: MESSAGE` and exit status 2: each runs its work under
`user_errors()` (lm2vec.console), which catches `LM2VecError`, the base of all of lm2vec's own errors, and the
few builtin errors the command expects; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from lm2vec.artifacts import atomic_file, check_output_file
from lm2vec.console import user_errors
from lm2vec.data.cli import data_app
from lm2vec.evaluation.cli import Overwrite, eval_app, report
from lm2vec.modeling.int8_tolerance import INT8_MIN_COSINE, INT8_MIN_COSINE_HELP, check_int8_min_cosine
from lm2vec.modeling.pruning import PRUNE_HELP, check_prune_fraction
from lm2vec.options import typer_options
from lm2vec.pipeline.cli import train_app
from lm2vec.serving.cli import register as register_serving
from lm2vec.training.mining import MiningOptions

# Plain help text: rich markup would eat the recipe sections (`[supervised]`) and types (`list[str]`) in it.
app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Turn a decoder-only LLM into a text encoder (LLM2Vec)."
)
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.command("report")(report)
register_serving(app)

SOURCE_HELP = "Model folder, hub id, .gguf file, or pkg:smollm2 / pkg:gemma3-270m."
Causal = Annotated[bool, typer.Option("--causal", help="Keep causal attention (the baseline).")]
Pooling = Annotated[str | None, typer.Option(help="mean, weighted_mean, last_token or first_token.")]
GpuMemory = Annotated[
    str | None, typer.Option(help="Memory of each GPU (80GB = 80e9 bytes, 80GiB); default: the CUDA device's own.")
]
ConfigFrom = Annotated[
    str | None, typer.Option(help="The model's config.json (or a folder with it), for a model not available here.")
]
Backend = Annotated[str, typer.Option(help="torch, or onnx: a folder's ONNX file from `convert --onnx` (CPU).")]
OnnxFile = Annotated[str, typer.Option(help="The ONNX file the onnx backend runs, in the model folder.")]


def _check_load_options(pooling: str | None, device: str | None) -> None:
    """A pooling mode or device that does not exist, refused before the model loads (raises ValueError)."""
    from lm2vec.modeling.loading import check_device
    from lm2vec.modeling.pooling import check_pooling_mode

    if pooling is not None:
        check_pooling_mode(pooling)
    check_device(device)


def _load(
    model: str,
    pooling: str | None,
    causal: bool,
    max_length: int | None = None,
    device: str | None = None,
    prune_layers: float = 0.0,
    **backend: str,
):
    from lm2vec import LM2Vec

    with user_errors(FileNotFoundError):
        return LM2Vec.from_pretrained(
            model,
            pooling=pooling,
            bidirectional=not causal,
            max_length=max_length,
            device=device,
            prune_layers=prune_layers,
            **backend,
        )


class _RunCommand(TyperCommand):
    """`lm2vec run`, whose epilog lists the [run] and [eval] options and names the stage sections; made only when
    help is shown (the stages' options classes import torch)."""

    @property
    def epilog(self) -> str | None:
        return run_epilog()

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        pass


def run_epilog() -> str:
    """The [run] and [eval] options, then a line per stage section saying where its options are listed (the
    options themselves for the sections no other command has: [merge], [export])."""
    from lm2vec.options import options_help
    from lm2vec.pipeline.plan import RunOptions
    from lm2vec.stages import TrainingStage, registered_stages
    from lm2vec.stages.eval import EvalOptions

    where = {
        "data": "`inputs` (dumps, .txt/.jsonl files, hf:NAME), `pins` (a table PACKAGE = VERSION that holds "
        "the Debian packages ${debian_bg} and ${fortunes_bg} are built from to those versions, as the "
        "manifest.json of an earlier run lists them) and the options of `lm2vec data wiki --help` "
        "and `lm2vec data text --help`"
    }
    sections = []
    for stage in registered_stages():
        if isinstance(stage, TrainingStage):
            where[stage.section] = f"`lm2vec train {stage.name} --help`"
        if stage.section and stage.section in where:
            sections.append(f"[{stage.section}]: {stage.help} Its options: {where[stage.section]}.")
        elif stage.section and stage.section != "eval" and stage.options_class() is not None:
            sections.append(f"[{stage.section}]: {stage.help}\n\n{options_help(stage.options_class(), stage.section)}")
    stages = "Stage sections, each also set with --set SECTION.KEY=VALUE:\n\n" + "\n\n".join(sections)
    return "\n\n".join([options_help(RunOptions, "run"), options_help(EvalOptions, "eval"), stages])


@app.command(cls=_RunCommand)
def run(
    recipe: Annotated[Path, typer.Argument(help="TOML recipe (see recipes/ and lm2vec.pipeline).")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: run.out, else runs/NAME).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE", help="Override; repeatable.")
    ] = None,
    redo: Annotated[str | None, typer.Option(help="Run this stage and every later one again.")] = None,
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
    only: Annotated[
        str | None, typer.Option(help="Run just this stage; the stages it reads from must be done in the run folder.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also print third-party logs and warnings (kept in logs/).")
    ] = False,
    gpu_memory: GpuMemory = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Run the recipe end to end in a minute, in RUN-dry-run: a shrunk random copy of its model's "
            "architecture, a few articles of the packaged Wikipedia sample, 2 steps a stage, the rest (bf16 as on "
            "a GPU, attention, checkpointing, LoRA, export) as the recipe says.",
        ),
    ] = False,
    config_from: ConfigFrom = None,
) -> None:
    """Run a whole recipe: data, mntp, simcse, supervised, export, eval, report; re-running resumes.

    `lm2vec train STAGE --recipe RECIPE` is `lm2vec run RECIPE --only STAGE`. A training stage whose memory
    estimate (`lm2vec plan`) exceeds the GPU's memory, or on a CPU the machine's RAM, is refused before it starts.
    `--dry-run` checks a GPU recipe's code path on this machine first (lm2vec.pipeline.dry_run)."""
    from lm2vec.pipeline.dry_run import DryRunError, dry_run_recipe
    from lm2vec.pipeline.run import run_recipe

    options = {"redo": redo, "until": until, "only": only, "gpu_memory": gpu_memory}
    with user_errors(OSError):
        if dry_run:
            dry_run_recipe(recipe, overrides or [], out, config_from, echo=typer.echo, verbose=verbose, **options)
        elif config_from:
            raise DryRunError("--config-from goes with --dry-run (and `lm2vec plan`): the model a dry run shrinks.")
        else:
            run_recipe(recipe, overrides or [], out, echo=typer.echo, verbose=verbose, **options)


@app.command()
def plan(
    recipe: Annotated[Path, typer.Argument(help="TOML recipe (see recipes/).")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE", help="Override; repeatable.")
    ] = None,
    gpus: Annotated[
        int | None, typer.Option(help="GPUs to train on (0: this CPU); default: this machine's, 1 with --gpu-memory.")
    ] = None,
    gpu_memory: GpuMemory = None,
    mfu: Annotated[float, typer.Option(help="Model FLOPs utilisation the hours assume.")] = 0.4,
    device_flops: Annotated[
        str | None,
        typer.Option(help="Peak FLOP/s of one device (989e12, 312T); default: an H100's bf16, or this CPU's measured."),
    ] = None,
    config_from: ConfigFrom = None,
) -> None:
    """Memory per device and hours of each training stage of RECIPE, before any work (no weights are loaded).

    The formulas are in lm2vec.pipeline.estimate's docstring."""
    from lm2vec.pipeline.estimate import describe_source, estimate_plan, plan_table, target_for
    from lm2vec.pipeline.plan import plan_run

    with user_errors(OSError):
        checked = plan_run(recipe, overrides or [], check_inputs=False)  # the inputs may be on another machine
        target = target_for(gpus, gpu_memory, mfu, device_flops)
        estimates = estimate_plan(checked, target, config_from=config_from)
    source = describe_source(checked.run.model, config_from)
    typer.echo(f"{recipe}: {checked.run.model}{f' ({source})' if source else ''}; {target.describe()}\n")
    typer.echo(plan_table(estimates, target))


@app.command()
def convert(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    out: Annotated[Path, typer.Argument(help="Folder to write the encoder to.")],
    pooling: Pooling = None,
    max_length: Annotated[int | None, typer.Option(help="Longest input in tokens.")] = None,
    causal: Causal = False,
    prune_layers: Annotated[float, typer.Option(help=PRUNE_HELP)] = 0.0,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also write onnx/model.onnx and its int8 onnx/model_qint8_avx2.onnx.")
    ] = False,
    int8_min_cosine: Annotated[float, typer.Option(help=f"With --onnx: {INT8_MIN_COSINE_HELP}.")] = INT8_MIN_COSINE,
    gguf: Annotated[
        bool, typer.Option("--gguf", help="Also write gguf/model-TYPE.gguf for llama.cpp and Ollama (bidirectional).")
    ] = False,
    gguf_types: Annotated[
        list[str] | None, typer.Option("--gguf-type", help="The GGUF's weights: f16 (default) or q8_0; repeatable.")
    ] = None,
    llama_cpp: Annotated[
        Path | None,
        typer.Option(envvar="LLAMA_CPP_DIR", help="A llama.cpp checkout: its convert_hf_to_gguf.py makes the GGUF."),
    ] = None,
) -> None:
    """Write SOURCE as an encoder folder that LM2Vec, transformers and sentence-transformers load."""
    from lm2vec.modeling.export import export_encoder
    from lm2vec.modeling.gguf import gguf_file_name, write_gguf
    from lm2vec.modeling.onnx import ONNX_FILE, QUANTIZED_FILE, require_onnx

    with user_errors():
        check_prune_fraction(prune_layers)
        check_int8_min_cosine(int8_min_cosine)
        if onnx:
            require_onnx()
        gguf_types = gguf_types or (["f16"] if gguf else [])  # a --gguf-type implies --gguf
        converter = _check_gguf_options(source, pooling, gguf_types, llama_cpp) if gguf_types else None
    # ONNX graphs are for CPUs, exported in fp32: load there, not in a GPU's bf16.
    device = "cpu" if onnx else None
    encoder = _load(source, pooling, causal, max_length, device=device, prune_layers=prune_layers)
    described = f"{encoder.model.config.model_type}, pooling={encoder.config.pooling}"
    with user_errors():
        export_encoder(encoder, out, onnx=onnx, int8_min_cosine=int8_min_cosine)
        del encoder  # llama.cpp's converter loads the weights again
        for gguf_type in gguf_types:
            write_gguf(out, converter, gguf_type)
    files = f", {ONNX_FILE}, {QUANTIZED_FILE}" if onnx else ""
    files += "".join(f", {gguf_file_name(gguf_type)}" for gguf_type in gguf_types)
    typer.echo(f"wrote {out} ({described}{files})")


def _check_gguf_options(source: str, pooling: str | None, gguf_types: list[str], llama_cpp: Path | None) -> Path:
    """llama.cpp's converter, once `convert --gguf`'s options and SOURCE's architecture are known to work; checked
    before the model loads (raises GGUFExportError)."""
    from lm2vec.modeling.gguf import check_gguf_architecture, check_gguf_pooling, check_gguf_type, find_converter
    from lm2vec.modeling.sources import check_source
    from lm2vec.pipeline.estimate import model_config

    for gguf_type in gguf_types:
        check_gguf_type(gguf_type)
    converter = find_converter(llama_cpp)
    if pooling is not None:
        check_gguf_pooling(pooling)
    check_source(source)  # a missing source is reported as such, not as a config problem
    check_gguf_architecture(model_config(source).model_type)
    return converter


@app.command()
def encode(
    model: Annotated[str, typer.Option("--model", "-m", help=SOURCE_HELP)],
    input: Annotated[Path, typer.Option("--input", "-i", help=".txt (a text per line) or .jsonl ('text' field).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the embeddings (.npy).")],
    batch_size: Annotated[int, typer.Option(help="Inputs per forward pass.")] = 32,
    pooling: Pooling = None,
    instruction: Annotated[str | None, typer.Option(help="One instruction for every input (not pooled).")] = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embeddings.")] = False,
    causal: Causal = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    overwrite: Overwrite = False,
    backend: Backend = "torch",
    onnx_file: OnnxFile = "onnx/model_qint8_avx2.onnx",
) -> None:
    """Embed every text of INPUT and save an (n, dim) float32 array; row i is line (or record) i of INPUT."""
    import numpy as np

    from lm2vec.data.readers import load_texts
    from lm2vec.modeling.onnx import check_backend

    with user_errors(OSError, ValueError):
        check_output_file(output, overwrite)
        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}.")
        _check_load_options(pooling, device)
        check_backend(model, backend, onnx_file)
        if not input.is_file():
            raise ValueError(f"--input {input} does not exist or is not a file.")
        texts = load_texts(input, "lines")
    encoder = _load(model, pooling, causal, device=device, backend=backend, onnx_file=onnx_file)
    with user_errors(ValueError):
        embeddings = encoder.encode(
            texts, batch_size=batch_size, normalize=normalize, prompt=instruction, show_progress_bar=True
        )
    with user_errors(OSError), atomic_file(output) as temporary, temporary.open("wb") as file:
        np.save(file, embeddings.astype(np.float32))  # to a file object: np.save would add .npy to a name
    typer.echo(f"wrote {output}: {embeddings.shape[0]} x {embeddings.shape[1]}")


@app.command()
@typer_options(options=MiningOptions)
def mine(
    model: Annotated[str, typer.Option("--model", "-m", help=SOURCE_HELP)],
    pairs: Annotated[Path, typer.Option("--pairs", "-p", help="Supervised JSONL: query, positive (, instruction).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The JSONL to write, with `negatives` added.")],
    options: MiningOptions,
    corpus: Annotated[
        Path | None, typer.Option(help=".txt (a text per line) or .jsonl ('text'); default: the positives.")
    ] = None,
    pooling: Pooling = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Add hard negatives to query/positive pairs with the encoder MODEL, for `[supervised] data`."""
    from lm2vec.training.mining import read_mining_inputs, write_mined

    with user_errors(OSError, ValueError):
        _check_load_options(pooling, device)
        records, texts = read_mining_inputs(pairs, output, corpus, overwrite)
    encoder = _load(model, pooling, False, device=device)
    with user_errors(OSError, ValueError):
        summary = write_mined(encoder, records, texts, output, options)
    typer.echo(
        f"wrote {output}: {summary['negatives']} negatives for {summary['records']} pairs from "
        f"{summary['corpus']} corpus texts ({summary['records_short']} pairs got fewer than {options.num_negatives})"
    )


@app.command()
def info(model: Annotated[str, typer.Argument(help=SOURCE_HELP)]) -> None:
    """Architecture, parameter count, pooling and the bidirectional probe's verdict."""
    from lm2vec.modeling.bidirectional import probe_attention

    encoder = _load(model, None, causal=False)
    config = encoder.model.config
    details = {
        "architecture": config.model_type,
        "class": type(encoder.model).__name__,
        "parameters": sum(p.numel() for p in encoder.model.parameters()),
        "hidden_size": config.hidden_size,
        "layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
        "attn_implementation": config._attn_implementation,
        "dtype": str(encoder.model.dtype).removeprefix("torch."),
        "pooling": encoder.config.pooling,
        "max_length": encoder.config.max_length,
        "bidirectional_probe": "bidirectional" if probe_attention(encoder.model, config.vocab_size) else "causal",
    }
    typer.echo(json.dumps(details, indent=2))
