"""Writing an encoder folder that LM2Vec, plain transformers and sentence-transformers load as the same encoder.

Every export goes through `export_encoder`: `lm2vec convert`, MNTP's `merged/`, the contrastive stages'
`encoder/` and the run's `model/` (which also checks the folder against sentence-transformers). These last two
take a trained encoder's config from one place, `lm2vec.training.results.encoder_config`, so they write the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lm2vec.errors import LM2VecError
from lm2vec.modeling.config import EncoderConfig
from lm2vec.modeling.encoder import LM2Vec
from lm2vec.modeling.int8_tolerance import INT8_MIN_COSINE

PROBE = ("A man is playing a guitar.", "The weather is cold today.", "Bread is baked in an oven.")
MIN_AGREEMENT = 0.999  # the least cosine between sentence-transformers' and LM2Vec's embedding of a probe text


class ExportCheckError(LM2VecError, RuntimeError):
    """sentence-transformers does not give the exported encoder's embeddings."""


@dataclass
class Export:
    folder: Path
    st_cosine: float | None = None  # the least cosine of sentence-transformers' document embeddings and LM2Vec's
    # ... of its query embeddings (the query instruction as prompt): reported, not checked, because with BPE
    # tokenizers sentence-transformers also skips the first text token after a prompt.
    st_query_cosine: float | None = None


def export_encoder(
    encoder: LM2Vec | str | os.PathLike,
    target: str | os.PathLike,
    *,
    config: EncoderConfig | None = None,
    adapters: Sequence[str | os.PathLike] = (),
    check: bool = False,
    check_device: str | None = None,
    onnx: bool = False,
    int8_min_cosine: float = INT8_MIN_COSINE,
    **load_options,
) -> Export:
    """Write `encoder` (an LM2Vec, or a source loaded with `LM2Vec.from_pretrained(source, adapters=adapters,
    **load_options)`, the adapters merged) to `target` with `LM2Vec.save_pretrained`: weights, tokenizer,
    lm2vec_config.json and the sentence-transformers files (with `onnx`, its ONNX graphs too: `LM2Vec.save_pretrained`),
    renamed into place when complete.

    `config`, when given, is the exported encoder's config (a trained one's: pooling, max length, query
    instruction, Matryoshka sizes) in place of the one it was loaded with. With `check`, sentence-transformers
    loads the folder (on `check_device`) and must embed probe texts as LM2Vec does (cosine >= MIN_AGREEMENT, both in
    fp32), else ExportCheckError; the loaded encoder is freed first."""
    if not isinstance(encoder, LM2Vec):
        encoder = LM2Vec.from_pretrained(encoder, adapters=adapters, **load_options)
    elif adapters or load_options:
        raise ValueError("adapters and load options apply to a source, not to a loaded encoder.")
    if config is not None:
        encoder.config = config
    target = Path(target)
    encoder.save_pretrained(target, onnx=onnx, int8_min_cosine=int8_min_cosine)
    if not check:
        return Export(target)
    probe = list(PROBE)
    instruction = encoder.config.query_instruction or None
    # Compared in fp32, which holds the saved (bf16 on GPUs) weights exactly: bf16 embeddings, sentence-transformers'
    # above all (it pools and normalises in bf16), stray by up to 0.003 in cosine, more than the check allows.
    dtype = encoder.model.dtype
    encoder.model.float()
    expected = encoder.encode(probe, normalize=True)
    expected_query = encoder.encode(probe, normalize=True, prompt=instruction)
    encoder.model.to(dtype)
    del encoder
    return check_export(target, expected, expected_query, check_device)


def check_export(target: Path, expected, expected_query, device: str | None = None) -> Export:
    """sentence-transformers' embeddings of PROBE from `target`, loaded in fp32, against LM2Vec's (`expected`,
    normalized)."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    loaded = SentenceTransformer(str(target), device=device, model_kwargs={"dtype": torch.float32})
    quiet = {"normalize_embeddings": True, "show_progress_bar": False}
    agreement = float(np.min(np.sum(loaded.encode_document(list(PROBE), **quiet) * expected, axis=1)))
    if agreement < MIN_AGREEMENT:
        raise ExportCheckError(f"{target}: sentence-transformers disagrees with LM2Vec (cosine {agreement:.6f})")
    query = loaded.encode(list(PROBE), **quiet)
    query_agreement = float(np.min(np.sum(query * expected_query, axis=1)))
    return Export(target, agreement, query_agreement)


__all__ = ["MIN_AGREEMENT", "PROBE", "Export", "ExportCheckError", "check_export", "export_encoder"]
