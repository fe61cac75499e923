"""`lm2vec run RECIPE.toml`: from raw text to an evaluated encoder in one command.

    lm2vec run recipes/smollm2-en-cpu.toml [--out RUN] [--set mntp.max_steps=100 ...] [--redo simcse] [--until mntp]

A recipe has one TOML section per stage; a training stage runs when its section is there, export, eval and
report always run:

    data        [data]        each of `inputs` -> RUN/data/NN-name/ (lm2vec.data corpora, read by training as one)
    mntp        [mntp]        RUN/mntp/adapter        LoRA on the bidirectional base model
    simcse      [simcse]      RUN/simcse/adapter      on base + MNTP
    supervised  [supervised]  RUN/supervised/adapter  on base + MNTP (+ SimCSE with run.supervised_after="simcse")
    export                    RUN/model               merged; loads in LM2Vec, transformers and sentence-transformers
    eval        [eval]        RUN/eval/results.json   causal baselines, untrained, every stage, reference encoder
    report                    RUN/report/report.md and report.png, with each stage's wall time

`[run]` holds what the stages share (the base model, pooling); the stage sections take the options of
`WikiConfig`/`TextConfig`, `MNTPConfig`, `SimCSEOptions`, `SupervisedOptions` and `EvalOptions`, except the
folders, which the run owns. Paths may use the placeholders of `lm2vec.data.packaged` (`${gensim_data}`,
`${stsb}`, `${fortunes_bg}` ...). `--set section.key=value` overrides one option.

RUN/pipeline.json records every stage: status, wall time, a summary, the paths it writes and a hash of its options
chained with the hashes of the stages before it. A re-run skips finished stages, resumes an interrupted one (data
from its manifest, training from its last complete checkpoint) and refuses to continue past a finished stage whose
options have changed: `--redo STAGE` deletes the paths that stage and every later one recorded, and runs them again.

pipeline.json is also the run folder's ownership record (`lm2vec.artifacts`): a run starts only in a new or empty
folder or in one holding a run; a stage refuses to start where a path it would write exists but was not recorded.
The whole recipe is checked before any stage starts, and every problem is reported at once.

Under `torchrun`/`accelerate launch` the training stages run on every process; data, export, eval and report
run on the main process while the others wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lm2vec.artifacts import ForeignFolderError, claim_folder, read_record, remove_recorded, write_json_atomic
from lm2vec.console import stage_log
from lm2vec.data.errors import DataError
from lm2vec.modeling.pooling import POOLING_MODES
from lm2vec.recipe import RecipeError, build_config, check_all, load_recipe

logger = logging.getLogger(__name__)

STAGES = ("data", "mntp", "simcse", "supervised", "export", "eval", "report")
TRAINING_STAGES = ("mntp", "simcse", "supervised")
ALWAYS = ("export", "eval", "report")
SECTIONS = ("run", "data", *TRAINING_STAGES, "eval")
STATE_NAME = "pipeline.json"
LOGS_DIR = "logs"
RUN_FORMAT = "lm2vec-run"
LEGACY_KEYS = ("recipe", "run", "stages")  # pipeline.json before it had a format tag
# A running stage's wall time is written this often, so a killed attempt still counts.
HEARTBEAT_SECONDS = 10.0
STAGE_NAMES = {"mntp": "after MNTP", "simcse": "after SimCSE", "supervised": "after supervised"}
# Options the run sets for each training stage; a recipe may not set them.
OWNED = {"output_dir", "export", "merge"}


@dataclass
class RunOptions:
    """The `[run]` section: what every stage shares."""

    model: str = "pkg:smollm2"  # base model: folder, hub id, .gguf or pkg: alias
    out: str = ""  # run folder; default runs/<recipe name>; --out overrides
    pooling: str = "mean"  # training and the exported encoder
    max_length: int = 512  # the exported encoder's
    supervised_after: str = "mntp"  # the adapters supervised training starts from: mntp, or simcse (mntp + simcse)

    def __post_init__(self) -> None:
        checks = [
            (self.supervised_after in ("mntp", "simcse"),
             f"supervised_after must be 'mntp' or 'simcse', got {self.supervised_after!r}."),
            (self.pooling in POOLING_MODES,
             f"pooling must be one of {', '.join(POOLING_MODES)}, got {self.pooling!r}."),
            (self.max_length >= 1, f"max_length must be at least 1, got {self.max_length}."),
        ]  # fmt: skip
        check_all(checks)


@dataclass
class EvalOptions:
    """The `[eval]` section: which tasks (lm2vec.evaluation's registry) and which comparisons."""

    suites: list[str] = field(default_factory=lambda: ["english"])
    tasks: list[str] = field(default_factory=list)  # single tasks by name, added to the suites'
    registries: list[str] = field(default_factory=list)  # extra task registry TOML files
    limit: int | None = None  # at most this many examples per task
    batch_size: int = 32
    device: str | None = None
    baselines: bool = True  # causal last-token, mean, echo, PromptEOL and bidirectional untrained
    reference: bool = True  # all-MiniLM-L6-v2

    def __post_init__(self) -> None:
        checks = [
            (self.limit is None or self.limit >= 1, f"limit must be at least 1 (or none), got {self.limit}."),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}."),
        ]
        check_all(checks)


