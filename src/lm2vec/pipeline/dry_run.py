"""`lm2vec run RECIPE --dry-run`: a GPU recipe end to end on this machine's CPU in about a minute, so that a dtype
or option bug shows up here and not on a rented GPU (on a machine with a GPU it runs there, and device placement is
checked too).

Replaced, and printed line by line:
- the model, by a shrunk copy of its architecture (`lm2vec.modeling.shrink`: the same config class and settings,
  2 layers, hidden size 64, random weights) in RUN-dry-run/shrunk-model; its config comes from lm2vec's
  model_shapes.json, a local folder or `--config-from`, never from the hub. The tokenizer is the model's own where
  it is at hand (a local folder, a `pkg:` model), else a byte-level stand-in with its family's special tokens;
- the data: `[data] inputs` by the packaged Wikipedia sample of the recipe's language (English for the others),
  a few articles (a recipe without `[data]` gets one, which its stages read in place of their own data);
  supervised data other than the data stage's pairs (`${data}`) by STS-B's train split;
- the amounts: 2 steps a training stage with a checkpoint and an evaluation at step 2, batches of at most 4 (and
  GradCache mini-batches of at most 4, so they still split a batch), a handful of evaluation examples a task.
Everything else is the recipe's, above all what differs on a GPU: bf16 weights and autocast (`gpu_dtype_on_cpu`),
the attention implementation, gradient checkpointing, and LoRA, pooling, instruction, GradCache and export options.
The dry run writes only into its own folder (the run folder's name + "-dry-run", or `--out`), never into the real
run's, and re-runs like a run (finished stages are skipped; `--redo data` starts over).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm2vec.artifacts import RUN_RECORD, ForeignFolderError, atomic_folder, read_record, write_json_atomic
from lm2vec.errors import LM2VecError
from lm2vec.pipeline.plan import RunOptions, plan_run, run_folder
from lm2vec.pipeline.run import RUN_FORMAT, Pipeline
from lm2vec.recipe import build_config, load_recipe
from lm2vec.stages import Stage, TrainingStage, registered_stages
from lm2vec.stages.supervised import RUN_DATA

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DRY_RUN_SUFFIX = "-dry-run"
SHRUNK_MODEL = "shrunk-model"
SHRUNK_RECORD = "lm2vec_shrunk.json"  # marks the shrunk model folder as lm2vec's, so a re-run may replace it
SHRUNK_FORMAT = "lm2vec-shrunk-model"
SAMPLES = {
    "en": "${gensim_data}/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    "bg": "${gensim_data}/bgwiki-latest-pages-articles-shortened.xml.bz2",
}
STS_TRAIN = "${stsb}/sts-train.csv"
ARTICLES = 3
STEPS = 2
BATCH = 4
EVAL_BLOCKS = 2  # MNTP's held-out blocks
EVAL_EXAMPLES = 10  # two a class for the k-fold classification tasks (5 classes)
# The training stages whose own data the data stage's sample replaces (their default when `data` is unset).
READ_RUN_DATA = ("mntp", "simcse")


class DryRunError(LM2VecError, ValueError):
    """A dry run that cannot go as asked; the message says why."""


def dry_run_recipe(
    recipe: str | Path,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    config_from: str | None = None,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
    **run_options: Any,
) -> Pipeline:
    """Run `recipe` shrunk (the module docstring) in its dry-run folder; `run_options` are `Pipeline.run`'s
    (redo, until, only, gpu_memory). Every problem is found before the shrunk model is written."""
    from lm2vec.modeling.loading import gpu_dtype_on_cpu
    from lm2vec.modeling.shrink import SHRUNK_SIZES, save_shrunk_model, shrunk_config
    from lm2vec.pipeline.estimate import describe_source, model_config

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DryRunError("--dry-run runs in one process, not under torchrun or accelerate launch.")
    recipe_path = Path(recipe)
    original = load_recipe(recipe_path)
    run = build_config(RunOptions, "run", original, [o for o in overrides if o.strip().startswith("run.")])
    real_dir = run_folder(recipe_path, run)
    dry_dir = Path(out) if out else real_dir.with_name(real_dir.name + DRY_RUN_SUFFIX)
    if dry_dir.resolve() == real_dir.resolve():
        raise DryRunError(f"{dry_dir} is the recipe's run folder; a dry run writes into a folder of its own.")
    config = model_config(run.model, config_from)
    tokenizer, tokenizer_note = stand_in_tokenizer(run.model, config.model_type)
    shrunk = shrunk_config(config, tokenizer)
    model_dir = dry_dir / SHRUNK_MODEL
    shrunk_recipe, replaced = shrink_recipe(original, model_dir)
    # The model named on the command line is the one shrunk; the run trains the shrunk copy.
    overrides = [o for o in overrides if o.partition("=")[0].strip() != "run.model"]
    plan = plan_run(recipe_path, overrides, dry_dir, recipe=shrunk_recipe)
    check_dry_run_folder(dry_dir, model_dir)
    pipeline = Pipeline(plan, echo, verbose)
    ours = read_record(model_dir, SHRUNK_RECORD, SHRUNK_FORMAT) is not None
    with atomic_folder(model_dir, replaceable=ours) as temporary:
        save_shrunk_model(shrunk, tokenizer, temporary)
        record = {"format": SHRUNK_FORMAT, "source": run.model, "tokenizer": tokenizer_note}
        write_json_atomic(temporary / SHRUNK_RECORD, record)

    source = describe_source(run.model, config_from) or f"{run.model}'s config"
    sizes = ", ".join(f"{key} {value}" for key, value in SHRUNK_SIZES.items())
    echo(f"dry run of {recipe_path} in {dry_dir} (nothing is written to {real_dir}); replaced:")
    echo(
        f"  run.model: {run.model} -> {model_dir}: {type(shrunk).__name__} ({source}) with {sizes}, random "
        f"weights; tokenizer: {tokenizer_note}"
    )
    for line in replaced:
        echo(f"  {line}")
    echo(
        "  kept as the recipe says: bf16 weights and autocast as on a GPU, the attention implementation, gradient "
        "checkpointing, LoRA, pooling, instructions, GradCache and export options"
    )
    with gpu_dtype_on_cpu():
        pipeline.run(**run_options)
    return pipeline


def stand_in_tokenizer(source: str, model_type: str) -> tuple[PreTrainedTokenizerBase, str]:
    """The model's own tokenizer where it is at hand (a local folder, a `pkg:` model), else a byte-level one with
    its family's special tokens; and a note saying which."""
    from transformers import AutoTokenizer

    from lm2vec.modeling.shrink import byte_tokenizer, family_tokens
    from lm2vec.modeling.sources import packaged_model, resolve_source

    if packaged_model(source) or Path(source).expanduser().is_dir():
        return AutoTokenizer.from_pretrained(resolve_source(source)), f"{source}'s own"
    specials = family_tokens(model_type)
    return byte_tokenizer(specials), (
        f"a byte-level stand-in with {specials.family}'s special tokens ({source}'s own is not packaged)"
    )


