"""Running a contrastive stage: `train_simcse` and `train_supervised`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch.utils.data import BatchSampler, SequentialSampler
from transformers import TrainerCallback

from lm2vec.artifacts import write_json_atomic
from lm2vec.data.readers import load_texts
from lm2vec.modeling.encoder import LM2Vec
from lm2vec.modeling.export import export_encoder
from lm2vec.training.adapters import add_lora, save_adapter
from lm2vec.training.arguments import training_arguments
from lm2vec.training.callbacks import shared_callbacks
from lm2vec.training.checkpoints import resume_checkpoint
from lm2vec.training.contrastive.data import (
    ContrastiveCollator,
    GroupedBatchSampler,
    ListDataset,
    crop_pairs,
    mined_records,
    query_instruction,
    simcse_stream,
    supervised_data,
)
from lm2vec.training.contrastive.model import set_attention_dropout
from lm2vec.training.contrastive.options import ContrastiveOptions, SimCSEOptions, SupervisedOptions
from lm2vec.training.contrastive.trainer import ContrastiveTrainer
from lm2vec.training.results import TrainingResult, encoder_config, record_in_training_folder

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
ENCODER_DIR = "encoder"
OPTIONS_NAME = "contrastive_options.json"


def train_simcse(
    options: SimCSEOptions, resume: bool = False, callbacks: list[TrainerCallback] | tuple = ()
) -> TrainingResult:
    """Unsupervised SimCSE on `options.data`: sentences and themselves, or crops of paragraphs."""
    if options.streaming:
        # The Trainer's arguments are made later; torchrun and accelerate launch set these.
        world_size, is_main = int(os.environ.get("WORLD_SIZE", "1")), os.environ.get("RANK", "0") == "0"
        steps = options.max_steps * options.gradient_accumulation_steps
        stream = simcse_stream(options, steps * options.per_device_batch_size * world_size, is_main)
        return _train(options, stream, None, resume, callbacks)
    if options.positives == "crops":
        paragraphs = load_texts(options.data, "paragraphs", options.text_field)
        items: Sequence[Any] = crop_pairs(paragraphs, options.crop_ratio, options.seed, options.positive_crop_ratio)
    else:
        items = load_texts(options.data, "sentences", options.text_field)
    return _train(options, items, [range(len(items))], resume, callbacks)


def train_supervised(
    options: SupervisedOptions, resume: bool = False, callbacks: list[TrainerCallback] | tuple = ()
) -> TrainingResult:
    """Supervised contrastive training on the records of `options.data` (`supervised_data`: one path or a mixture),
    each batch from one dataset of one path; the instruction most of their queries carry is recorded in the training
    folder as the export's query instruction."""
    data = supervised_data(options)
    groups = data.groups if options.homogeneous_batches else [range(len(data.records))]
    return _train(options, data.records, groups, resume, callbacks, query_instruction(data.records), data.sources)


def _train(
    options: ContrastiveOptions,
    items: Sequence[Any],
    groups: Sequence[Sequence[int]] | None,
    resume: bool,
    callbacks: list[TrainerCallback] | tuple = (),
    instruction: str = "",
    sources: Sequence[range] | None = None,
) -> TrainingResult:
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
        prune_layers=options.prune_layers,
    )
    if too_large := [d for d in options.matryoshka_dims if d > encoder.get_sentence_embedding_dimension()]:
        raise ValueError(
            f"matryoshka_dims {too_large} are larger than the model's {encoder.get_sentence_embedding_dimension()}."
        )
    if groups is None:  # items already in training order (streamed)
        sampler = BatchSampler(SequentialSampler(items), options.per_device_batch_size, drop_last=True)
    else:
        sampler = GroupedBatchSampler(groups, options.per_device_batch_size, args.world_size, options.seed)
    if getattr(options, "mine_negatives", 0):
        drawn = sampler.records_drawn(options.max_steps * options.gradient_accumulation_steps)
        items = mined_records(encoder, items, options, args.process_index == 0, sources, drawn)
    original_dropout = set_attention_dropout(encoder.model, options.dropout)
    encoder.model = add_lora(encoder.model, options)
    if args.process_index == 0:
        logger.info("trainable parameters: %s", encoder.model.get_nb_trainable_parameters())
    collator = ContrastiveCollator(
        encoder,
        num_hard_negatives=getattr(options, "num_hard_negatives", 0),
        symmetric_datasets=tuple(getattr(options, "symmetric_datasets", ())),
        min_positive_score=getattr(options, "min_pair_score", 4.0),
    )
    trainer = ContrastiveTrainer(
        model=encoder.model,
        args=args,
        train_dataset=ListDataset(items),
        data_collator=collator,
        callbacks=[*shared_callbacks(options.output_dir), *callbacks],
        encoder=encoder,
        options=options,
        batch_sampler=sampler,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    output = Path(options.output_dir)
    if trainer.is_world_process_zero():
        peft_model = encoder.model
        save_adapter(peft_model, output / ADAPTER_DIR)
        write_json_atomic(output / OPTIONS_NAME, asdict(options))
        record_in_training_folder(output, query_instruction=instruction)
        if options.export and trainer.sharded:  # the frozen weights are sharded: merge the adapter as saved
            adapters = [*options.adapters, output / ADAPTER_DIR]
            export_encoder(options.model, output / ENCODER_DIR, config=encoder_config(options), adapters=adapters)
        elif options.export:
            encoder.model = peft_model.merge_and_unload()
            set_attention_dropout(encoder.model, original_dropout)
            encoder.model.eval()
            export_encoder(encoder, output / ENCODER_DIR, config=encoder_config(options))
    trainer.accelerator.wait_for_everyone()
    encoder_dir = output / ENCODER_DIR if options.export else None
    return TrainingResult(output, output / ADAPTER_DIR, encoder_dir, trainer.state.global_step, trainer=trainer)