@dataclass
class StageRecord:
    status: str = "pending"  # pending, running, done, failed
    options_hash: str = ""
    seconds: float = 0.0  # wall time, summed over resumed attempts
    attempts: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    outputs: list[str] = field(default_factory=list)  # paths under the run folder this stage wrote


class PipelineError(RuntimeError):
    """The run cannot go on as asked; the message says what to do."""


# --- the recipe -------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """A recipe resolved against a run folder: the stages to run and their options."""

    recipe_path: Path
    run: RunOptions
    run_dir: Path
    stages: list[str]
    options: dict[str, Any]
    hashes: dict[str, str]

    @property
    def trained(self) -> list[str]:
        return [stage for stage in self.stages if stage in TRAINING_STAGES]

    def chain(self, stage: str) -> list[str]:
        """The training stages whose adapters make the model after `stage` (MNTP, then SimCSE or supervised)."""
        chains = {"mntp": ["mntp"], "simcse": ["mntp", "simcse"]}
        chains["supervised"] = [*chains[self.run.supervised_after], "supervised"]
        return [name for name in chains[stage] if name in self.stages]

    def adapters(self, stage: str) -> list[Path]:
        return [self.run_dir / name / "adapter" for name in self.chain(stage)]

    def final_adapters(self) -> list[Path]:
        return self.adapters(self.trained[-1]) if self.trained else []


