"""export: the final adapter chain merged into RUN/model, which LM2Vec, transformers and sentence-transformers load."""

from __future__ import annotations

from typing import Any

from lm2vec.stages import Stage, register_stage


class ExportStage(Stage):
    name = "export"
    always = True
    help = "Merge the final adapter chain into RUN/model and check sentence-transformers agrees with LM2Vec."

    def outputs(self, plan) -> list[str]:
        return ["model"]

    def run(self, context) -> dict[str, Any]:
        """The final encoder, merged, and checked: sentence-transformers must give LM2Vec's embeddings. Its config
        is the last trained stage's, as `lm2vec train` alone exports it (`encoder_config`), with the run's pooling
        and max length; a run that trains nothing exports the base model with them."""
        from lm2vec.modeling.export import export_encoder
        from lm2vec.stages.eval import EvalOptions
        from lm2vec.training.results import encoder_config

        plan = context.plan
        run = plan.run
        adapters = plan.final_adapters()
        settings = {"pooling": run.pooling, "max_length": run.max_length}
        if plan.trained:
            settings = {"config": encoder_config(plan.options[plan.trained[-1]], **settings)}
        export = export_encoder(
            run.model,
            context.dir / "model",
            adapters=adapters,
            check=True,
            check_device=plan.options.get("eval", EvalOptions()).device,
            **settings,
        )
        return {
            "folder": str(export.folder),
            "adapters": [str(a) for a in adapters],
            "st_cosine": round(export.st_cosine, 6),
            "st_query_cosine": round(export.st_query_cosine, 6),
        }


register_stage(ExportStage(), after="supervised")
