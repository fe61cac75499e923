"""`[merge]`: one more model, no training: a training stage's adapter chain merged with a weight per adapter
(lm2vec.modeling.loading.merge_adapters), evaluated like any stage and exportable (`[export] stage = "merge"`).

Merged adapters are additive deltas, so a linear merge along the chain is exact: weights [1, 1, 0.5] on
supervised's chain (mntp, simcse, supervised after `supervised_after = "simcse"`) are SimCSE 50/50 with supervised;
[0.5, 0.5] on simcse's chain are SimCSE 50/50 with the bidirectional base. RUN/merge/merge.json records the merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm2vec.options import Options
from lm2vec.stages import RunContext, RunPlan, Stage, register_stage

MERGE_RECORD = "merge.json"


@dataclass
class MergeOptions(Options):
    """The `[merge]` section: which adapter chain, and how its adapters are weighted and combined."""

    stage: str = field(default="", metadata={"help": "the training stage whose adapter chain is merged"})
    weights: list[float] = field(
        default_factory=list, metadata={"help": "one weight per adapter of that chain, in order (default 1 each)"}
    )
    method: str = field(default="linear", metadata={"help": "linear (exact), ties, dare_ties or dare_linear"})
    density: float | None = field(
        default=None, metadata={"help": "ties and dare: the share of each adapter's delta kept (default 0.5)"}
    )
    name: str = field(default="", metadata={"help": "the merged model's name in reports (default: merged: ...)"})

    def checks(self) -> list[tuple[bool, str]]:
        from lm2vec.modeling.loading import MERGE_METHODS, finite_number

        finite = all(finite_number(weight) for weight in self.weights)
        density = self.density
        return [
            *super().checks(),
            (finite, f"weights must be finite numbers, got {self.weights}."),
            (self.method in MERGE_METHODS, f"method must be one of {', '.join(MERGE_METHODS)}, got {self.method!r}."),
            (density is None or 0 < density <= 1, f"density must be in (0, 1] (or none), got {density}."),
        ]


class MergeStage(Stage):
    name = section = "merge"
    help = "Merge a training stage's adapter chain with a weight per adapter: one more model to evaluate or export."

    def options_class(self) -> type:
        return MergeOptions

    def build_options(self, plan: RunPlan, section: dict[str, Any]) -> MergeOptions:
        """The section's options, refused here, before any stage runs, unless they name a training stage of the
        recipe and fit its chain (one finite weight per adapter, a known method)."""
        from lm2vec.modeling.loading import AdapterMergeError, check_adapter_merge
        from lm2vec.recipe import RecipeError, build_config
        from lm2vec.stages import registered_stages

        options = build_config(MergeOptions, self.name, {self.name: section})
        trained = [stage.name for stage in registered_stages() if stage.trains]
        if options.stage not in trained:
            given = f"stage {options.stage!r} is not a training stage" if options.stage else "needs `stage`"
            raise RecipeError(f"[merge] {given}: the stage whose adapter chain it merges, one of {', '.join(trained)}.")
        if options.stage not in plan.stages:
            raise RecipeError(f"[merge] stage {options.stage!r}: the recipe has no [{options.stage}] section.")
        chain = plan.chain(options.stage)
        try:
            check_adapter_merge(chain, options.weights or None, options.method, options.density)
        except AdapterMergeError as error:
            raise RecipeError(f"[merge] {error} (the chain of {options.stage}: {', '.join(chain)}).") from None
        return options

    def merge(self, plan: RunPlan) -> dict[str, Any]:
        """How the merged model loads: `LM2Vec.from_pretrained(plan.run.model, **merge(plan))`."""
        options: MergeOptions = plan.options[self.name]
        return {
            "adapters": plan.adapters(options.stage),
            "adapter_weights": options.weights or None,
            "merge_method": options.method,
            "merge_density": options.density,
        }

    def model_name(self, plan: RunPlan) -> str:
        options: MergeOptions = plan.options[self.name]
        if options.name:
            return options.name
        chain = plan.chain(options.stage)
        weights = options.weights or [1.0] * len(chain)
        name = "merged: " + ", ".join(f"{stage} {weight:g}" for stage, weight in zip(chain, weights, strict=True))
        return name if options.method == "linear" else f"{name} ({options.method})"

    def needs(self, plan: RunPlan) -> list[str]:
        return plan.chain(plan.options[self.name].stage)

    def models(self, plan: RunPlan) -> list[dict[str, Any]]:
        merge = self.merge(plan)
        adapters = [str(Path(path).relative_to(plan.run_dir)) for path in merge.pop("adapters")]
        return [{"name": self.model_name(plan), "adapters": adapters, **merge}]

    def run(self, context: RunContext) -> dict[str, Any]:
        """No training: the record of what is merged, RUN/merge/merge.json (the run's outputs say it)."""
        from lm2vec.artifacts import write_json_atomic

        plan = context.plan
        options: MergeOptions = plan.options[self.name]
        (context.dir / self.name).mkdir(exist_ok=True)
        [model] = self.models(plan)
        record = {"stage": options.stage, "chain": plan.chain(options.stage), **model}
        write_json_atomic(context.dir / self.name / MERGE_RECORD, record)
        return {"model": model["name"]}


register_stage(MergeStage(), after="supervised")
