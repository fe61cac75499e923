"""Planning a run: a recipe and its `--set` overrides read into a checked Plan, every problem found at once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lm2vec.data.errors import DataError
from lm2vec.modeling.pooling import POOLING_MODES
from lm2vec.options import Options
from lm2vec.recipe import RecipeError, build_config, load_recipe, parse_values
from lm2vec.stages import OWNED, Stage, registered_stages


@dataclass
class RunOptions(Options):
    """The `[run]` section: what every stage shares."""

    model: str = field(default="pkg:smollm2", metadata={"help": "base model: folder, hub id, .gguf or pkg: alias"})
    out: str = field(default="", metadata={"help": "run folder; default runs/<recipe name>; --out overrides"})
    pooling: str = field(default="mean", metadata={"help": "pooling for training and the exported encoder"})
    max_length: int = field(default=512, metadata={"help": "the exported encoder's longest input, in tokens"})
    supervised_after: str = field(
        default="mntp",
        metadata={"help": "the adapters supervised training starts from: mntp, or simcse (mntp + simcse)"},
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (
                self.supervised_after in ("mntp", "simcse"),
                f"supervised_after must be 'mntp' or 'simcse', got {self.supervised_after!r}.",
            ),
            (
                self.pooling in POOLING_MODES,
                f"pooling must be one of {', '.join(POOLING_MODES)}, got {self.pooling!r}.",
            ),
            (self.max_length >= 1, f"max_length must be at least 1, got {self.max_length}."),
        ]


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
    legacy_hashes: dict[str, str] = field(default_factory=dict)  # as earlier lm2vec hashed them (`--set` strings)

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
    recipe_path: str | Path,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    check_inputs: bool = True,
    recipe: dict[str, Any] | None = None,
) -> Plan:
    """Read a recipe, apply `section.key=value` overrides and resolve every stage's options for the run folder.

    Everything is checked before any work starts: sections, override syntax, every option's type and range and,
    with `check_inputs` (off to check a recipe meant for another machine), that input paths exist and that each
    model source resolves. One RecipeError lists every problem found. `recipe`, when given, is the recipe's content
    in place of the file's (a dry run's shrunk copy); its relative paths are still the file's folder's."""
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path) if recipe is None else recipe
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
    run_dir = run_folder(recipe_path, run, out)
    stages = [name for name, stage in definitions.items() if stage.always or stage.section in recipe]
    plan = Plan(recipe_path, run, run_dir, stages, {}, {}, definitions)
    for name in stages:
        problems += [problem for problem in plan.stage(name).check(plan) if problem not in problems]

    previous = legacy = _hash({"run": asdict(run)})
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
        # The hash of a stage chains those of the stages before it: a change upstream is a change here too. Values are
        # hashed as their options read them, so `--set key=1` and `key = 1` in the recipe are the same run.
        typed = _typed(stage.options_class(), section)
        previous = plan.hashes[name] = _hash({"section": typed, "previous": previous})
        # Run folders recorded before that hashed the `--set` strings as typed; they still match their own runs.
        legacy = plan.legacy_hashes[name] = _hash({"section": section, "previous": legacy})
    if check_inputs:
        problems += _missing_inputs(plan)
    if len(problems) == 1:
        raise RecipeError(f"{recipe_path}: {problems[0]}")
    if problems:
        listed = "".join(f"\n  - {problem}" for problem in problems)
        raise RecipeError(f"{recipe_path}: {len(problems)} problems, nothing was run:{listed}")
    return plan


def run_folder(recipe_path: Path, run: RunOptions, out: str | Path | None = None) -> Path:
    """The run folder: `out`, else the recipe's run.out, else runs/<recipe name>."""
    return Path(out or run.out or Path("runs") / recipe_path.stem)


def _missing_inputs(plan: Plan) -> list[str]:
    """Model sources that do not resolve and input paths that do not exist, over every planned stage (but those
    inside the run folder, which the run makes: a dry run's shrunk model)."""
    from lm2vec.modeling.sources import ModelSourceError, check_source

    problems = []
    models = {plan.run.model} | {options.model for options in plan.options.values() if hasattr(options, "model")}
    for model in sorted(models):
        if Path(model).is_relative_to(plan.run_dir):
            continue
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


def _typed(options_class: type | None, section: dict[str, Any]) -> dict[str, Any]:
    """`section` with the values `options_class` reads parsed as it reads them (`--set` strings included); the others
    stay as they are (the stage's own options report them)."""
    return section if options_class is None else {**section, **parse_values(options_class, section)[0]}


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
