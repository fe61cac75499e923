"""The stages of `lm2vec run`: one `Stage` object each, kept in one ordered registry.

A stage says what it is (its recipe section, options, display name, whether it always runs), what it reads (the
adapters of earlier stages it starts from) and writes (`outputs`), and how it runs. `lm2vec.pipeline` plans and
runs the registry generically: records, hashes, resume, `--redo`, `--only` and ownership checks are its business,
not the stages'. A stage sees the run through `RunPlan` and `RunContext` below, which the pipeline's Plan and
Pipeline fit: the stages, a layer below the pipeline, never import it.

Adding a stage is one file with a `Stage` subclass that ends with one registration line:

    from lm2vec.stages import Stage, register_stage

    class Distill(Stage):
        name = section = "distill"
        def run(self, context): ...

    register_stage(Distill(), after="supervised")

The built-in stages are the modules of this package (each registers itself when imported); a stage elsewhere
is registered when its module is imported, before the recipe is planned.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

# Options the run sets for each stage that has them; a recipe may not set them.
OWNED = frozenset({"output_dir", "export", "merge"})


class RunPlan(Protocol):
    """The plan a stage is part of (`lm2vec.pipeline.plan.Plan`): the recipe resolved against the run folder."""

    recipe_path: Path
    run: Any  # the [run] section, RunOptions: model, pooling, max_length, supervised_after
    run_dir: Path
    stages: list[str]  # this run's stages, in order
    options: dict[str, Any]  # each stage's options, by stage name

    @property
    def trained(self) -> list[str]: ...

    def stage(self, name: str) -> Stage: ...

    def chain(self, stage: str) -> list[str]: ...

    def adapters(self, stage: str) -> list[Path]: ...

    def final_adapters(self) -> list[Path]: ...


class RunContext(Protocol):
    """What a running stage gets (`lm2vec.pipeline.run.Pipeline`)."""

    plan: RunPlan
    dir: Path
    records: dict[str, Any]  # each stage's record, StageRecord: status, seconds, summary
    echo: Callable[[str], None]


class Stage:
    """One stage of a run. Subclasses set the class attributes and override what they need; `run` is required."""

    name: str = ""
    section: str | None = None  # the recipe section holding its options; None: it takes none
    display: str | None = None  # the model after this stage in reports ("after MNTP"); stages that train only
    help: str = ""  # one line for `--help`
    always: bool = False  # runs without a section in the recipe (export, eval, report)
    trains: bool = False  # writes a LoRA adapter at RUN/NAME/adapter, part of the chains later stages start from
    every_process: bool = False  # under torchrun it runs on every process, not only on the main one

    def options_class(self) -> type | None:
        """The dataclass its section fills (for help and checks); None if it has none or several."""
        return None

    def starts_from(self, plan: RunPlan) -> list[str]:
        """The stages whose adapter chains this stage's model starts from (MNTP for SimCSE)."""
        return []

    def check(self, plan: RunPlan) -> list[str]:
        """Problems of the recipe as a whole that concern this stage (another section it needs is missing)."""
        return []

    def build_options(self, plan: RunPlan, section: dict[str, Any]) -> Any:
        """This stage's options from its section (recipe values, then `--set` strings), resolved against the run
        folder; raises RecipeError (or DataError) naming every problem. None: the stage keeps no options."""
        return None

    def input_paths(self, plan: RunPlan) -> list[tuple[str, str, str]]:
        """(where, path, "file" or "any") of every input path its options name, checked before any stage starts."""
        options = plan.options.get(self.name)
        inputs = []
        for name in ("data", "validation_data", "adapters"):
            values = getattr(options, name, None) or []
            for value in [values] if isinstance(values, str) else values:
                inputs.append((f"[{self.name}] {name}", value, "any"))
        return inputs

    def outputs(self, plan: RunPlan) -> list[str]:
        """The paths, relative to the run folder, that it writes (its log under logs/ is added by the run)."""
        return [self.name]

    def needs(self, plan: RunPlan) -> list[str]:
        """The earlier stages whose outputs it reads, which must be done before `--only` runs it alone. By
        default every earlier stage; a stage that knows its inputs says fewer."""
        return plan.stages[: plan.stages.index(self.name)]

    def models(self, plan: RunPlan) -> list[dict[str, Any]]:
        """The models it makes, as entries of RUN/stages.json (name, adapters relative to the run folder, how they
        merge: `lm2vec.evaluation.specs.ModelSpec.from_dict`), which `[eval]` and `lm2vec report RUN` evaluate."""
        return []

    def run(self, context: RunContext) -> dict[str, Any]:
        """Do the work; returns the summary recorded in pipeline.json. `context` is the running Pipeline:
        `context.plan` (options: `context.plan.options[name]`), `context.dir`, `context.echo`, `context.records`."""
        raise NotImplementedError


