"""The encoders an evaluation embeds with, behind one `embed` call: LM2Vec models and sentence-transformers
models (the packaged reference encoder among them), each loaded from a model spec (lm2vec.evaluation.specs)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from lm2vec.console import hide_progress_bars_unless_terminal, on_terminal
from lm2vec.evaluation.errors import EvalDataError
from lm2vec.evaluation.specs import ModelSpec, reference_folder


class TextEncoder(Protocol):
    """What a task needs: L2-normalised float32 embeddings, one row per text, in order."""

    name: str

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray: ...


class TokenEncoder(Protocol):
    """What a word-level task needs: each text's tokens, as (character offsets (tokens, 2), states (tokens, dim)),
    special tokens included (their offsets are (0, 0))."""

    name: str

    def embed_tokens(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]: ...


class SentenceTransformerEncoder:
    """Any sentence-transformers model (the reference encoder among them). Such models were not trained with
    instructions, so instructions are ignored unless `use_instructions` (then they are prefixed as text)."""

    def __init__(
        self,
        folder: str | Path,
        name: str,
        batch_size: int = 32,
        device: str | None = None,
        use_instructions: bool = False,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.batch_size = batch_size
        self.use_instructions = use_instructions
        self.model = SentenceTransformer(str(folder), device=device or "cpu")

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        inputs = [f"{instruction}: {t}" if instruction and self.use_instructions else t for t in texts]
        embeddings = self.model.encode(
            inputs,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=len(inputs) > 256 and on_terminal(),
        )
        return np.asarray(embeddings, dtype=np.float32)

    def embed_tokens(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The transformer's output states (what pooling reads), one a token of the tokenizer's own encoding."""
        states = self.model.encode(
            texts,
            batch_size=self.batch_size,
            output_value="token_embeddings",
            show_progress_bar=len(texts) > 256 and on_terminal(),
        )
        return _paired(self.model.tokenizer(texts, return_offsets_mapping=True)["offset_mapping"], states)


class LM2VecEncoder:
    """An `LM2Vec` model (loaded from a spec, or given) behind `embed`."""

    def __init__(self, model, name: str, batch_size: int = 32) -> None:
        self.model = model
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def from_spec(cls, spec: ModelSpec, batch_size: int = 32, device: str | None = None) -> LM2VecEncoder:
        """The spec's encoder; an onnx one runs its graph on the CPU, whatever `device` the run's torch models use."""
        from lm2vec.modeling.encoder import LM2Vec

        if spec.backend == "onnx":
            backend_options = {"backend": spec.backend, "onnx_file": spec.onnx_file}
        else:
            backend_options = {"device": device}
        model = LM2Vec.from_pretrained(
            spec.source,
            pooling=spec.pooling,
            bidirectional=spec.bidirectional,
            max_length=spec.max_length,
            text_template=spec.template,
            adapters=list(spec.adapters),
            adapter_weights=spec.adapter_weights,
            merge_method=spec.merge_method,
            merge_density=spec.merge_density,
            **backend_options,
        )
        return cls(model, spec.name, batch_size)

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        embeddings = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize=True,
            prompt=instruction or None,
            show_progress_bar=len(texts) > 4 * self.batch_size and on_terminal(),
        )
        return np.asarray(embeddings, dtype=np.float32)

    def embed_tokens(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The last layer's states of the tokens that pooling reads (no instruction): the text's own, special tokens
        included; in a `text_template` the last copy of the text, its offsets counted from that copy's start."""
        before, after = self.model.config.text_template.rsplit("{text}", 1)
        leads = [before.replace("{text}", text) for text in texts]
        full = [lead + text + after for lead, text in zip(leads, texts, strict=True)]
        encoded = self.model.tokenizer(full, return_offsets_mapping=True, add_special_tokens=True)["offset_mapping"]
        offsets = [
            [(start - len(lead), end - len(lead)) for start, end in text_offsets[item.instruction_length :]]
            for lead, text_offsets, item in zip(leads, encoded, self.model.tokenize(texts), strict=True)
        ]
        states = self.model.encode(
            texts,
            batch_size=self.batch_size,
            output_value="token_embeddings",
            show_progress_bar=len(texts) > 4 * self.batch_size and on_terminal(),
        )
        return _paired(offsets, states)


def _paired(offsets: list[list[tuple[int, int]]], states: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each text's token offsets with its states; a state the encoder appended (last-token pooling's EOS) is
    dropped, and a text cut to the model's max_length is refused, since its last words have no state."""
    pairs = []
    for text_offsets, text_states in zip(offsets, states, strict=True):
        text_states = np.asarray(text_states.float().cpu() if hasattr(text_states, "cpu") else text_states)
        if len(text_states) < len(text_offsets):
            raise EvalDataError(
                f"a text of {len(text_offsets)} tokens was cut to {len(text_states)}: word-level tasks need whole "
                "sentences (raise the model's max_length)"
            )
        pairs.append((np.asarray(text_offsets, dtype=np.int32), text_states[: len(text_offsets)].astype(np.float32)))
    return pairs


def load_encoder(spec: ModelSpec, batch_size: int = 32, device: str | None = None) -> TextEncoder:
    hide_progress_bars_unless_terminal()
    if spec.source.startswith("ref:"):
        return SentenceTransformerEncoder(reference_folder(spec.source[4:]), spec.name, batch_size, device)
    if spec.source.startswith("st:"):
        return SentenceTransformerEncoder(spec.source[3:], spec.name, batch_size, device)
    return LM2VecEncoder.from_spec(spec, batch_size, device)
