"""`[supervised]`: contrastive training on pairs with hard negatives, on base + MNTP (+ SimCSE with
run.supervised_after = "simcse") -> RUN/supervised/adapter. `data` is one path or a list of them, a mixture; the
path `${data}` is this run's data stage output, whose dumps' weak pairs it reads."""

from __future__ import annotations

from lm2vec.stages import expand, register_stage
from lm2vec.stages.mntp import needs_data
from lm2vec.stages.simcse import ContrastiveStage

RUN_DATA = "${data}"  # RUN/data, the data stage's corpora


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

    def expand_data(self, data: str | list[str], plan) -> str | list[str]:
        """Each path with its placeholders filled, `${data}` with the run's data folder; a list stays a list."""
        expanded = []
        for path in [data] if isinstance(data, str) else data:
            if path.startswith(RUN_DATA):
                needs_data(plan, self.name)
                expanded.append(str(plan.run_dir / "data") + path.removeprefix(RUN_DATA))
            else:
                expanded.append(expand(path, plan))
        return expanded[0] if isinstance(data, str) else expanded

    def train(self, options, resume: bool):
        from lm2vec.training.contrastive import train_supervised

        return train_supervised(options, resume=resume)


register_stage(SupervisedStage(), after="simcse")
