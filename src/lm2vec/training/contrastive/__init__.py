"""Contrastive training, step 3 of LLM2Vec: unsupervised SimCSE and supervised training with hard negatives.

Both start from the backbone with its MNTP adapter merged (`LM2Vec.from_pretrained(model, adapters=[mntp])`),
add a fresh LoRA adapter and minimise InfoNCE over cosine similarities (temperature 0.05).

- SimCSE: every sentence is a query and its own positive; the two copies differ only by dropout (attention
  dropout, paper: 0.3, set on the backbone because decoder LLMs ship with 0). No instructions. With
  `positives = "crops"` the pair is two random spans of one paragraph instead (Contriever, arXiv 2112.09118).
- Supervised: JSONL records `{query, positive, negatives?, instruction?, dataset?}`; the instruction goes on the
  query (on every text for the datasets listed in `symmetric_datasets`), hard negatives join the in-batch
  negatives, and each global batch comes from one `dataset`.

Texts go through `LM2Vec.tokenize` and `LM2Vec.collate` and are pooled by the `pool` function `LM2Vec.forward`
uses, with the encoder's own pooling config, so a sentence's training embedding with dropout off is its
`encode()` embedding (tests/test_contrastive.py). Rows are sorted by length and run in sub-batches of
`mini_batch_size` rows, which saves most of the padding; with `cached=True` the sub-batches are first embedded
without a graph, the loss's gradient with respect to the embeddings is taken, and each sub-batch is re-run with
its saved random state to back-propagate it (GradCache): memory for one sub-batch, gradients of the whole batch.

Output in `output_dir`: Trainer checkpoints (`checkpoint-N/`, adapter only), `adapter/` (the LoRA adapter,
relative to the backbone with MNTP merged: load with `adapters=[mntp, adapter]`), `encoder/` (merged
`save_pretrained` export, loadable by LM2Vec, transformers and sentence-transformers), log.jsonl, loss.png and
TensorBoard event files.

Layout (as tevatron splits a retriever): `options` (the dataclasses), `data` (records, batch sampler, collator),
`model` (embedding, sub-batches, the loss), `trainer` (the Trainer subclass), `driver` (`train_simcse`,
`train_supervised`); what every stage shares is in `lm2vec.training`: `options`, `adapters` (LoRA), `arguments`,
`trainer`, `checkpoints` and `results`.
"""

from lm2vec.training.contrastive.data import (
    MIN_CROP_WORDS,
    MINED_NAME,
    ContrastiveCollator,
    GroupedBatchSampler,
    ListDataset,
    crop_pairs,
    mined_records,
    query_instruction,
    supervised_data,
)
from lm2vec.training.contrastive.driver import ADAPTER_DIR, ENCODER_DIR, OPTIONS_NAME, train_simcse, train_supervised
from lm2vec.training.contrastive.model import RandomState, batch_loss, embed, mini_batches, set_attention_dropout
from lm2vec.training.contrastive.options import POSITIVES, ContrastiveOptions, SimCSEOptions, SupervisedOptions
from lm2vec.training.contrastive.trainer import ContrastiveTrainer

__all__ = [
    "ADAPTER_DIR",
    "ENCODER_DIR",
    "MINED_NAME",
    "MIN_CROP_WORDS",
    "OPTIONS_NAME",
    "POSITIVES",
    "ContrastiveCollator",
    "ContrastiveOptions",
    "ContrastiveTrainer",
    "GroupedBatchSampler",
    "ListDataset",
    "RandomState",
    "SimCSEOptions",
    "SupervisedOptions",
    "batch_loss",
    "crop_pairs",
    "embed",
    "mined_records",
    "mini_batches",
    "query_instruction",
    "set_attention_dropout",
    "supervised_data",
    "train_simcse",
    "train_supervised",
]
