"""What every training stage shares: the run options, LoRA on the backbone, and the Trainer's arguments.

Convention: LoRA adapters are always trained on, saved from and merged into the *backbone* (`AutoModel`, no LM
head), so `LM2Vec.from_pretrained(base, adapters=[mntp, simcse])` can merge any stage's adapter.

A training folder is lm2vec's once it holds `lm2vec_training.json` (`lm2vec.artifacts`); a non-empty folder
without it is refused. Checkpoints are written into a hidden sibling and renamed to `checkpoint-N` when complete
(`AtomicCheckpoints`); resuming skips, reports and removes an incomplete one left by an older version or a
damaged disk, and falls back to the previous complete one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from lm2vec.artifacts import (
    atomic_folder,
    claim_folder,
    remove_leftovers,
    remove_path,
    temporary_sibling,
    write_json_atomic,
    write_jsonl_atomic,
)
from lm2vec.console import hide_progress_bars_unless_terminal
from lm2vec.recipe import failed_checks
from lm2vec.training.callbacks import (
    LOG_NAME,
    JsonlLogCallback,
    LossPlotCallback,
    ResumableTensorBoard,
    StageProgress,
    read_log,
)
from lm2vec.training.lora import fuse_lora_layers, mark_norm_outputs

logger = logging.getLogger(__name__)

TRAINING_RECORD = "lm2vec_training.json"
TRAINING_FORMAT = "lm2vec-training"
_CHECKPOINT = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors")


@dataclass
class TrainingOptions:
    """Options every stage has; a stage's config dataclass inherits them and adds its own."""

    output_dir: str = field(
        default="runs/stage",
        metadata={"help": "folder for the checkpoints, the adapter and the logs"},
    )
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps to train"})
    per_device_batch_size: int = field(default=8, metadata={"help": "examples per batch on each device"})
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={"help": "batches whose gradients are summed before each optimizer step"},
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate of the linear schedule"})
    warmup_steps: int = field(default=0, metadata={"help": "steps of linear warmup from 0 to learning_rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute activations in the backward pass: less memory, more time"},
    )
    logging_steps: int = field(default=10, metadata={"help": "log loss and learning rate every this many steps"})
    save_steps: int = field(default=200, metadata={"help": "write a checkpoint (to resume from) every this many steps"})
    save_total_limit: int | None = field(
        default=3,
        metadata={"help": "keep at most this many checkpoints, the oldest removed first; none keeps all"},
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "evaluate on the held-out data every this many steps; none: not during training"},
    )
    seed: int = field(
        default=42,
        metadata={"help": "random seed of the LoRA initialisation, data order, masking and dropout"},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (paper: 16)"})
    lora_alpha: int = field(
        default=32,
        metadata={"help": "LoRA scaling alpha; the update is scaled by alpha / r (paper: 32)"},
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input (paper: 0.05)"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": 'modules that get LoRA adapters: their names, or "all-linear" for every linear projection'},
    )
    fused_lora: bool = field(
        default=True,
        metadata={
            "help": (
                "Fused LoRA layers where they apply (faster, far fewer saved activations: lm2vec.training.lora); "
                "false uses peft's own layers (the same function and adapter files)."
            )
        },
    )

    def __post_init__(self) -> None:
        if problems := self.problems():
            raise ValueError(" ".join(problems))

    def problems(self) -> list[str]:
        """Every option out of range, so a recipe is refused before any work with all its mistakes named;
        a stage's config adds its own."""
        checks = [
            (self.max_steps >= 1, f"max_steps must be at least 1, got {self.max_steps}."),
            (
                self.per_device_batch_size >= 1,
                f"per_device_batch_size must be at least 1, got {self.per_device_batch_size}.",
            ),
            (
                self.gradient_accumulation_steps >= 1,
                f"gradient_accumulation_steps must be at least 1, got {self.gradient_accumulation_steps}.",
            ),
            (self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}."),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}."),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}."),
            (self.logging_steps >= 1, f"logging_steps must be at least 1, got {self.logging_steps}."),
            (self.save_steps >= 1, f"save_steps must be at least 1, got {self.save_steps}."),
            (
                self.save_total_limit is None or self.save_total_limit >= 1,
                f"save_total_limit must be at least 1 (or none), got {self.save_total_limit}.",
            ),
            (
                self.eval_steps is None or self.eval_steps >= 1,
                f"eval_steps must be at least 1 (or none), got {self.eval_steps}.",
            ),
            (self.lora_r >= 1, f"lora_r must be at least 1, got {self.lora_r}."),
            (self.lora_alpha > 0, f"lora_alpha must be positive, got {self.lora_alpha}."),
            (0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}."),
            (bool(self.lora_target_modules), "lora_target_modules must name at least one module."),
        ]
        return failed_checks(checks)


@dataclass
class TrainingResult:
    """What a training stage's `train_*` function returns."""

    output_dir: Path
    adapter_dir: Path  # relative to the base model with the stage's starting adapters merged
    encoder_dir: Path | None  # the merged export (MNTP's merged/ with `merge`, contrastive encoder/ with `export`)
    global_step: int
    metrics: dict = field(default_factory=dict)  # the final evaluation's, for stages that evaluate (MNTP)
    trainer: Any = field(default=None, repr=False, compare=False)  # the Trainer that ran, with the trained model


