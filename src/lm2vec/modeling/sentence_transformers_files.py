"""The files that make an encoder folder a sentence-transformers model: its modules, pooling and prompts, and a
tokenizer that pools the token lm2vec pools.

They are written in the layout other engines read too. vLLM finds the pooling through the module type
`sentence_transformers.models.Pooling` and the `pooling_mode_*` flag that is true (vllm/transformers_utils/config.py,
`get_pooling_config`); text-embeddings-inference parses those flags from `1_Pooling/config.json` (router/src/lib.rs,
`PoolConfig`). sentence-transformers 6 still loads that layout: it maps the old module paths to its new ones and
prefers `pooling_mode` to the flags."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from lm2vec.modeling.config import EncoderConfig
from lm2vec.modeling.pooling import SENTENCE_TRANSFORMERS_MODES

# sentence-transformers' pooling modes and the flag each had before `pooling_mode`, which vLLM and TEI still read.
POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def tokenizer_for_export(tokenizer: PreTrainedTokenizerBase, config: EncoderConfig) -> PreTrainedTokenizerBase:
    """For last-token pooling the saved tokenizer appends EOS itself, so loaders that know nothing of lm2vec
    (sentence-transformers) pool the same token. `tokenize` drops and re-adds it, so lm2vec is unaffected."""
    if config.pooling != "last_token":
        return tokenizer
    exported = copy.deepcopy(tokenizer)
    probe = tokenizer("a")["input_ids"]
    # transformers rebuilds the post-processor from these two flags and saves them with the tokenizer.
    exported.add_bos_token = bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id
    exported.add_eos_token = True
    return exported


def write_sentence_transformers_files(folder: Path, config: EncoderConfig, dimension: int) -> None:
    """The module files sentence-transformers reads: the transformer at the folder root, then pooling."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    mode = SENTENCE_TRANSFORMERS_MODES[config.pooling]
    pooling = {
        "embedding_dimension": dimension,
        "pooling_mode": mode,
        "include_prompt": False,
        **{flag: flag_mode == mode for flag_mode, flag in POOLING_FLAGS.items()},
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": config.max_length}) + "\n")
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps(sentence_transformers_prompts(config), indent=2) + "\n"
    )


def sentence_transformers_prompts(config: EncoderConfig) -> dict[str, Any]:
    """config_sentence_transformers.json: with a trained query instruction, `encode` and `encode_query` put it
    in front (as lm2vec does for queries and symmetric tasks), `encode_document` does not."""
    prompts: dict[str, str] = {}
    if config.query_instruction:
        prompts = {"query": config.instruction_template.format(instruction=config.query_instruction), "document": ""}
    return {
        "model_type": "SentenceTransformer",
        "prompts": prompts,
        "default_prompt_name": "query" if prompts else None,
        "similarity_fn_name": "cosine",
    }