def shrink_recipe(recipe: dict[str, Any], model_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """A copy of `recipe` with the dry run's model, data and amounts, and a line per value replaced."""
    shrunk = copy.deepcopy(recipe)
    replaced: list[str] = []

    def put(section: str, key: str, value: Any) -> None:
        values = shrunk.setdefault(section, {})
        before = values.get(key, "(unset)")
        if value is None:
            values.pop(key, None)
            value = "(unset)"
        else:
            values[key] = value
        if before != value:
            replaced.append(f"{section}.{key}: {before} -> {value}")

    shrunk.setdefault("run", {})["model"] = str(model_dir)
    data = shrunk.get("data", {})
    lang = data.get("lang") if data.get("lang") in SAMPLES else "en"  # the language of the sample read
    put("data", "inputs", [SAMPLES[lang]])
    put("data", "lang", lang)
    put("data", "max_articles", min(data.get("max_articles") or ARTICLES, ARTICLES))
    put("data", "workers", 1)
    # What concerns the real inputs only: the Bulgarian sample's one article is the recipe's held-out one.
    for key in ("pins", "holdout_titles", "holdout_file"):
        put("data", key, None)
    for stage in registered_stages():
        if not isinstance(stage, TrainingStage) or stage.section not in shrunk:
            continue
        section, values = stage.section, shrunk[stage.section]
        put(section, "model", None)
        put(section, "max_steps", STEPS)
        put(section, "per_device_batch_size", min(values.get("per_device_batch_size", BATCH), BATCH))
        put(section, "save_steps", STEPS)
        put(section, "logging_steps", 1)
        if values.get("eval_steps"):
            put(section, "eval_steps", STEPS)
        if "max_eval_blocks" in _option_names(stage):
            put(section, "max_eval_blocks", EVAL_BLOCKS)
        if values.get("mini_batch_size"):
            put(section, "mini_batch_size", min(values["mini_batch_size"], BATCH))
        if stage.name in READ_RUN_DATA:
            put(section, "data", None)
            put(section, "validation_data", None)
        elif "data" in values:
            paths = [values["data"]] if isinstance(values["data"], str) else values["data"]
            sampled = list(dict.fromkeys(path if path.startswith(RUN_DATA) else STS_TRAIN for path in paths))
            put(section, "data", sampled[0] if isinstance(values["data"], str) else sampled)
    eval_section = shrunk.get("eval", {})
    put("eval", "limit", min(eval_section.get("limit") or EVAL_EXAMPLES, EVAL_EXAMPLES))
    return shrunk, replaced


def _option_names(stage: Stage) -> set[str]:
    options_class = stage.options_class()
    return {field.name for field in dataclasses.fields(options_class)} if options_class else set()


def check_dry_run_folder(folder: Path, model_dir: Path) -> None:
    """Refuse a folder that holds a run other than this dry run (a real run's, whose stages it would mix with)."""
    saved = read_record(folder, RUN_RECORD, RUN_FORMAT)
    if saved is not None and saved.get("run", {}).get("model") != str(model_dir):
        raise ForeignFolderError(f"{folder} holds a run that is not this dry run; choose another --out.")


__all__ = ["DryRunError", "dry_run_recipe", "shrink_recipe", "stand_in_tokenizer"]