def save_adapter(model: PeftModel, folder: Path, tokenizer=None) -> Path:
    """Write a trained LoRA adapter (and the tokenizer, if given) to `folder` atomically; the training folder is
    lm2vec's, so an earlier adapter there is replaced."""
    with atomic_folder(folder, replaceable=True) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return folder


def add_lora(backbone: PreTrainedModel, options: TrainingOptions) -> PeftModel:
    """Wrap the backbone with a fresh LoRA adapter; only the adapter's weights train.

    With `options.fused_lora`, peft's LoRA layers are switched to lm2vec's (`lm2vec.training.lora`): the same
    function and adapter files with far fewer saved activations, and the norm outputs they keep are recomputed in
    the backward pass of forwards run under `recomputing_norm_outputs()`. Raises `FusedLoraError` when the
    installed peft does not fit them (then `fused_lora = false` trains with peft's own layers)."""
    targets = options.lora_target_modules
    config = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        bias="none",
    )
    model = get_peft_model(backbone, config)
    if options.fused_lora:
        fuse_lora_layers(model)
        mark_norm_outputs(model)
    return model


def training_arguments(options: TrainingOptions, **overrides) -> TrainingArguments:
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
        bf16=on_cuda and torch.cuda.is_bf16_supported(),
        # Without CUDA, accelerate treats torchrun's processes as one-process runs unless told they are CPU ones.
        use_cpu=not on_cuda,
        dataloader_pin_memory=on_cuda,
        report_to=[],  # TensorBoard: ResumableTensorBoard in shared_callbacks
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",  # tokens/s in the progress bar, token counts in log.jsonl
    )
    return TrainingArguments(**{**settings, **overrides})


def shared_callbacks(options: TrainingOptions) -> list:
    return [JsonlLogCallback(options.output_dir), LossPlotCallback(options.output_dir), ResumableTensorBoard()]


class OneProgressBar:
    """Trainer mixin: `StageProgress` instead of the Trainer's progress bars and printed log dicts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.add_callback(StageProgress())


class AtomicCheckpoints:
    """Trainer mixin: each checkpoint is written into `.checkpoint-N.partial-staging/` and renamed to
    `checkpoint-N` once every process has written its part, so a kill during a save leaves only the
    earlier, complete checkpoints (and a hidden leftover that the next resume removes)."""

    _checkpoint_staging: str | None = None

    def _get_output_dir(self, trial) -> str:
        return self._checkpoint_staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = Path(super()._get_output_dir(trial))
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = temporary_sibling(final, writer="staging")
        self._checkpoint_staging = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpoint_staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            remove_path(final)  # an incomplete one from a killed run, at the same step
            os.replace(staging / final.name, final)
            staging.rmdir()
            rotate_checkpoints(str(run_dir), self.args.save_total_limit, self.state.best_model_checkpoint, True)
        self.accelerator.wait_for_everyone()


def is_complete_checkpoint(folder: Path) -> bool:
    """A checkpoint the Trainer can resume from: its trainer state reads and its weights are there."""
    try:
        step = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(step, int) and any((folder / name).is_file() for name in _WEIGHTS)


def last_complete_checkpoint(output_dir: Path, clean: bool) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir`. With `clean`, incomplete ones (and leftovers of
    interrupted saves) are reported and removed, so the Trainer never trips over them."""
    checkpoints = sorted(
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if (match := _CHECKPOINT.fullmatch(path.name)) and path.is_dir()
    )
    last = None
    for _, path in checkpoints:
        if is_complete_checkpoint(path):
            last = path
        elif clean:
            logger.warning("%s is incomplete (a save was interrupted): removed, not resumed from.", path)
            shutil.rmtree(path)
    if clean:
        remove_leftovers(output_dir / f"{PREFIX_CHECKPOINT_DIR}-*")
    return str(last) if last is not None else None


def claim_training_folder(options: TrainingOptions) -> None:
    """Make `output_dir` this stage's folder (main process); refuses a non-empty folder lm2vec did not make."""
    output_dir = Path(options.output_dir)
    if claim_folder(output_dir, TRAINING_RECORD, TRAINING_FORMAT) is None:
        write_json_atomic(output_dir / TRAINING_RECORD, {"format": TRAINING_FORMAT, "stage": type(options).__name__})


def resume_checkpoint(options: TrainingOptions, resume: bool) -> str | None:
    """The latest complete checkpoint to resume from; refuses to mix a new run into a folder that already has one.

    Resuming drops the log records written after that checkpoint (by a run killed later), so the log goes on
    without repeated steps; resuming a folder without checkpoints starts its log afresh."""
    is_main = os.environ.get("RANK", "0") == "0"
    if is_main:
        claim_training_folder(options)
    if not Path(options.output_dir).is_dir():
        return None
    last = last_complete_checkpoint(Path(options.output_dir), clean=is_main and resume)
    if resume:
        step = _checkpoint_step(last) if last is not None else -1
        if is_main and (dropped := truncate_log(options.output_dir, step)):
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
        write_jsonl_atomic(path, kept)
    return len(records) - len(kept)


def _checkpoint_step(checkpoint: str) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])