def plan_run(
    recipe_path: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None, check_inputs: bool = True
) -> Plan:
    """Read a recipe, apply `section.key=value` overrides and resolve every stage's options for the run folder.

    Everything is checked before any work starts: sections, override syntax, every option's type and range and,
    with `check_inputs` (off to check a recipe meant for another machine), that input paths exist and that each
    model source resolves. One RecipeError lists every problem found."""
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path)
    problems: list[str] = []
    if unknown := sorted(set(recipe) - set(SECTIONS)):
        problems.append(f"unknown section(s) {', '.join(unknown)}; sections: {', '.join(SECTIONS)}.")
    valid_overrides = []
    for override in overrides:
        key, separator, _ = override.partition("=")
        if not separator or "." not in key or key.partition(".")[0].strip() not in SECTIONS:
            problems.append(f"Override {override!r}: write section.key=value, section one of {', '.join(SECTIONS)}.")
        else:
            valid_overrides.append(override)
    overrides = valid_overrides
    try:
        run = build_config(RunOptions, "run", recipe, overrides)
    except RecipeError as error:
        problems.append(str(error))
        run = RunOptions()
    run_dir = Path(out or run.out or Path("runs") / recipe_path.stem)
    stages = [s for s in STAGES if s in recipe or s in ALWAYS]
    if "simcse" in stages and "mntp" not in stages or "supervised" in stages and "mntp" not in stages:
        problems.append("contrastive stages start from the MNTP adapter; add an [mntp] section.")
    if run.supervised_after == "simcse" and "supervised" in stages and "simcse" not in stages:
        problems.append("supervised_after = 'simcse' needs a [simcse] section.")

    plan = Plan(recipe_path, run, run_dir, stages, {}, {})
    builders: dict[str, Callable] = {
        "data": _data_options, "mntp": _mntp_options, "simcse": _contrastive_options,
        "supervised": _contrastive_options, "eval": _eval_options,
    }  # fmt: skip
    previous = _hash({"run": asdict(run)})
    for stage in stages:
        section = {**recipe.get(stage, {}), **_section_overrides(stage, overrides)}
        if owned := sorted(OWNED & set(section)):
            problems.append(f"[{stage}] may not set {', '.join(owned)}: the run owns its folders (use --out).")
        elif stage in builders:
            try:
                plan.options[stage] = builders[stage](plan, stage, recipe, overrides, section)
            except (RecipeError, DataError) as error:
                problems.append(str(error))
        previous = plan.hashes[stage] = _hash({"section": section, "previous": previous})
    if check_inputs:
        problems += _missing_inputs(plan)
    if len(problems) == 1:
        raise RecipeError(f"{recipe_path}: {problems[0]}")
    if problems:
        listed = "".join(f"\n  - {problem}" for problem in problems)
        raise RecipeError(f"{recipe_path}: {len(problems)} problems, nothing was run:{listed}")
    return plan


def _missing_inputs(plan: Plan) -> list[str]:
    """Model sources that do not resolve and input paths that do not exist, over every planned stage."""
    from lm2vec.modeling.sources import ModelSourceError, check_source

    problems = []
    models = {plan.run.model} | {options.model for options in plan.options.values() if hasattr(options, "model")}
    for model in sorted(models):
        try:
            check_source(model)
        except ModelSourceError as error:
            problems.append(f"model {model!r}: {error}")
    inputs = [("[data] inputs", source, "file") for source, _, _ in plan.options.get("data", ())]
    for stage in TRAINING_STAGES:
        options = plan.options.get(stage)
        for name in ("data", "validation_data", "adapters"):
            values = getattr(options, name, None) or []
            inputs += [
                (f"[{stage}] {name}", value, "any") for value in ([values] if isinstance(values, str) else values)
            ]
    for where, value, kind in inputs:
        path = Path(value)
        if value.startswith("hf:") or path.is_relative_to(plan.run_dir):  # the hub's, or this run's own output
            continue
        if not path.exists():
            problems.append(f"{where}: {value} does not exist.")
        elif kind == "file" and not path.is_file():
            problems.append(f"{where}: {value} is a folder, not a file.")
    return problems


