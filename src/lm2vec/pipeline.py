"""`lm2vec run RECIPE.toml`: from raw text to an evaluated encoder in one command.

    lm2vec run recipes/smollm2-en-cpu.toml [--out RUN] [--set mntp.max_steps=100 ...] [--redo simcse] [--until mntp]
    lm2vec run recipes/smollm2-en-cpu.toml --only mntp     # one stage; `lm2vec train mntp --recipe R` runs this

A recipe has one TOML section per stage; a training stage runs when its section is there, export, eval and
report always run:

    data        [data]        each of `inputs` -> RUN/data/NN-name/ (lm2vec.data corpora, read by training as one)
    mntp        [mntp]        RUN/mntp/adapter        LoRA on the bidirectional base model
    simcse      [simcse]      RUN/simcse/adapter      on base + MNTP
    supervised  [supervised]  RUN/supervised/adapter  on base + MNTP (+ SimCSE with run.supervised_after="simcse")
    export                    RUN/model               merged; loads in LM2Vec, transformers and sentence-transformers
    eval        [eval]        RUN/eval/results.json   causal baselines, untrained, every stage, reference encoder
    report                    RUN/report/report.md and report.png, with each stage's wall time

The stages are `lm2vec.stages`' registry (one module per stage; `register_stage` adds one). `--only STAGE` runs
that stage alone, in the same folders with the same inputs as the whole run; the stages it reads from must be done.

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
from lm2vec.errors import LM2VecError
from lm2vec.modeling.pooling import POOLING_MODES
from lm2vec.recipe import RecipeError, build_config, check_all, load_recipe
from lm2vec.stages import OWNED, Stage, duration, registered_stages
from lm2vec.stages.eval import EvalOptions

logger = logging.getLogger(__name__)

STATE_NAME = "pipeline.json"
LOGS_DIR = "logs"
RUN_FORMAT = "lm2vec-run"
# A running stage's wall time is written this often, so a killed attempt still counts.
HEARTBEAT_SECONDS = 10.0


@dataclass
class RunOptions:
    """The `[run]` section: what every stage shares."""

    model: str = field(default="pkg:smollm2", metadata={"help": "base model: folder, hub id, .gguf or pkg: alias"})
    out: str = field(default="", metadata={"help": "run folder; default runs/<recipe name>; --out overrides"})
    pooling: str = field(default="mean", metadata={"help": "pooling for training and the exported encoder"})
    max_length: int = field(default=512, metadata={"help": "the exported encoder's longest input, in tokens"})
    supervised_after: str = field(
        default="mntp",
        metadata={"help": "the adapters supervised training starts from: mntp, or simcse (mntp + simcse)"},
    )

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
class StageRecord:
    status: str = "pending"  # pending, running, done, failed
    options_hash: str = ""
    seconds: float = 0.0  # wall time, summed over resumed attempts
    attempts: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    outputs: list[str] = field(default_factory=list)  # paths under the run folder this stage wrote


class PipelineError(LM2VecError, RuntimeError):
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
    definitions: dict[str, Stage] = field(default_factory=dict)  # the registry's stages, as of planning

    def stage(self, name: str) -> Stage:
        return self.definitions[name]

    @property
    def trained(self) -> list[str]:
        return [name for name in self.stages if self.stage(name).trains]

    def chain(self, stage: str) -> list[str]:
        """The training stages whose adapters make the model after `stage` (MNTP, then SimCSE or supervised)."""

        def full(name: str) -> list[str]:
            return [*(earlier for start in self.stage(name).starts_from(self) for earlier in full(start)), name]

        return [name for name in full(stage) if name in self.stages]

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
    definitions = {stage.name: stage for stage in registered_stages()}
    sections = ("run", *(stage.section for stage in definitions.values() if stage.section))
    problems: list[str] = []
    if unknown := sorted(set(recipe) - set(sections)):
        problems.append(f"unknown section(s) {', '.join(unknown)}; sections: {', '.join(sections)}.")
    valid_overrides = []
    for override in overrides:
        key, separator, _ = override.partition("=")
        if not separator or "." not in key or key.partition(".")[0].strip() not in sections:
            problems.append(f"Override {override!r}: write section.key=value, section one of {', '.join(sections)}.")
        else:
            valid_overrides.append(override)
    overrides = valid_overrides
    try:
        run = build_config(RunOptions, "run", recipe, overrides)
    except RecipeError as error:
        problems.append(str(error))
        run = RunOptions()
    run_dir = Path(out or run.out or Path("runs") / recipe_path.stem)
    stages = [name for name, stage in definitions.items() if stage.always or stage.section in recipe]
    plan = Plan(recipe_path, run, run_dir, stages, {}, {}, definitions)
    for name in stages:
        problems += [problem for problem in plan.stage(name).check(plan) if problem not in problems]

    previous = _hash({"run": asdict(run)})
    for name in stages:
        stage = plan.stage(name)
        section = (
            {**recipe.get(stage.section, {}), **_section_overrides(stage.section, overrides)} if stage.section else {}
        )
        if owned := sorted(OWNED & set(section)):
            problems.append(f"[{name}] may not set {', '.join(owned)}: the run owns its folders (use --out).")
        else:
            try:
                options = stage.build_options(plan, section)
            except (RecipeError, DataError) as error:
                problems.append(str(error))
            else:
                if options is not None:
                    plan.options[name] = options
        # The hash of a stage chains those of the stages before it: a change upstream is a change here too.
        previous = plan.hashes[name] = _hash({"section": section, "previous": previous})
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
    inputs = [where_value_kind for name in plan.stages for where_value_kind in plan.stage(name).input_paths(plan)]
    for where, value, kind in inputs:
        path = Path(value)
        if value.startswith("hf:") or path.is_relative_to(plan.run_dir):  # the hub's, or this run's own output
            continue
        if not path.exists():
            problems.append(f"{where}: {value} does not exist.")
        elif kind == "file" and not path.is_file():
            problems.append(f"{where}: {value} is a folder, not a file.")
    return problems


def _section_overrides(section: str, overrides: Sequence[str]) -> dict[str, str]:
    pairs = [o.split("=", 1) for o in overrides]
    return {key.split(".", 1)[1].strip(): value.strip() for key, value in pairs if key.split(".", 1)[0] == section}


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- running ----------------------------------------------------------------------------------------------------
class Pipeline:
    """Runs a plan stage by stage, recording each in RUN/pipeline.json; the context each stage's `run` gets."""

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
            saved = claim_folder(self.dir, STATE_NAME, RUN_FORMAT)
        else:
            saved = read_record(self.dir, STATE_NAME, RUN_FORMAT)
        stages = (saved or {}).get("stages", {})
        records = {stage: StageRecord(**stages.get(stage, {})) for stage in self.plan.stages}
        for stage, record in records.items():
            if record.status != "pending" and "outputs" not in stages.get(stage, {}):
                record.outputs = self._outputs(stage)  # a run from before outputs were recorded
        return records

    def _outputs(self, stage: str) -> list[str]:
        """The paths, relative to the run folder, that `stage` writes."""
        return [*self.plan.stage(stage).outputs(self.plan), f"{LOGS_DIR}/{stage}.log"]  # + its third-party logs

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

    def run(
        self, redo: str | None = None, until: str | None = None, only: str | None = None, with_inputs: bool = False
    ) -> dict[str, StageRecord]:
        """Every stage not done yet, in order (up to `until`); with `only`, that one stage alone, and with
        `with_inputs` also the stages it reads from (and theirs) that are not done yet."""
        stages = self.plan.stages
        for name in (redo, until, only):
            if name is not None and name not in stages:
                raise PipelineError(f"{name!r} is not a stage of this recipe; its stages: {', '.join(stages)}.")
        if only is not None and until is not None:
            raise PipelineError("--only runs one stage; --until does not go with it.")
        if redo is not None:
            self._reset_from(redo)
        self._check_finished_stages(stages if only is None else stages[: stages.index(only) + 1])
        selected = None if only is None else {only}
        if only is not None and with_inputs:
            selected |= self._inputs_of(only)
        elif only is not None:
            self._check_needs(only)
        for number, stage in enumerate(stages, start=1):
            if selected is not None and stage not in selected:
                continue
            record = self.records[stage]
            header = f"[{number}/{len(stages)}] {stage}"
            if record.status == "done":
                self.echo(f"{header}: done earlier ({duration(record.seconds)}), skipped")
            else:
                self._run_stage(stage, header)
            if stage == until:
                self.echo(f"stopped after {stage} (--until); run again without --until to go on")
                break
        return self.records

    def _check_finished_stages(self, stages: Sequence[str]) -> None:
        for stage in stages:
            record = self.records[stage]
            if record.status in ("done", "running", "failed") and record.options_hash != self.plan.hashes[stage]:
                raise PipelineError(
                    f"The options of stage {stage!r} (or of a stage before it) changed since {self.dir} ran it. "
                    f"Re-run from there with --redo {stage}, or choose a new --out."
                )

    def _inputs_of(self, stage: str) -> set[str]:
        """The stages `stage` reads from, and the ones they read from, transitively."""
        found: set[str] = set()
        pending = list(self.plan.stage(stage).needs(self.plan))
        while pending:
            if (name := pending.pop()) not in found:
                found.add(name)
                pending += self.plan.stage(name).needs(self.plan)
        return found

    def _check_needs(self, stage: str) -> None:
        """`--only stage`: the stages whose outputs it reads must be done."""
        if missing := [name for name in self.plan.stage(stage).needs(self.plan) if self.records[name].status != "done"]:
            raise PipelineError(
                f"{stage} reads what {', '.join(missing)} write(s), not done in {self.dir} yet: run "
                f"`lm2vec run {self.plan.recipe_path} --until {missing[-1]}` first (with the same --out and --set)."
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
        definition = self.plan.stage(stage)
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
                if definition.every_process or self.is_main:
                    record.summary = definition.run(self) or {}
                self._barrier()
        except BaseException as error:
            record.status, record.error = "failed", f"{type(error).__name__}: {error}"
            self._write_records()
            raise
        record.status = "done"
        self._write_records()
        details = ", ".join(f"{k} {v}" for k, v in record.summary.items() if not isinstance(v, dict | list))
        self.echo(f"{header}: done in {duration(record.seconds)}" + (f" ({details})" if details else ""))

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
    only: str | None = None,
    with_inputs: bool = False,
) -> Pipeline:
    """Plan and run a recipe; returns the finished pipeline (its `records` hold each stage's outcome). With
    `only`, just that stage runs (`lm2vec run R --only STAGE`), and with `with_inputs` also the stages it reads
    from that are not done yet (`lm2vec train STAGE --recipe R`)."""
    pipeline = Pipeline(plan_run(recipe, overrides, out), echo, verbose)
    if not pipeline.is_main:
        pipeline.echo = lambda message: None
    pipeline.run(redo=redo, until=until, only=only, with_inputs=with_inputs)
    return pipeline


__all__ = [
    "EvalOptions",
    "Pipeline",
    "PipelineError",
    "Plan",
    "RunOptions",
    "StageRecord",
    "plan_run",
    "run_recipe",
]