class TrainingStage(Stage):
    """A stage that trains a LoRA adapter into RUN/NAME/adapter on top of the chain it starts from."""

    trains = True
    every_process = True

    def needs(self, plan: RunPlan) -> list[str]:
        """The earlier stages that wrote one of its input paths (RUN/data, RUN/mntp/adapter ...)."""
        paths = [Path(path) for _, path, _ in self.input_paths(plan)]
        needed = []
        for name in plan.stages[: plan.stages.index(self.name)]:
            written = [plan.run_dir / output for output in plan.stage(name).outputs(plan)]
            if any(p.is_relative_to(w) or w.is_relative_to(p) for p in paths for w in written):
                needed.append(name)
        return needed

    def models(self, plan: RunPlan) -> list[dict[str, Any]]:
        adapters = [str(path.relative_to(plan.run_dir)) for path in plan.adapters(self.name)]
        return [{"name": self.display, "adapters": adapters}]

    def train(self, options: Any, resume: bool) -> Any:
        """Train with `options`; returns a result with `global_step` and `adapter_dir` (`lm2vec train` alone)."""
        raise NotImplementedError

    def summarize(self, result: Any) -> dict[str, Any]:
        return {"steps": result.global_step}

    def run(self, context: RunContext) -> dict[str, Any]:
        return self.summarize(self.train(context.plan.options[self.name], resume=True))


_REGISTERED: dict[str, tuple[Stage, str | None]] = {}


def register_stage(stage: Stage, after: str | None = None) -> Stage:
    """Add `stage` to the run, right after the stage named `after` (None: first). The name must be new."""
    reserved = {"run"} | set(_REGISTERED) | {s.section for s, _ in _REGISTERED.values() if s.section}
    if not stage.name or stage.name in reserved or stage.section in reserved:
        raise ValueError(f"A stage needs a new name and section; {stage.name!r}/{stage.section!r} is taken or empty.")
    _REGISTERED[stage.name] = (stage, after)
    return stage


def unregister_stage(name: str) -> None:
    """Remove a registered stage (a plug-in's, in tests); later stages that ran after it then run after nothing."""
    del _REGISTERED[name]


def registered_stages() -> list[Stage]:
    """Every registered stage in run order: in the order of registration, each right after the stage it names in
    `after` (a stage whose `after` is not registered yet waits for it)."""
    order: list[Stage] = []
    waiting: list[tuple[Stage, str | None]] = []
    for registration in _REGISTERED.values():
        waiting.append(registration)
        placed = True
        while placed:
            placed = False
            for stage, after in waiting:
                names = [s.name for s in order]
                if after is None or after in names:
                    order.insert(0 if after is None else names.index(after) + 1, stage)
                    waiting.remove((stage, after))
                    placed = True
                    break
    if waiting:
        missing = ", ".join(f"{stage.name} (after {after})" for stage, after in waiting)
        raise ValueError(f"stage(s) registered after a stage that is not registered: {missing}")
    return order


def get_stage(name: str) -> Stage:
    return _REGISTERED[name][0]


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def expand(path: str, plan: RunPlan) -> str:
    """A path of a recipe with `lm2vec.data.packaged`'s placeholders filled, relative to the recipe's folder."""
    from lm2vec.data.packaged import expand_path

    return path if path.startswith("hf:") else str(expand_path(path, plan.recipe_path.parent))


def _load_builtin() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_load_builtin()

__all__ = [
    "OWNED",
    "RunContext",
    "RunPlan",
    "Stage",
    "TrainingStage",
    "duration",
    "expand",
    "get_stage",
    "register_stage",
    "registered_stages",
    "unregister_stage",
]
