"""`[supervised]`: contrastive training on pairs with hard negatives, on base + MNTP (+ SimCSE with
run.supervised_after = "simcse") -> RUN/supervised/adapter."""

from __future__ import annotations

from lm2vec.stages import register_stage
from lm2vec.stages.simcse import ContrastiveStage


class SupervisedStage(ContrastiveStage):
    name = section = "supervised"
    display = "after supervised"
    help = "Supervised contrastive training with hard negatives."

    def options_class(self) -> type:
        from lm2vec.training.contrastive import SupervisedOptions

        return SupervisedOptions

    def starts_from(self, plan) -> list[str]:
        return [plan.run.supervised_after]

    def check(self, plan) -> list[str]:
        problems = super().check(plan)
        if plan.run.supervised_after == "simcse" and "simcse" not in plan.stages:
            problems.append("supervised_after = 'simcse' needs a [simcse] section.")
        return problems

    def train(self, options, resume: bool):
        from lm2vec.training.contrastive import train_supervised

        return train_supervised(options, resume=resume)


register_stage(SupervisedStage(), after="simcse")
