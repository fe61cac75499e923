"""report: RUN/report/report.md and report.png (scores, each stage's wall time), progress.png, and the exported
model's card."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from lm2vec.stages import RunContext, Stage, duration, register_stage

if TYPE_CHECKING:
    from lm2vec.evaluation.runner import Results


class ReportStage(Stage):
    name = "report"
    always = True
    help = "Write the report, the score-against-training-time chart and the exported model's card."

    def run(self, context: RunContext) -> dict[str, Any]:
        from lm2vec.evaluation.report import markdown_table, write_report
        from lm2vec.evaluation.runner import Results

        results = Results.load(context.dir / "eval" / "results.json")
        lines = ["## Stages", "", "| stage | wall time | summary |", "| --- | ---: | --- |"]
        for stage, record in context.records.items():
            if stage == self.name:
                continue
            details = ", ".join(f"{k} {v}" for k, v in record.summary.items() if not isinstance(v, dict | list))
            lines.append(f"| {stage} | {duration(record.seconds)} | {details} |")
        lines += progress(context, results)
        paths = write_report(
            results,
            context.dir / "report",
            title=f"lm2vec run: {context.plan.recipe_path.name}",
            command=f"lm2vec run {context.plan.recipe_path}",
            notes="\n".join(lines),
            owned=True,  # RUN/report is this stage's output (pipeline.json), progress.png already in it
        )
        write_model_card(context, results)
        context.echo(markdown_table(results))
        context.echo(f"report: {paths['markdown']}, chart: {paths['chart']}, encoder: {context.dir / 'model'}")
        return {"markdown": str(paths["markdown"])}


def write_model_card(context: RunContext, results: Results) -> None:
    """The exported folder's README.md, now with the recipe, each stage's settings and wall time, and scores."""
    from lm2vec.evaluation.report import markdown_table
    from lm2vec.modeling.card import base_metadata, model_card
    from lm2vec.modeling.card import write_model_card as write_card
    from lm2vec.modeling.config import EncoderConfig

    folder = context.dir / "model"
    config = EncoderConfig.from_folder(folder)
    dimension = json.loads((folder / "1_Pooling" / "config.json").read_text())["embedding_dimension"]
    evaluation = "\n".join(["## Evaluation", "", markdown_table(results), ""])
    metadata = base_metadata(context.plan.run.model)
    write_card(folder, model_card(config, dimension, metadata, [training_section(context), evaluation]))


def training_section(context: RunContext) -> str:
    """The card's recipe, and each stage's wall time and settings (those set, not the folders the run owns)."""
    lines = ["## Training", "", f"Trained with `lm2vec run {context.plan.recipe_path.name}`.", ""]
    lines += ["| stage | wall time | settings |", "| --- | ---: | --- |"]
    for stage, record in context.records.items():
        if stage == ReportStage.name:
            continue
        options = context.plan.options.get(stage)
        settings = {} if not dataclasses.is_dataclass(options) else asdict(options)
        cells = ", ".join(
            f"{key}={json.dumps(value, default=str)}"
            for key, value in settings.items()
            if value not in (None, "", [], {}) and key != "output_dir"
        )
        lines.append(f"| {stage} | {record.seconds:.0f} s | {cells.replace('|', '/')} |")
    return "\n".join([*lines, ""])


def progress(context: RunContext, results: Results) -> list[str]:
    """report/progress.png and its table: each stage's scores against the training minutes that made it."""
    from lm2vec.evaluation.report import CAUSAL_MEAN_NAME, REFERENCE_NAME, UNTRAINED_NAME, write_progress_chart

    plan = context.plan
    steps = [(UNTRAINED_NAME, 0.0, None)] if UNTRAINED_NAME in results.models else []
    for stage in plan.trained:
        chain = plan.chain(stage)
        minutes = sum(context.records[name].seconds for name in chain) / 60
        parent = plan.stage(chain[-2]).display if len(chain) > 1 else (UNTRAINED_NAME if steps else None)
        steps.append((plan.stage(stage).display, minutes, parent))
    steps = [step for step in steps if step[0] in results.models]
    if len(steps) < 2:
        return []
    references = tuple(name for name in (CAUSAL_MEAN_NAME, REFERENCE_NAME) if name in results.models)
    write_progress_chart(results, steps, context.dir / "report" / "progress.png", references)
    tasks = list(results.tasks)
    lines = ["", "## Score against training time", "", "| model | training minutes | " + " | ".join(tasks) + " |"]
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in tasks) + " |")
    for model, minutes, _ in steps:
        scores = [results.models[model].results.get(task) for task in tasks]
        cells = ["–" if r is None else f"{100 * r.main_score:.1f}" for r in scores]
        lines.append(f"| {model} | {minutes:.1f} | " + " | ".join(cells) + " |")
    return [*lines, "", "![score against training time](progress.png)"]


register_stage(ReportStage(), after="eval")
