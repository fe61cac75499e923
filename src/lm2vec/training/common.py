"""What every training stage shares: the run options, LoRA on the backbone, and the Trainer's arguments.

Convention: LoRA adapters are always trained on, saved from and merged into the *backbone* (`AutoModel`, no LM
head), so `LM2Vec.from_pretrained(base, adapters=[mntp, simcse])` can merge any stage's adapter.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from lm2vec.training.callbacks import LOG_NAME, JsonlLogCallback, LossPlotCallback, read_log
from lm2vec.training.lora import fuse_lora_layers, mark_norm_outputs

logger = logging.getLogger(__name__)


@dataclass
class TrainingOptions:
    """Options every stage has; a stage's config dataclass inherits them and adds its own."""

    output_dir: str = "runs/stage"
    max_steps: int = 1000
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int | None = 3
    eval_steps: int | None = None
    seed: int = 42
    # LoRA, paper defaults: r=16, alpha=32, dropout 0.05, every linear projection.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])


def add_lora(backbone: PreTrainedModel, options: TrainingOptions, fused: bool = True) -> PeftModel:
    """Wrap the backbone with a fresh LoRA adapter; only the adapter's weights train.

    With `fused`, peft's LoRA layers are switched to lm2vec's (`lm2vec.training.lora`): the same function and
    adapter files with far fewer saved activations, and the norm outputs they keep are recomputed in the backward
    pass of forwards run under `recomputing_norm_outputs()`."""
    targets = options.lora_target_modules
    config = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        bias="none",
    )
    model = get_peft_model(backbone, config)
    if fused:
        fuse_lora_layers(model)
        mark_norm_outputs(model)
    return model


def training_arguments(options: TrainingOptions, **overrides) -> TrainingArguments:
    """Trainer arguments from a stage's options: bf16 on CUDA, fp32 on CPU, TensorBoard logs, checkpoints."""
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
        bf16=on_cuda and torch.cuda.is_bf16_supported(),
        # Without CUDA, accelerate treats torchrun's processes as one-process runs unless told they are CPU ones.
        use_cpu=not on_cuda,
        dataloader_pin_memory=on_cuda,
        report_to=["tensorboard"],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    return TrainingArguments(**{**settings, **overrides})


def shared_callbacks(options: TrainingOptions) -> list:
    return [JsonlLogCallback(options.output_dir), LossPlotCallback(options.output_dir)]


def resume_checkpoint(options: TrainingOptions, resume: bool) -> str | None:
    """The latest checkpoint to resume from; refuses to mix a new run into a folder that already has one.

    Resuming drops the log records written after that checkpoint (by a run killed later), so the log goes on
    without repeated steps; resuming a folder without checkpoints starts its log afresh."""
    if not Path(options.output_dir).is_dir():
        return None
    last = get_last_checkpoint(options.output_dir)
    if resume:
        step = _checkpoint_step(last) if last is not None else -1
        if os.environ.get("RANK", "0") == "0" and (dropped := truncate_log(options.output_dir, step)):
            logger.info("Dropped %d log records written after step %d.", dropped, step)
        return last
    if last is not None:
        raise FileExistsError(
            f"{options.output_dir} already holds checkpoints ({Path(last).name}). Pass --resume to continue that "
            "run, or choose another output folder."
        )
    return None


def truncate_log(run_dir: str | Path, step: int) -> int:
    """Drop log records after `step`; returns how many were dropped."""
    path = Path(run_dir) / LOG_NAME
    records = read_log(run_dir)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) < len(records):
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    return len(records) - len(kept)


def _checkpoint_step(checkpoint: str) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])
