"""`[simcse]`: unsupervised SimCSE, a LoRA adapter on base + MNTP -> RUN/simcse/adapter."""

from __future__ import annotations

from typing import Any

from lm2vec.stages import TrainingStage, expand, register_stage
from lm2vec.stages.mntp import needs_data


class ContrastiveStage(TrainingStage):
    """SimCSE and supervised training: InfoNCE on top of the adapters of the stages they start from."""

    def check(self, plan) -> list[str]:
        if "mntp" not in plan.stages:
            return ["contrastive stages start from the MNTP adapter; add an [mntp] section."]
        return []

    def build_options(self, plan, section: dict[str, Any]):
        from lm2vec.recipe import RecipeError, build_config

        options = build_config(self.options_class(), self.name, {self.name: section})
        options.output_dir, options.export = str(plan.run_dir / self.name), False
        if "model" not in section:
            options.model = plan.run.model
        if "pooling" not in section:
            options.pooling = plan.run.pooling
        if "adapters" not in section:
            options.adapters = [str(path) for path in plan.adapters(self.name)[:-1]]
        if "data" in section:
            options.data = self.expand_data(options.data, plan)
        elif self.name == "simcse":
            needs_data(plan, self.name)
            options.data = str(plan.run_dir / "data")
        else:
            raise RecipeError(
                f"[{self.name}] needs `data`: a JSONL file of {{query, positive, negatives?}} records "
                "or a sentence-similarity file such as ${stsb}/sts-train.csv."
            )
        return options

    def expand_data(self, data, plan):
        """`data` as the recipe wrote it, with its placeholders filled."""
        return expand(data, plan)

    def summarize(self, result) -> dict[str, Any]:
        from lm2vec.training.callbacks import read_log

        losses = [r["loss"] for r in read_log(result.output_dir) if "loss" in r]
        summary: dict[str, Any] = {"steps": result.global_step}
        if losses:
            summary["loss_start"], summary["loss_end"] = round(losses[0], 4), round(losses[-1], 4)
        return summary


class SimCSEStage(ContrastiveStage):
    name = section = "simcse"
    display = "after SimCSE"
    help = "Unsupervised SimCSE with LoRA (LLM2Vec step 3)."

    def options_class(self) -> type:
        from lm2vec.training.contrastive import SimCSEOptions

        return SimCSEOptions

    def starts_from(self, plan) -> list[str]:
        return ["mntp"]

    def train(self, options, resume: bool):
        from lm2vec.training.contrastive import train_simcse

        return train_simcse(options, resume=resume)


register_stage(SimCSEStage(), after="mntp")
