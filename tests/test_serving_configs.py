"""An exported encoder carries every key vLLM and text-embeddings-inference read to serve it bidirectionally with its
pooling (README, "Serving with vLLM and TEI"), for each architecture whose bidirectional path those engines have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm2vec import LM2Vec
from tests.tiny_models import save_tiny_model

# The class name in `architectures` that vLLM's model registry maps to a model reading the bidirectional flag.
VLLM_ARCHITECTURES = {
    "llama": "LlamaModel",
    "mistral": "MistralModel",
    "qwen2": "Qwen2Model",
    "gemma3_text": "Gemma3TextModel",
}
# vLLM's get_pooling_config: the pooling module's type, and the flag set true in its config.json.
VLLM_POOLING_MODULE = "sentence_transformers.models.Pooling"
POOLING_FLAG = {"mean": "pooling_mode_mean_tokens", "last_token": "pooling_mode_lasttoken"}
# TEI's PoolConfig: flags it requires in 1_Pooling/config.json.
TEI_POOLING_FLAGS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
)


@pytest.mark.parametrize("pooling", ["mean", "last_token"])
@pytest.mark.parametrize("model_type", sorted(VLLM_ARCHITECTURES))
def test_the_export_carries_what_vllm_and_tei_read(model_type: str, pooling: str, tmp_path) -> None:
    source = save_tiny_model(model_type, tmp_path / "source")
    LM2Vec.from_pretrained(source, device="cpu", pooling=pooling, max_length=64).save_pretrained(tmp_path / "model")
    model = tmp_path / "model"

    config = _json(model / "config.json")
    assert config["architectures"] == [VLLM_ARCHITECTURES[model_type]]
    assert config["is_causal"] is False  # vLLM's Llama, Mistral and Qwen2 layers
    assert config["use_bidirectional_attention"] is True  # vLLM's Gemma3TextModel sets is_causal from it

    modules = _json(model / "modules.json")
    pooling_module = next(module for module in modules if module["type"] == VLLM_POOLING_MODULE)
    pooling_config = _json(model / pooling_module["path"] / "config.json")
    assert [flag for flag, value in pooling_config.items() if value is True] == [POOLING_FLAG[pooling]]
    assert all(isinstance(pooling_config[flag], bool) for flag in TEI_POOLING_FLAGS)
    assert _json(model / "sentence_bert_config.json")["max_seq_length"] == 64


def _json(path: Path):
    return json.loads(path.read_text())