def _section_overrides(stage: str, overrides: Sequence[str]) -> dict[str, str]:
    pairs = [o.split("=", 1) for o in overrides]
    return {key.split(".", 1)[1].strip(): value.strip() for key, value in pairs if key.split(".", 1)[0] == stage}


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _data_options(plan: Plan, stage: str, recipe: dict, overrides: Sequence[str], section: dict) -> list[tuple]:
    """[(input path or hf: name, corpus folder name, WikiConfig or TextConfig)] for the data section."""
    from lm2vec.data import TextConfig, WikiConfig
    from lm2vec.data.packaged import expand_path

    inputs = section.get("inputs")
    if isinstance(inputs, str):
        inputs = [part.strip() for part in inputs.split(",") if part.strip()]
    if not inputs:
        raise RecipeError("[data] needs `inputs`: dumps (.xml, .xml.bz2, .xml.gz), .txt/.jsonl files or hf:NAME.")
    known = {f.name for f in dataclasses.fields(WikiConfig)} | {f.name for f in dataclasses.fields(TextConfig)}
    if unknown := sorted(set(section) - known - {"inputs"}):
        raise RecipeError(f"[data] has no option {', '.join(unknown)}; options: inputs, {', '.join(sorted(known))}.")
    result = []
    for number, spec in enumerate(inputs):
        spec = str(spec)
        is_hub = spec.startswith("hf:")
        source = spec[3:] if is_hub else str(expand_path(spec, plan.recipe_path.parent))
        config_class = WikiConfig if not is_hub and ".xml" in Path(source).name else TextConfig
        names = {f.name for f in dataclasses.fields(config_class)}
        values = {k: v for k, v in section.items() if k in names}
        config = build_config(config_class, "data", {"data": values}, [])
        stem = Path(source).name.split(".")[0] if not is_hub else source.replace("/", "-")
        result.append((source, f"{number:02d}-{stem}", config))
    return result


def _given(stage: str, recipe: dict, overrides: Sequence[str]) -> set[str]:
    return set(recipe.get(stage, {})) | set(_section_overrides(stage, overrides))


def _mntp_options(plan: Plan, stage: str, recipe: dict, overrides: Sequence[str], section: dict):
    from lm2vec.training.mntp import MNTPConfig

    options = build_config(MNTPConfig, stage, recipe, overrides)
    given = _given(stage, recipe, overrides)
    options.output_dir = str(plan.run_dir / stage)
    if "model" not in given:
        options.model = plan.run.model
    if "data" not in given:
        _needs_data(plan, stage)
        options.data = str(plan.run_dir / "data")
    else:
        options.data = _expand(options.data, plan)
    return options


def _contrastive_options(plan: Plan, stage: str, recipe: dict, overrides: Sequence[str], section: dict):
    from lm2vec.training.contrastive import SimCSEOptions, SupervisedOptions

    options = build_config(SimCSEOptions if stage == "simcse" else SupervisedOptions, stage, recipe, overrides)
    given = _given(stage, recipe, overrides)
    options.output_dir, options.export = str(plan.run_dir / stage), False
    if "model" not in given:
        options.model = plan.run.model
    if "pooling" not in given:
        options.pooling = plan.run.pooling
    if "adapters" not in given:
        options.adapters = [str(path) for path in plan.adapters(stage)[:-1]]
    if "data" in given:
        options.data = _expand(options.data, plan)
    elif stage == "simcse":
        _needs_data(plan, stage)
        options.data = str(plan.run_dir / "data")
    else:
        raise RecipeError("[supervised] needs `data`: a JSONL file of {query, positive, negatives?} records or a "
                          "sentence-similarity file such as ${stsb}/sts-train.csv.")  # fmt: skip
    return options


def _eval_options(plan: Plan, stage: str, recipe: dict, overrides: Sequence[str], section: dict) -> EvalOptions:
    from lm2vec.evaluation.errors import EvalConfigError, EvalDataError
    from lm2vec.evaluation.registry import Registry

    options = build_config(EvalOptions, stage, recipe, overrides)
    options.registries = [_expand(path, plan) for path in options.registries]
    try:
        Registry.from_files(options.registries).select(options.suites, options.tasks)
    except (EvalConfigError, EvalDataError) as error:
        raise RecipeError(f"[eval] {error}") from None
    return options


def _needs_data(plan: Plan, stage: str) -> None:
    if "data" not in plan.stages:
        raise RecipeError(f"[{stage}] has no `data` and the recipe has no [data] section to build it from.")


def _expand(path: str, plan: Plan) -> str:
    from lm2vec.data.packaged import expand_path

    return path if path.startswith("hf:") else str(expand_path(path, plan.recipe_path.parent))


