"""`LM2Vec` under the `mteb` encoder protocol (mteb 2.x), so that `mteb.evaluate(to_mteb(model), tasks)` works.

mteb calls `encode(dataloader, task_metadata=, hf_split=, hf_subset=, prompt_type=)`. The LLM2Vec convention
for instructions is followed: queries (and symmetric tasks such as STS, classification, clustering, whose
prompt_type is None) are encoded as `(instruction, text)` pairs, so the instruction is attended to but not
pooled; documents get no instruction. The instruction is looked up in `instructions` (keys: task name,
"TaskName-query", task type, "query"/"document"), then in the task's own prompt, then in mteb's default prompt
for the task's type. mteb itself is imported only for the metadata (`mteb_model_meta`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def _value(item: Any) -> str | None:
    return None if item is None else getattr(item, "value", item)


class LM2VecMTEB:
    """Wraps an `LM2Vec` (or any object with its `encode`) for mteb. Embeddings are L2-normalised."""

    def __init__(
        self,
        model: Any,
        name: str = "lm2vec/model",
        revision: str | None = None,
        instructions: Mapping[str, str] | None = None,
        batch_size: int = 32,
        document_instruction: bool = False,
    ) -> None:
        self.model = model
        self.name = name if "/" in name else f"lm2vec/{name}"
        self.revision = revision or "local"
        self.instructions = dict(instructions or {})
        self.batch_size = batch_size
        self.document_instruction = document_instruction

    # --- instructions --------------------------------------------------------------------------------------
    def get_instruction(self, task_metadata: Any, prompt_type: Any = None) -> str | None:
        kind = _value(prompt_type)
        name = getattr(task_metadata, "name", None)
        task_type = getattr(task_metadata, "type", None)
        if kind == "document" and not self.document_instruction:
            return self.instructions.get(f"{name}-document") or self.instructions.get("document") or None
        for key in (f"{name}-{kind}" if kind else None, name, f"{task_type}-{kind}" if kind else None, task_type, kind):
            if key and key in self.instructions:
                return self.instructions[key] or None
        prompt = getattr(task_metadata, "prompt", None)
        if isinstance(prompt, Mapping):
            prompt = prompt.get(kind or "query")
        if prompt:
            return str(prompt)
        try:
            from mteb.abstasks.abstask import get_abstask_prompt

            return get_abstask_prompt(name) or None if name else None
        except ImportError:
            return None

    # --- the protocol ------------------------------------------------------------------------------------
    def encode(
        self,
        inputs: Iterable[Any],
        *,
        task_metadata: Any = None,
        hf_split: str = "",
        hf_subset: str = "",
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts: list[str] = []
        for batch in inputs:
            if isinstance(batch, str):
                texts.append(batch)
            elif isinstance(batch, Mapping):
                texts.extend(_batch_texts(batch))
            else:
                texts.extend(str(t) for t in batch)
        instruction = self.get_instruction(task_metadata, prompt_type) if task_metadata is not None else None
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        embeddings = self.model.encode(
            texts,
            batch_size=kwargs.get("batch_size", self.batch_size),
            normalize=True,
            prompt=instruction,
            show_progress_bar=kwargs.get("show_progress_bar"),
        )
        return np.asarray(embeddings, dtype=np.float32)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        a, b = _normalised(embeddings1), _normalised(embeddings2)
        return a @ b.T

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        a, b = _normalised(embeddings1), _normalised(embeddings2)
        return np.sum(a * b, axis=-1)

    @property
    def mteb_model_meta(self):
        from mteb.models.model_meta import ModelMeta, ScoringFunction

        config = getattr(getattr(self.model, "model", None), "config", None)
        max_tokens = getattr(getattr(self.model, "config", None), "max_length", None)
        return ModelMeta.create_empty(
            overwrites={
                "name": self.name,
                "revision": self.revision,
                "similarity_fn_name": ScoringFunction.COSINE,
                "embed_dim": getattr(config, "hidden_size", None),
                "max_tokens": max_tokens,
                "use_instructions": True,
                "framework": ["PyTorch"],
                "open_weights": True,
            }
        )


def _batch_texts(batch: Mapping) -> list[str]:
    if "text" in batch:
        return [str(t) for t in batch["text"]]
    if "body" in batch:  # corpus batches without a joined text column
        titles = batch.get("title") or [""] * len(batch["body"])
        return [f"{t} {b}".strip() for t, b in zip(titles, batch["body"], strict=True)]
    raise ValueError(f"lm2vec encodes text only; the batch has no 'text' column (columns: {', '.join(batch)})")


def _normalised(x: Any) -> np.ndarray:
    array = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    array = np.atleast_2d(array)
    return array / np.clip(np.linalg.norm(array, axis=-1, keepdims=True), 1e-12, None)


def to_mteb(model: Any, name: str = "lm2vec/model", **options: Any) -> LM2VecMTEB:
    """`mteb.evaluate(to_mteb(LM2Vec.from_pretrained(...), "org/name"), mteb.get_tasks(...))`."""
    return LM2VecMTEB(model, name, **options)
