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
        import numpy as np
        from sentence_transformers import SentenceTransformer

        from lm2vec import LM2Vec
        from lm2vec.pipeline import PipelineError
        from lm2vec.stages.eval import EvalOptions

        plan = context.plan
        run = plan.run
        adapters = plan.final_adapters()
        target = context.dir / "model"
        encoder = LM2Vec.from_pretrained(run.model, adapters=adapters, pooling=run.pooling, max_length=run.max_length)
        for name in plan.trained:
            plan.stage(name).finish_encoder(plan, encoder.config, last=name == plan.trained[-1])
        encoder.save_pretrained(target)
        probe = ["A man is playing a guitar.", "The weather is cold today.", "Bread is baked in an oven."]
        instruction = encoder.config.query_instruction or None
        expected = encoder.encode(probe, normalize=True)
        expected_query = encoder.encode(probe, normalize=True, prompt=instruction)
        del encoder
        loaded = SentenceTransformer(str(target), device=plan.options.get("eval", EvalOptions()).device)
        quiet = {"normalize_embeddings": True, "show_progress_bar": False}
        agreement = float(np.min(np.sum(loaded.encode_document(probe, **quiet) * expected, axis=1)))
        if agreement < 0.999:
            raise PipelineError(f"{target}: sentence-transformers disagrees with LM2Vec (cosine {agreement:.6f})")
        # Not fatal: with BPE tokenizers sentence-transformers also skips the first text token after a prompt.
        query = loaded.encode(probe, **quiet)
        query_agreement = float(np.min(np.sum(query * expected_query, axis=1)))
        return {
            "folder": str(target),
            "adapters": [str(a) for a in adapters],
            "st_cosine": round(agreement, 6),
            "st_query_cosine": round(query_agreement, 6),
        }


register_stage(ExportStage(), after="supervised")
