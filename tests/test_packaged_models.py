"""Integration: the real packaged models (SmolLM2-135M, Gemma-3-270m) as bidirectional encoders."""

from __future__ import annotations

import numpy as np
from sentence_transformers import SentenceTransformer

from lm2vec import LM2Vec
from lm2vec.modeling.bidirectional import probe_attention
from lm2vec.modeling.sources import resolve_source

SENTENCES = [
    "A man with a hard hat is dancing.",
    "A man wearing a hard hat is dancing.",
    "A young child is riding a horse.",
    "The stock market fell sharply on Monday.",
    "",
]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_smollm2_is_bidirectional_and_exports_faithfully(smollm2, tmp_path) -> None:
    assert smollm2.model.config.model_type == "llama"
    assert probe_attention(smollm2.model, smollm2.model.config.vocab_size)
    embeddings = smollm2.encode(SENTENCES, batch_size=2)
    assert embeddings.shape == (5, 576) and np.isfinite(embeddings).all()

    smollm2.save_pretrained(tmp_path)
    reloaded = LM2Vec.from_pretrained(tmp_path, device="cpu").encode(SENTENCES[:4])
    assert cosine(reloaded, embeddings[:4]).min() >= 0.9999
    through_st = SentenceTransformer(str(tmp_path), device="cpu").encode(SENTENCES[:4])
    assert cosine(through_st, embeddings[:4]).min() >= 0.9999


def test_smollm2_causal_baseline_differs(smollm2) -> None:
    causal = LM2Vec.from_pretrained(resolve_source("pkg:smollm2"), bidirectional=False, device="cpu")
    assert not probe_attention(causal.model, causal.model.config.vocab_size)
    assert cosine(causal.encode(SENTENCES[:4]), smollm2.encode(SENTENCES[:4])).max() < 0.99


def test_gemma3_is_bidirectional_and_reads_bulgarian() -> None:
    gemma = LM2Vec.from_pretrained("pkg:gemma3-270m", device="cpu")
    assert gemma.model.config.model_type == "gemma3_text"
    texts = ["София е столицата на България.", "Столицата на България е София.", "Котката спи на дивана."]
    embeddings = gemma.encode(texts, normalize=True)
    assert embeddings.shape == (3, gemma.get_sentence_embedding_dimension())
    assert np.isfinite(embeddings).all()
