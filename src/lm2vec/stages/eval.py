"""`[eval]`: the causal baselines, the untrained model, every trained stage and a reference encoder on the
recipe's tasks -> RUN/eval/results.json (and RUN/stages.json, the models compared, for `lm2vec report RUN`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lm2vec.options import Options
from lm2vec.stages import RunContext, RunPlan, Stage, expand, register_stage


@dataclass
class EvalOptions(Options):
    """The `[eval]` section: which tasks (lm2vec.evaluation's registry) and which comparisons."""

    suites: list[str] = field(
        default_factory=lambda: ["english"], metadata={"help": "task suites of lm2vec.evaluation's registry"}
    )
    tasks: list[str] = field(default_factory=list, metadata={"help": "single tasks by name, added to the suites'"})
    registries: list[str] = field(default_factory=list, metadata={"help": "extra task registry TOML files"})
    limit: int | None = field(default=None, metadata={"help": "at most this many examples per task"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (default: cuda if available)"})
    baselines: bool = field(
        default=True, metadata={"help": "causal last-token, mean, echo, PromptEOL and bidirectional untrained"}
    )
    reference: bool = field(default=True, metadata={"help": "all-MiniLM-L6-v2, a small encoder, for reference"})

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (self.limit is None or self.limit >= 1, f"limit must be at least 1 (or none), got {self.limit}."),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}."),
        ]


class EvalStage(Stage):
    name = section = "eval"
    always = True
    help = "Evaluate the baselines, every stage's model and a reference encoder."

    def options_class(self) -> type:
        return EvalOptions

    def build_options(self, plan: RunPlan, section: dict[str, Any]) -> EvalOptions:
        from lm2vec.evaluation.errors import EvalConfigError, EvalDataError
        from lm2vec.evaluation.registry import Registry
        from lm2vec.recipe import RecipeError, build_config

        options = build_config(EvalOptions, self.name, {self.name: section})
        options.registries = [expand(path, plan) for path in options.registries]
        try:
            Registry.from_files(options.registries).select(options.suites, options.tasks)
        except (EvalConfigError, EvalDataError) as error:
            raise RecipeError(f"[eval] {error}") from None
        return options

    def outputs(self, plan: RunPlan) -> list[str]:
        return ["eval", "stages.json"]

    def run(self, context: RunContext) -> dict[str, Any]:
        from lm2vec.evaluation.registry import Registry
        from lm2vec.evaluation.report import run_specs, with_reference
        from lm2vec.evaluation.runner import evaluate

        options: EvalOptions = context.plan.options["eval"]
        manifest = write_stages_manifest(context)
        registry = Registry.from_files(options.registries)
        tasks = [registry.load(name, options.limit) for name in registry.select(options.suites, options.tasks)]
        specs = with_reference(run_specs(context.dir, options.baselines, manifest), options.reference)
        results = evaluate(specs, tasks, batch_size=options.batch_size, device=options.device)
        results.save(context.dir / "eval" / "results.json")
        return {"models": len(results.models), "tasks": len(results.tasks)}


def write_stages_manifest(context: RunContext) -> dict[str, Any]:
    """stages.json: the models lm2vec.evaluation.report compares for this run (`lm2vec report RUN`); returns it."""
    from lm2vec.artifacts import write_json_atomic

    plan = context.plan
    stages = [model for name in plan.stages for model in plan.stage(name).models(plan)]
    manifest = {"base": plan.run.model, "pooling": plan.run.pooling, "stages": stages}
    write_json_atomic(context.dir / "stages.json", manifest)
    return manifest


register_stage(EvalStage(), after="export")
