"""From a trained encoder to retrieval: passage indexes on disk (`lm2vec index`, `lm2vec search`) and an
OpenAI-compatible embedding and search service (`lm2vec serve`)."""
