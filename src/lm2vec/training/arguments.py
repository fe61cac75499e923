"""The Trainer's arguments from a stage's options: bf16 on CUDA, fp32 on CPU, checkpoints, logging, seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from lm2vec.console import hide_progress_bars_unless_terminal
from lm2vec.modeling.loading import default_device, default_dtype
from lm2vec.training.options import TrainingOptions


@dataclass
class StageArguments(TrainingArguments):
    """The Trainer's arguments and lm2vec's own, which `StageTrainer` reads."""

    shard_frozen_weights: bool = field(
        default=False,
        metadata={"help": "shard the frozen weights across the processes (a stage's `fsdp` option)"},
    )


def training_arguments(options: TrainingOptions, **overrides) -> StageArguments:
    """Trainer arguments from a stage's options: bf16 on CUDA, fp32 on CPU, TensorBoard logs, checkpoints."""
    hide_progress_bars_unless_terminal()
    on_cuda = torch.cuda.is_available()
    settings = dict(
        output_dir=options.output_dir,
        max_steps=options.max_steps,
        per_device_train_batch_size=options.per_device_batch_size,
        per_device_eval_batch_size=options.per_device_batch_size,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        learning_rate=options.learning_rate,
        warmup_steps=options.warmup_steps,
        weight_decay=options.weight_decay,
        activation_checkpointing=options.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if options.gradient_checkpointing else None,
        logging_steps=options.logging_steps,
        logging_first_step=True,
        save_steps=options.save_steps,
        save_total_limit=options.save_total_limit,
        eval_strategy="steps" if options.eval_steps else "no",
        eval_steps=options.eval_steps,
        seed=options.seed,
        data_seed=options.seed,
        # bf16 autocast where the weights load in bf16: on CUDA, and on a CPU inside `gpu_dtype_on_cpu()`.
        bf16=default_dtype(default_device()) == torch.bfloat16 and (not on_cuda or torch.cuda.is_bf16_supported()),
        # Without CUDA, accelerate treats torchrun's processes as one-process runs unless told they are CPU ones.
        use_cpu=not on_cuda,
        dataloader_pin_memory=on_cuda,
        report_to=[],  # TensorBoard: ResumableTensorBoard in shared_callbacks
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        shard_frozen_weights=options.fsdp,
        include_num_input_tokens_seen="non_padding",  # tokens/s in the progress bar, token counts in log.jsonl
    )
    return StageArguments(**{**settings, **overrides})
