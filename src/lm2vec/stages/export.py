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
        """The final encoder, merged, and checked: sentence-transformers must give LM2Vec's embeddings."""
        from lm2vec.modeling.export import export_encoder
        from lm2vec.stages.eval import EvalOptions

        plan = context.plan
        run = plan.run
        adapters = plan.final_adapters()

        def configure(config) -> None:
            for name in plan.trained:
                plan.stage(name).finish_encoder(plan, config, last=name == plan.trained[-1])

        export = export_encoder(
            run.model,
            context.dir / "model",
            adapters=adapters,
            pooling=run.pooling,
            max_length=run.max_length,
            configure=configure,
            check=True,
            check_device=plan.options.get("eval", EvalOptions()).device,
        )
        return {
            "folder": str(export.folder),
            "adapters": [str(a) for a in adapters],
            "st_cosine": round(export.st_cosine, 6),
            "st_query_cosine": round(export.st_query_cosine, 6),
        }


register_stage(ExportStage(), after="supervised")
