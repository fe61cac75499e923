"""`[mntp]`: masked next-token prediction, a LoRA adapter on the bidirectional base model -> RUN/mntp/adapter."""

from __future__ import annotations

from typing import Any

from lm2vec.stages import TrainingStage, expand, register_stage


class MNTPStage(TrainingStage):
    name = section = "mntp"
    display = "after MNTP"
    help = "Masked next-token prediction with LoRA (LLM2Vec step 2)."

    def options_class(self) -> type:
        from lm2vec.training.mntp import MNTPConfig

        return MNTPConfig

    def build_options(self, plan, section: dict[str, Any]):
        from lm2vec.recipe import build_config

        options = build_config(self.options_class(), self.name, {self.name: section})
        options.output_dir = str(plan.run_dir / self.name)
        if "model" not in section:
            options.model = plan.run.model
        if "data" not in section:
            needs_data(plan, self.name)
            options.data = str(plan.run_dir / "data")
        else:
            options.data = expand(options.data, plan)
        return options

    def train(self, options, resume: bool):
        from lm2vec.training.mntp import train_mntp

        return train_mntp(options, resume=resume)

    def summarize(self, result) -> dict[str, Any]:
        from lm2vec.training.mntp import eval_accuracy_log

        accuracy = eval_accuracy_log(result.output_dir)
        summary: dict[str, Any] = {"steps": result.global_step}
        if accuracy:
            summary["masked_accuracy_start"] = round(accuracy[0][1], 4)
            summary["masked_accuracy_end"] = round(accuracy[-1][1], 4)
        return summary


def needs_data(plan, stage: str) -> None:
    from lm2vec.recipe import RecipeError

    if "data" not in plan.stages:
        raise RecipeError(f"[{stage}] has no `data` and the recipe has no [data] section to build it from.")


register_stage(MNTPStage(), after="data")
