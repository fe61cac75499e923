"""Shared fixtures. Tests run offline: nothing may come from the Hugging Face hub."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.tiny_models import save_tiny_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def lm2vec_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of the test session's own, so GGUF conversion is exercised from scratch every run."""
    cache = tmp_path_factory.mktemp("lm2vec-cache")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # The workers of one run (pytest -n) share the packaged models, their conversions and the fetched
        # evaluation data: the first worker to want one makes it, the others wait for it (lm2vec.cache.cache_lock).
        # Cached embeddings stay each worker's own: tests count what their encoders encode.
        shared = tmp_path_factory.getbasetemp().parent / "lm2vec-cache-shared"
        for name in ("packages", "gguf", "eval-data"):
            (shared / name).mkdir(parents=True, exist_ok=True)
            (cache / name).symlink_to(shared / name, target_is_directory=True)
    os.environ["LM2VEC_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def converted_packaged_models(lm2vec_cache: Path) -> dict[str, Path]:
    """Each packaged model converted into the session's cache once: a test that reads only a config or a tokenizer
    then reads the converted copy rather than parsing the GGUF's metadata again (about 20 s for Gemma's)."""
    from lm2vec.modeling.sources import PACKAGED_MODELS, resolve_source

    return {alias: Path(resolve_source(f"pkg:{alias}")) for alias in PACKAGED_MODELS}


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct from its PyPI package, bidirectional, mean pooling."""
    from lm2vec import LM2Vec

    return LM2Vec.from_pretrained("pkg:smollm2")
