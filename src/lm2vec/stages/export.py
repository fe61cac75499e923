"""export: the final adapter chain (or `[export] stage`'s model) merged into RUN/model, which LM2Vec, transformers
and sentence-transformers load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lm2vec.modeling.int8_tolerance import (
    INT8_MIN_COSINE,
    INT8_MIN_COSINE_HELP,
    int8_min_cosine_message,
    valid_int8_min_cosine,
)
from lm2vec.modeling.pruning import PRUNE_HELP, prune_fraction_message, valid_prune_fraction
from lm2vec.options import Options
from lm2vec.stages import Stage, register_stage


@dataclass
class ExportOptions(Options):
    """The `[export]` section, optional."""

    stage: str = field(
        default="",
        metadata={
            "help": "the stage whose model is exported: a training stage or merge (default: the last training stage)"
        },
    )
    prune_layers: float = field(default=0.0, metadata={"help": PRUNE_HELP})
    onnx: bool = field(
        default=False,
        metadata={"help": "also write onnx/model.onnx and its int8 onnx/model_qint8_avx2.onnx (the onnx extra)"},
    )
    int8_min_cosine: float = field(default=INT8_MIN_COSINE, metadata={"help": INT8_MIN_COSINE_HELP})

    def checks(self) -> list[tuple[bool, str]]:
        from lm2vec.modeling.onnx import onnx_available
        from lm2vec.stages import registered_stages

        models = [stage.name for stage in registered_stages() if stage.trains or stage.name == "merge"]
        known = not self.stage or self.stage in models
        return [
            *super().checks(),
            (known, f"stage must be one of {', '.join(models)} (or empty), got {self.stage!r}."),
            (valid_prune_fraction(self.prune_layers), prune_fraction_message(self.prune_layers)),
            (not self.onnx or onnx_available(), "onnx = true needs the onnx extra: pip install -e '.[onnx]'."),
            (valid_int8_min_cosine(self.int8_min_cosine), int8_min_cosine_message(self.int8_min_cosine)),
        ]


class ExportStage(Stage):
    name = section = "export"
    always = True
    help = "Merge the final adapter chain into RUN/model and check sentence-transformers agrees with LM2Vec."

    def options_class(self) -> type:
        return ExportOptions

    def build_options(self, plan, section: dict[str, Any]) -> ExportOptions:
        from lm2vec.recipe import RecipeError, build_config

        options = build_config(ExportOptions, self.name, {self.name: section})
        exportable = [name for name in plan.stages if plan.stage(name).trains or name == "merge"]
        if options.stage and options.stage not in exportable:
            raise RecipeError(
                f"[export] stage {options.stage!r} is not a stage of this recipe that makes a model; "
                f"one of {', '.join(exportable) or 'none: the recipe trains nothing'}."
            )
        return options

    def outputs(self, plan) -> list[str]:
        return ["model"]

    def run(self, context) -> dict[str, Any]:
        """The final encoder, merged, and checked: sentence-transformers must give LM2Vec's embeddings. It is the
        last trained stage's chain, or `[export] stage`'s (a merge: its chain, weighted); its config is that of the
        chain's last stage, as `lm2vec train` alone exports it (`encoder_config`), with the run's pooling and max
        length; a run that trains nothing exports the base model with them."""
        from lm2vec.modeling.export import export_encoder
        from lm2vec.stages.eval import EvalOptions
        from lm2vec.training.results import encoder_config

        plan = context.plan
        run = plan.run
        options = plan.options[self.name]
        exported = options.stage or (plan.trained[-1] if plan.trained else "")
        if exported == "merge":
            load = plan.stage("merge").merge(plan)
            last_trained = plan.options["merge"].stage
        else:
            load = {"adapters": plan.adapters(exported) if exported else []}
            last_trained = exported
        adapters = load["adapters"]
        settings = {"pooling": run.pooling, "max_length": run.max_length}
        if last_trained:
            settings = {"config": encoder_config(plan.options[last_trained], **settings)}
        export = export_encoder(
            run.model,
            context.dir / "model",
            **load,
            check=True,
            check_device=plan.options.get("eval", EvalOptions()).device,
            prune_layers=options.prune_layers,
            onnx=options.onnx,
            int8_min_cosine=options.int8_min_cosine,
            **settings,
        )
        return {
            "folder": str(export.folder),
            "stage": exported,
            "adapters": [str(a) for a in adapters],
            "st_cosine": round(export.st_cosine, 6),
            "st_query_cosine": round(export.st_query_cosine, 6),
        }


register_stage(ExportStage(), after="supervised")
