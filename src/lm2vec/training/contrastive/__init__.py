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
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import Trainer

from lm2vec.artifacts import atomic_folder, write_json_atomic, write_text_atomic
from lm2vec.modeling.encoder import LM2Vec
from lm2vec.modeling.export import export_encoder
from lm2vec.modeling.pooling import pool
from lm2vec.readers import read_sentences, read_supervised_pairs, sts_supervised_pairs
from lm2vec.training.common import (
    AtomicCheckpoints,
    OneProgressBar,
    add_lora,
    resume_checkpoint,
    shared_callbacks,
    training_arguments,
)
from lm2vec.training.contrastive.options import ContrastiveOptions, SimCSEOptions, SupervisedOptions
from lm2vec.training.lora import recomputing_norm_outputs
from lm2vec.training.losses import contrastive_loss

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
ENCODER_DIR = "encoder"
OPTIONS_NAME = "contrastive_options.json"
MINED_NAME = "mined.jsonl"  # the supervised records with their mined hard negatives
MIN_CROP_WORDS = 8  # shorter paragraphs give crops of a word or two


# --- data -------------------------------------------------------------------------------------------------


class ListDataset(Dataset):
    def __init__(self, items: Sequence[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


class GroupedBatchSampler(Sampler[list[int]]):
    """Per-device batches such that the `world_size` consecutive batches of one global step come from the same
    group (dataset). Accelerate hands process r the r-th of each run of `world_size` batches. Incomplete global
    batches are dropped, so every process always holds the same number of rows."""

    def __init__(self, groups: Sequence[Sequence[int]], batch_size: int, world_size: int = 1, seed: int = 0):
        self.groups = [list(g) for g in groups]
        self.batch_size, self.world_size, self.seed = batch_size, world_size, seed
        self.epoch = 0
        if len(self) == 0:
            sizes = ", ".join(str(len(g)) for g in self.groups)
            raise ValueError(f"No group (sizes {sizes}) fills one global batch of {batch_size * world_size} rows.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        step = self.batch_size * self.world_size
        return sum(len(g) // step for g in self.groups) * self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        step = self.batch_size * self.world_size
        global_batches = []
        for group in self.groups:
            order = group[:]
            rng.shuffle(order)
            global_batches += [order[i : i + step] for i in range(0, len(order) - step + 1, step)]
        rng.shuffle(global_batches)
        for batch in global_batches:
            for rank in range(self.world_size):
                yield batch[rank * self.batch_size : (rank + 1) * self.batch_size]


@dataclass
class ContrastiveCollator:
    """Records -> one collated batch: rows [queries, their positives, hard negatives] and `n_queries`.

    SimCSE records are strings (a sentence is its own positive); supervised records are dicts."""

    encoder: LM2Vec
    num_hard_negatives: int = 1
    symmetric_datasets: Sequence[str] = ()

    def __call__(self, records: Sequence[Any]) -> dict[str, torch.Tensor]:
        if isinstance(records[0], str):
            tokenized = self.encoder.tokenize(list(records))
            rows = tokenized + tokenized
        else:
            queries, documents, negatives = [], [], []
            for record in records:
                instruction = record.get("instruction") or ""
                symmetric = record.get("symmetric") or record.get("dataset") in self.symmetric_datasets
                queries.append(_with_instruction(record["query"], instruction))
                documents.append(_with_instruction(record["positive"], instruction if symmetric else ""))
                for negative in (record.get("negatives") or [])[: self.num_hard_negatives]:
                    negatives.append(_with_instruction(negative, instruction if symmetric else ""))
            rows = self.encoder.tokenize(queries + documents + negatives)
        features = self.encoder.collate(rows)
        features["n_queries"] = torch.tensor(len(records))
        return features


def _with_instruction(text: str, instruction: str) -> str | tuple[str, str]:
    return (instruction, text) if instruction else text


# --- the model ---------------------------------------------------------------------------------------------


def set_attention_dropout(backbone: nn.Module, p: float) -> float:
    """Set the attention dropout of every attention module (the float `attention_dropout` that SDPA and eager
    attention read in train mode) and of the config; returns the config's previous value."""
    config = backbone.config
    previous = float(getattr(config, "attention_dropout", 0.0) or 0.0)
    if hasattr(config, "attention_dropout"):
        config.attention_dropout = p
    found = False
    for module in backbone.modules():
        if isinstance(getattr(module, "attention_dropout", None), float | int) and not isinstance(
            module.attention_dropout, bool
        ):
            module.attention_dropout = p
            found = True
    if not found and p > 0:
        raise ValueError(f"{type(backbone).__name__} has no attention module with an `attention_dropout` to set.")
    return previous


def embed(encoder: LM2Vec, backbone: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """`LM2Vec.forward`'s sentence embedding, run through `backbone` (the LoRA-wrapped, possibly DDP-wrapped
    training model): the same call and the same `pool` with the encoder's pooling config."""
    with recomputing_norm_outputs():  # norm outputs kept by add_lora's fused layers are recomputed, not stored
        hidden = backbone(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).last_hidden_state
    return pool(hidden, features["attention_mask"], features["pool_mask"], encoder.config.pooling)


def mini_batches(features: dict[str, torch.Tensor], size: int) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Split a collated batch into length-sorted sub-batches, each trimmed to its own longest row.

    Returns (row indices, sub-batch) pairs; with size 0 one sub-batch holds every row in order."""
    rows = features["input_ids"].shape[0]
    keys = ("input_ids", "attention_mask", "pool_mask")
    if size <= 0 or size >= rows:
        return [(torch.arange(rows), {k: features[k] for k in keys})]
    lengths = features["attention_mask"].sum(1).cpu()
    order = torch.argsort(lengths, descending=True, stable=True)
    result = []
    for start in range(0, rows, size):
        index = order[start : start + size]
        longest = int(lengths[index].max())
        device_index = index.to(features["input_ids"].device)
        result.append((index, {k: features[k][device_index, :longest] for k in keys}))
    return result


class RandomState:
    """The CPU (and current CUDA device's) random state, to replay dropout exactly when a sub-batch is re-run."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


def _no_sync(model: nn.Module, sync: bool):
    return model.no_sync() if not sync and hasattr(model, "no_sync") else nullcontext()


def batch_loss(
    encoder: LM2Vec, backbone: nn.Module, features: dict[str, torch.Tensor], options: ContrastiveOptions
) -> torch.Tensor:
    """The contrastive loss of one collated batch; with `options.cached` the returned loss is detached from the
    model and back-propagates through it (sub-batch by sub-batch) when `.backward()` reaches it."""
    n = int(features["n_queries"])
    parts = mini_batches(features, options.mini_batch_size)
    rows = features["input_ids"].shape[0]

    def assemble(embeddings: list[torch.Tensor]) -> torch.Tensor:
        out = embeddings[0].new_empty((rows, embeddings[0].shape[-1]))
        for (index, _), part in zip(parts, embeddings, strict=True):
            out = out.index_put((index.to(out.device),), part)
        return out

    def loss_of(all_rows: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(
            all_rows[:n], all_rows[n:], options.temperature, options.gather_across_processes, options.matryoshka_dims
        )

    if not options.cached or not torch.is_grad_enabled():
        return loss_of(assemble([embed(encoder, backbone, part) for _, part in parts]))

    states, cached = [], []
    with torch.no_grad():
        for _, part in parts:
            states.append(RandomState())
            cached.append(embed(encoder, backbone, part))
    after = RandomState()
    reps = assemble(cached).detach().requires_grad_()
    with torch.enable_grad():
        loss = loss_of(reps)
        loss.backward()
    gradients = reps.grad
    loss = loss.detach().requires_grad_()

    def backward_hook(grad_output: torch.Tensor) -> None:
        with torch.enable_grad():
            for number, ((index, part), state) in enumerate(zip(parts, states, strict=True)):
                state.restore()
                with _no_sync(backbone, sync=number == len(parts) - 1):
                    embedding = embed(encoder, backbone, part)
                    grad = gradients[index.to(gradients.device)].to(embedding.dtype)
                    surrogate = (embedding * grad).sum() * grad_output.to(embedding.dtype)
                    surrogate.backward()
        after.restore()

    loss.register_hook(backward_hook)
    return loss


class ContrastiveTrainer(AtomicCheckpoints, OneProgressBar, Trainer):
    """Trainer whose model is the LoRA-wrapped backbone; the loss is `batch_loss` on collated text batches."""

    def __init__(self, *args, encoder: LM2Vec, options: ContrastiveOptions, batch_sampler: Sampler, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder, self.options, self.batch_sampler = encoder, options, batch_sampler

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self.batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = batch_loss(self.encoder, model, inputs, self.options)
        return (loss, {}) if return_outputs else loss


# --- running a stage ---------------------------------------------------------------------------------------


@dataclass
class ContrastiveResult:
    output_dir: Path
    adapter_dir: Path  # relative to the base model with `options.adapters` merged
    encoder_dir: Path | None  # the merged export, if `options.export`
    global_step: int


def crop_pairs(paragraphs: Sequence[str], ratio: Sequence[float], seed: int = 0) -> list[dict[str, str]]:
    """Two independent random word spans of each paragraph as a (query, positive) pair, each `ratio` (low, high)
    of its words, drawn once with `seed` so a resumed run sees the same pairs."""
    rng = random.Random(seed)
    pairs = []
    for paragraph in paragraphs:
        words = paragraph.split()
        if len(words) < MIN_CROP_WORDS:
            continue
        spans = []
        for _ in range(2):
            length = max(1, round(rng.uniform(*ratio) * len(words)))
            start = rng.randrange(len(words) - length + 1)
            spans.append(" ".join(words[start : start + length]))
        pairs.append({"query": spans[0], "positive": spans[1], "dataset": "crops"})
    if not pairs:
        raise ValueError(f"No paragraph has the {MIN_CROP_WORDS} words two crops need.")
    return pairs


def train_simcse(options: SimCSEOptions, resume: bool = False) -> ContrastiveResult:
    """Unsupervised SimCSE on `options.data`: sentences and themselves, or crops of paragraphs."""
    if options.positives == "crops":
        paragraphs = read_sentences(options.data, options.text_field, kind="paragraphs")
        items: Sequence[Any] = crop_pairs(paragraphs, options.crop_ratio, options.seed)
    else:
        items = read_sentences(options.data, options.text_field)
    return _train(options, items, [range(len(items))], resume)


def supervised_records(options: SupervisedOptions) -> list[dict[str, Any]]:
    """The JSONL records of `options.data`, or its sentence-similarity pairs as records."""
    if Path(options.data).suffix in (".csv", ".tsv"):
        return sts_supervised_pairs(options.data, options.min_pair_score, options.sts_instruction)
    return read_supervised_pairs(options.data)


def query_instruction(options: SupervisedOptions) -> str:
    """The instruction most training queries carried (empty if none had one): the default for retrieval."""
    counts = Counter(record["instruction"] for record in supervised_records(options))
    return counts.most_common(1)[0][0]


def train_supervised(options: SupervisedOptions, resume: bool = False) -> ContrastiveResult:
    """Supervised contrastive training on the JSONL records (or sentence-similarity pairs) in `options.data`."""
    records = supervised_records(options)
    if options.homogeneous_batches:
        by_dataset: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            by_dataset.setdefault(record["dataset"], []).append(index)
        groups = list(by_dataset.values())
    else:
        groups = [range(len(records))]
    return _train(options, records, groups, resume)


def mined_records(
    encoder: LM2Vec, records: Sequence[dict[str, Any]], options: SupervisedOptions, write: bool = True
) -> list[dict]:
    """The records with hard negatives mined by `encoder` (the model training starts from), from
    OUTPUT/mined.jsonl when an earlier attempt of this run wrote it, so a resumed run trains on the same ones."""
    from lm2vec.training.mining import MiningOptions, mine_hard_negatives

    path = Path(options.output_dir) / MINED_NAME
    if path.is_file():
        mined = read_supervised_pairs(path)
        if len(mined) == len(records):
            return mined
    mining = MiningOptions(options.mine_negatives, relative_margin=options.mining_relative_margin)
    corpus = list(dict.fromkeys(record["positive"] for record in records))
    mined = mine_hard_negatives(encoder, list(records), corpus, mining)
    if write:  # the main process; the others mined the same negatives
        write_text_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in mined))
    return mined


def _train(
    options: ContrastiveOptions, items: Sequence[Any], groups: Sequence[Sequence[int]], resume: bool
) -> ContrastiveResult:
    if not options.data:
        raise ValueError("Set `data`: the training texts.")
    checkpoint = resume_checkpoint(options, resume)
    args = training_arguments(options)
    encoder = LM2Vec.from_pretrained(
        options.model,
        adapters=options.adapters,
        pooling=options.pooling,
        max_length=options.max_length,
        device=args.device,
    )
    if getattr(options, "mine_negatives", 0):
        items = mined_records(encoder, items, options, write=args.process_index == 0)
    if too_large := [d for d in options.matryoshka_dims if d > encoder.get_sentence_embedding_dimension()]:
        raise ValueError(
            f"matryoshka_dims {too_large} are larger than the model's {encoder.get_sentence_embedding_dimension()}."
        )
    encoder.config.matryoshka_dims = sorted(set(options.matryoshka_dims))
    original_dropout = set_attention_dropout(encoder.model, options.dropout)
    encoder.model = add_lora(encoder.model, options)
    if args.process_index == 0:
        logger.info("trainable parameters: %s", encoder.model.get_nb_trainable_parameters())
    sampler = GroupedBatchSampler(groups, options.per_device_batch_size, args.world_size, options.seed)
    collator = ContrastiveCollator(
        encoder,
        num_hard_negatives=getattr(options, "num_hard_negatives", 0),
        symmetric_datasets=tuple(getattr(options, "symmetric_datasets", ())),
    )
    trainer = ContrastiveTrainer(
        model=encoder.model,
        args=args,
        train_dataset=ListDataset(items),
        data_collator=collator,
        callbacks=shared_callbacks(options),
        encoder=encoder,
        options=options,
        batch_sampler=sampler,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    output = Path(options.output_dir)
    if trainer.is_world_process_zero():
        peft_model = encoder.model
        with atomic_folder(output / ADAPTER_DIR, replaceable=True) as folder:  # the training folder is lm2vec's
            peft_model.save_pretrained(folder)
        write_json_atomic(output / OPTIONS_NAME, asdict(options))
        if options.export:
            encoder.model = peft_model.merge_and_unload()
            set_attention_dropout(encoder.model, original_dropout)
            encoder.model.eval()
            export_encoder(encoder, output / ENCODER_DIR)
    trainer.accelerator.wait_for_everyone()
    encoder_dir = output / ENCODER_DIR if options.export else None
    return ContrastiveResult(output, output / ADAPTER_DIR, encoder_dir, trainer.state.global_step)


# The readers under the names this module has always had (lm2vec.readers reads every shared input format).
load_sentences = read_sentences
load_pairs = read_supervised_pairs
load_sts_pairs = sts_supervised_pairs
