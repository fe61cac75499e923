"""Masked next-token prediction (MNTP), step 2 of LLM2Vec: teach the bidirectional model to use the future.

Tokens are masked (see `masking`); the prediction for a masked token at position i is read from the output at
position i-1, as in causal language modelling, so the pretrained LM head keeps its meaning. Only the LoRA adapter
on the backbone trains; the LM head is applied to the labelled positions alone (`sparse_lm_head`), which skips
about 80% of the vocabulary projection at 20% masking.

    train_mntp(MNTPConfig(model="pkg:smollm2", data="corpus/en", max_steps=1000))
    lm2vec train mntp --recipe recipe.toml --set data=corpus/en --set max_steps=1000 [--resume]

A run folder holds checkpoints (adapter + optimizer + RNG states), `log.jsonl`, `loss.png`, TensorBoard events,
`mntp_config.json` and, at the end, `adapter/` (load with `LM2Vec.from_pretrained(model, adapters=[...])`) and,
with `merge=true`, `merged/` (an encoder folder with the adapter merged in).

Layout (as tevatron splits a retriever): `options` (`MNTPConfig`), `data` (texts, packed blocks), `model`
(`MNTPModel`, loading the causal LM), `trainer` (`MNTPTrainer`), `driver` (`train_mntp`); what every stage shares
is in `lm2vec.training`: `options`, `adapters` (LoRA), `arguments`, `trainer`, `checkpoints` and `results`.
"""

from lm2vec.training.mntp.data import PackedBlocks, pack_blocks, prepare_data
from lm2vec.training.mntp.driver import ADAPTER_DIR, CONFIG_FILE, MERGED_DIR, eval_accuracy_log, train_mntp
from lm2vec.training.mntp.model import MNTPModel, build_mntp_model, load_causal_lm
from lm2vec.training.mntp.options import MNTPConfig
from lm2vec.training.mntp.trainer import MNTPTrainer, masked_accuracy

__all__ = [
    "ADAPTER_DIR",
    "CONFIG_FILE",
    "MERGED_DIR",
    "MNTPConfig",
    "MNTPModel",
    "MNTPTrainer",
    "PackedBlocks",
    "build_mntp_model",
    "eval_accuracy_log",
    "load_causal_lm",
    "masked_accuracy",
    "pack_blocks",
    "prepare_data",
    "train_mntp",
]