# --- running ----------------------------------------------------------------------------------------------------
class Pipeline:
    """Runs a plan stage by stage, recording each in RUN/pipeline.json."""

    def __init__(self, plan: Plan, echo: Callable[[str], None] = print, verbose: bool = False):
        self.plan = plan
        self.verbose = verbose  # third-party logs and warnings on the console too, not only in logs/STAGE.log
        self.dir = plan.run_dir
        self.echo = echo
        self.state = _distributed_state()
        self._records_lock = threading.Lock()
        self.records = self._read_records()

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def _read_records(self) -> dict[str, StageRecord]:
        if self.is_main:
            saved = claim_folder(self.dir, STATE_NAME, RUN_FORMAT, LEGACY_KEYS)
        else:
            saved = read_record(self.dir, STATE_NAME, RUN_FORMAT, LEGACY_KEYS)
        stages = (saved or {}).get("stages", {})
        records = {stage: StageRecord(**stages.get(stage, {})) for stage in self.plan.stages}
        for stage, record in records.items():
            if record.status != "pending" and "outputs" not in stages.get(stage, {}):
                record.outputs = self._outputs(stage)  # a run from before outputs were recorded
        return records

    def _outputs(self, stage: str) -> list[str]:
        """The paths, relative to the run folder, that `stage` writes."""
        if stage == "data":
            written = [f"data/{name}" for _, name, _ in self.plan.options["data"]]
        else:
            written = {"export": ["model"], "eval": ["eval", "stages.json"], "report": ["report"]}.get(stage, [stage])
        return [*written, f"{LOGS_DIR}/{stage}.log"]  # the stage's third-party logs and warnings

    def _write_records(self) -> None:
        if not self.is_main:
            return
        content = {
            "format": RUN_FORMAT,
            "recipe": str(self.plan.recipe_path),
            "run": asdict(self.plan.run),
            "stages": {stage: asdict(record) for stage, record in self.records.items()},
        }
        with self._records_lock:
            write_json_atomic(self.dir / STATE_NAME, content)

    def run(self, redo: str | None = None, until: str | None = None) -> dict[str, StageRecord]:
        stages = self.plan.stages
        for name in (redo, until):
            if name is not None and name not in stages:
                raise PipelineError(f"{name!r} is not a stage of this recipe; its stages: {', '.join(stages)}.")
        if redo is not None:
            self._reset_from(redo)
        self._check_finished_stages()
        for number, stage in enumerate(stages, start=1):
            record = self.records[stage]
            header = f"[{number}/{len(stages)}] {stage}"
            if record.status == "done":
                self.echo(f"{header}: done earlier ({_duration(record.seconds)}), skipped")
            else:
                self._run_stage(stage, header)
            if stage == until:
                self.echo(f"stopped after {stage} (--until); run again without --until to go on")
                break
        return self.records

    def _check_finished_stages(self) -> None:
        for stage in self.plan.stages:
            record = self.records[stage]
            if record.status in ("done", "running", "failed") and record.options_hash != self.plan.hashes[stage]:
                raise PipelineError(
                    f"The options of stage {stage!r} (or of a stage before it) changed since {self.dir} ran it. "
                    f"Re-run from there with --redo {stage}, or choose a new --out."
                )

    def _reset_from(self, stage: str) -> None:
        for later in self.plan.stages[self.plan.stages.index(stage) :]:
            if self.is_main:
                for path in remove_recorded(self.dir, self.records[later].outputs):
                    self.echo(f"  --redo {stage}: removed {path}")
            self.records[later] = StageRecord()
        self._write_records()
        self._barrier()

    def _run_stage(self, stage: str, header: str) -> None:
        record = self.records[stage]
        resuming = record.status in ("running", "failed")
        if self.is_main:
            self._check_outputs_are_ours(stage)
        self.echo(f"{header}: {'resuming' if resuming else 'starting'}")
        record.status, record.options_hash, record.error = "running", self.plan.hashes[stage], None
        record.outputs = sorted(set(record.outputs) | set(self._outputs(stage)))
        record.attempts += 1
        self._write_records()
        try:
            log = self.dir / LOGS_DIR / f"{stage}.log" if self.is_main else None
            with self._timing(record), stage_log(log, self.verbose):
                if stage in TRAINING_STAGES or self.is_main:
                    record.summary = getattr(self, f"_{stage}")() or {}
                self._barrier()
        except BaseException as error:
            record.status, record.error = "failed", f"{type(error).__name__}: {error}"
            self._write_records()
            raise
        record.status = "done"
        self._write_records()
        details = ", ".join(f"{k} {v}" for k, v in record.summary.items() if not isinstance(v, dict | list))
        self.echo(f"{header}: done in {_duration(record.seconds)}" + (f" ({details})" if details else ""))

    def _check_outputs_are_ours(self, stage: str) -> None:
        recorded = set(self.records[stage].outputs)
        for relative in self._outputs(stage):
            path = self.dir / relative
            if relative not in recorded and (path.exists() or path.is_symlink()):
                raise ForeignFolderError(
                    f"{path} exists but lm2vec's record of {self.dir} does not list it; move it away or "
                    "choose a new --out."
                )

    @contextlib.contextmanager
    def _timing(self, record: StageRecord) -> Iterator[None]:
        """Adds the attempt's wall time to `record.seconds`, written every HEARTBEAT_SECONDS while it runs, so
        the time of an attempt that is killed (not just failed) still counts after a resume."""
        before, started, stop = record.seconds, time.perf_counter(), threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                record.seconds = before + time.perf_counter() - started
                self._write_records()

        heart = threading.Thread(target=beat, name="lm2vec-stage-time", daemon=True)
        heart.start()
        try:
            yield
        finally:
            stop.set()
            heart.join()
            record.seconds = before + time.perf_counter() - started

    def _barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    # --- the stages -------------------------------------------------------------------------------------------
    def _data(self) -> dict:
        from lm2vec.data import build_text_corpus, build_wiki_corpus
        from lm2vec.data.config import WikiConfig
        from lm2vec.data.shards import MANIFEST_NAME, Manifest

        summary: dict[str, int] = {"articles": 0, "paragraphs": 0, "sentences": 0}
        for source, name, config in self.plan.options["data"]:
            out = self.dir / "data" / name
            manifest = Manifest.read(out) if (out / MANIFEST_NAME).is_file() else None
            if manifest is None or manifest.status != "complete":
                self.echo(f"  {source} -> {out}")
                build = build_wiki_corpus if isinstance(config, WikiConfig) else build_text_corpus
                mode = {"resume": True} if manifest is not None else {"overwrite": True}
                manifest = build(source, config, out, **mode)
            counts = manifest.counts
            summary["articles"] += counts.articles_kept
            summary["paragraphs"] += counts.paragraphs
            summary["sentences"] += counts.sentences
        return summary

    def _mntp(self) -> dict:
        from lm2vec.training.mntp import eval_accuracy_log, train_mntp

        options = self.plan.options["mntp"]
        result, _ = train_mntp(options, resume=True)
        accuracy = eval_accuracy_log(options.output_dir)
        summary: dict[str, Any] = {"steps": result.global_step}
        if accuracy:
            summary["masked_accuracy_start"] = round(accuracy[0][1], 4)
            summary["masked_accuracy_end"] = round(accuracy[-1][1], 4)
        return summary

    def _simcse(self) -> dict:
        from lm2vec.training.contrastive import train_simcse

        return self._contrastive_summary(train_simcse(self.plan.options["simcse"], resume=True))

    def _supervised(self) -> dict:
        from lm2vec.training.contrastive import train_supervised

        return self._contrastive_summary(train_supervised(self.plan.options["supervised"], resume=True))

    def _contrastive_summary(self, result) -> dict:
        from lm2vec.training.callbacks import read_log

        losses = [r["loss"] for r in read_log(result.output_dir) if "loss" in r]
        summary: dict[str, Any] = {"steps": result.global_step}
        if losses:
            summary["loss_start"], summary["loss_end"] = round(losses[0], 4), round(losses[-1], 4)
        return summary

    def _export(self) -> dict:
        """The final encoder, merged, and checked: sentence-transformers must give LM2Vec's embeddings."""
        import numpy as np
        from sentence_transformers import SentenceTransformer

        from lm2vec import LM2Vec

        run = self.plan.run
        adapters = self.plan.final_adapters()
        target = self.dir / "model"
        encoder = LM2Vec.from_pretrained(run.model, adapters=adapters, pooling=run.pooling, max_length=run.max_length)
        if "supervised" in self.plan.trained:
            from lm2vec.training.contrastive import query_instruction

            encoder.config.query_instruction = query_instruction(self.plan.options["supervised"])
        if self.plan.trained and self.plan.trained[-1] in ("simcse", "supervised"):
            encoder.config.matryoshka_dims = sorted(set(self.plan.options[self.plan.trained[-1]].matryoshka_dims))
        encoder.save_pretrained(target)
        probe = ["A man is playing a guitar.", "The weather is cold today.", "Bread is baked in an oven."]
        instruction = encoder.config.query_instruction or None
        expected = encoder.encode(probe, normalize=True)
        expected_query = encoder.encode(probe, normalize=True, prompt=instruction)
        del encoder
        loaded = SentenceTransformer(str(target), device=self.plan.options.get("eval", EvalOptions()).device)
        quiet = {"normalize_embeddings": True, "show_progress_bar": False}
        agreement = float(np.min(np.sum(loaded.encode_document(probe, **quiet) * expected, axis=1)))
        if agreement < 0.999:
            raise PipelineError(f"{target}: sentence-transformers disagrees with LM2Vec (cosine {agreement:.6f})")
        # Not fatal: with BPE tokenizers sentence-transformers also skips the first text token after a prompt.
        query = loaded.encode(probe, **quiet)
        query_agreement = float(np.min(np.sum(query * expected_query, axis=1)))
        return {
            "folder": str(target),
            "adapters": [str(a) for a in adapters],
            "st_cosine": round(agreement, 6),
            "st_query_cosine": round(query_agreement, 6),
        }

    def _eval(self) -> dict:
        from lm2vec.evaluation.registry import Registry
        from lm2vec.evaluation.report import resolve_models
        from lm2vec.evaluation.runner import evaluate

        options: EvalOptions = self.plan.options["eval"]
        self._write_stages_manifest()
        registry = Registry.from_files(options.registries)
        tasks = [registry.load(name, options.limit) for name in registry.select(options.suites, options.tasks)]
        specs = resolve_models([str(self.dir)], baselines=options.baselines, reference=options.reference)
        results = evaluate(specs, tasks, batch_size=options.batch_size, device=options.device)
        results.save(self.dir / "eval" / "results.json")
        return {"models": len(results.models), "tasks": len(results.tasks)}

    def _write_stages_manifest(self) -> None:
        """stages.json: the models lm2vec.evaluation.report compares for this run."""
        stages = [
            {"name": STAGE_NAMES[stage], "adapters": [str(p.relative_to(self.dir)) for p in self.plan.adapters(stage)]}
            for stage in self.plan.trained
        ]
        manifest = {"base": self.plan.run.model, "pooling": self.plan.run.pooling, "stages": stages}
        write_json_atomic(self.dir / "stages.json", manifest)

    def _report(self) -> dict:
        from lm2vec.evaluation.report import markdown_table, write_report
        from lm2vec.evaluation.runner import Results

        results = Results.load(self.dir / "eval" / "results.json")
        lines = ["## Stages", "", "| stage | wall time | summary |", "| --- | ---: | --- |"]
        for stage, record in self.records.items():
            if stage == "report":
                continue
            details = ", ".join(f"{k} {v}" for k, v in record.summary.items() if not isinstance(v, dict | list))
            lines.append(f"| {stage} | {_duration(record.seconds)} | {details} |")
        lines += self._progress(results)
        paths = write_report(
            results,
            self.dir / "report",
            title=f"lm2vec run: {self.plan.recipe_path.name}",
            command=f"lm2vec run {self.plan.recipe_path}",
            notes="\n".join(lines),
        )
        self._write_model_card(results)
        self.echo(markdown_table(results))
        self.echo(f"report: {paths['markdown']}, chart: {paths['chart']}, encoder: {self.dir / 'model'}")
        return {"markdown": str(paths["markdown"])}

    def _write_model_card(self, results) -> None:
        """The exported folder's README.md, now with the recipe, each stage's settings and wall time, and scores."""
        from lm2vec.modeling.card import StageCard, TrainingCard, base_metadata, model_card, write_model_card
        from lm2vec.modeling.encoder import EncoderConfig

        folder = self.dir / "model"
        config = EncoderConfig.from_folder(folder)
        dimension = json.loads((folder / "1_Pooling" / "config.json").read_text())["embedding_dimension"]
        stages = []
        for stage, record in self.records.items():
            if stage == "report":
                continue
            options = self.plan.options.get(stage)
            settings = {} if not dataclasses.is_dataclass(options) else asdict(options)
            settings = {k: v for k, v in settings.items() if v not in (None, "", [], {}) and k != "output_dir"}
            stages.append(StageCard(stage, record.seconds, settings))
        training = TrainingCard(self.plan.recipe_path.name, stages)
        write_model_card(folder, model_card(config, dimension, base_metadata(self.plan.run.model), training, results))

    def _progress(self, results) -> list[str]:
        """report/progress.png and its table: each stage's scores against the training minutes that made it."""
        from lm2vec.evaluation.report import CAUSAL_MEAN_NAME, REFERENCE_NAME, UNTRAINED_NAME, write_progress_chart

        steps = [(UNTRAINED_NAME, 0.0, None)] if UNTRAINED_NAME in results.models else []
        for stage in self.plan.trained:
            chain = self.plan.chain(stage)
            minutes = sum(self.records[name].seconds for name in chain) / 60
            parent = STAGE_NAMES[chain[-2]] if len(chain) > 1 else (UNTRAINED_NAME if steps else None)
            steps.append((STAGE_NAMES[stage], minutes, parent))
        steps = [step for step in steps if step[0] in results.models]
        if len(steps) < 2:
            return []
        references = tuple(name for name in (CAUSAL_MEAN_NAME, REFERENCE_NAME) if name in results.models)
        write_progress_chart(results, steps, self.dir / "report" / "progress.png", references)
        tasks = list(results.tasks)
        lines = ["", "## Score against training time", "", "| model | training minutes | " + " | ".join(tasks) + " |"]
        lines.append("| --- | ---: | " + " | ".join("---:" for _ in tasks) + " |")
        for model, minutes, _ in steps:
            scores = [results.models[model].results.get(task) for task in tasks]
            cells = ["–" if r is None else f"{100 * r.main_score:.1f}" for r in scores]
            lines.append(f"| {model} | {minutes:.1f} | " + " | ".join(cells) + " |")
        return [*lines, "", "![score against training time](progress.png)"]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _distributed_state():
    """accelerate's process state under torchrun/accelerate launch (None in a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run_recipe(
    recipe: str | Path,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    redo: str | None = None,
    until: str | None = None,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
) -> Pipeline:
    """Plan and run a recipe; returns the finished pipeline (its `records` hold each stage's outcome)."""
    pipeline = Pipeline(plan_run(recipe, overrides, out), echo, verbose)
    if not pipeline.is_main:
        pipeline.echo = lambda message: None
    pipeline.run(redo=redo, until=until)
    return pipeline
