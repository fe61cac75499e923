"""Running MNTP: `train_mntp`."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from transformers import (
    TrainerCallback,
    set_seed,
)

from lm2vec.artifacts import write_json_atomic
from lm2vec.modeling.loading import default_device, default_dtype
from lm2vec.training.adapters import save_adapter
from lm2vec.training.arguments import training_arguments
from lm2vec.training.callbacks import read_log, shared_callbacks
from lm2vec.training.checkpoints import resume_checkpoint
from lm2vec.training.masking import MNTPCollator, mask_token_for
from lm2vec.training.mntp.data import PackedBlocks, prepare_data, streamed_data
from lm2vec.training.mntp.model import build_mntp_model, load_causal_lm
from lm2vec.training.mntp.options import MNTPConfig
from lm2vec.training.mntp.trainer import MNTPTrainer, masked_accuracy
from lm2vec.training.results import TrainingResult

logger = logging.getLogger(__name__)

CONFIG_FILE = "mntp_config.json"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"


def train_mntp(
    options: MNTPConfig, resume: bool = False, callbacks: list[TrainerCallback] | tuple = ()
) -> TrainingResult:
    """Run MNTP; with `resume`, continue from the latest checkpoint in `options.output_dir`."""
    checkpoint = resume_checkpoint(options, resume)
    output_dir = Path(options.output_dir)
    # bf16 weights on GPUs (the LoRA weights stay fp32), fp32 on CPUs without bf16 hardware.
    dtype = default_dtype(default_device())
    causal_lm, tokenizer, _ = load_causal_lm(options.model, options.attn_implementation, dtype, options.prune_layers)
    set_seed(options.seed)  # the LoRA initialisation
    model = build_mntp_model(causal_lm, options)
    collator = MNTPCollator.for_tokenizer(
        tokenizer, causal_lm.config.vocab_size, options.mask_prob, options.mask_strategy, options.mask_token
    )
    has_eval = options.eval_steps is not None or options.eval_on_start
    args = training_arguments(options, label_names=["labels"])
    samples = options.max_steps * options.per_device_batch_size * options.gradient_accumulation_steps
    if options.streaming:
        train_blocks = None  # counted only as far as the training reads them
        train_dataset, eval_blocks = streamed_data(options, tokenizer, samples * args.world_size, args.should_save)
    else:
        with args.main_process_first(desc="packing the data"):
            train_blocks, eval_blocks = prepare_data(options, tokenizer)
        train_dataset = PackedBlocks(train_blocks, samples * args.world_size, options.seed)
    eval_dataset = PackedBlocks(eval_blocks, None, f"eval-{options.seed}", shuffle=False) if eval_blocks else None
    # Step 0 evaluates the bidirectional model before MNTP (LoRA B is still zero).
    args.eval_on_start = bool(options.eval_on_start and eval_dataset is not None and checkpoint is None)
    tokens_per_step = samples // options.max_steps * args.world_size * options.max_seq_length
    trainer = MNTPTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if has_eval else None,
        data_collator=collator,
        compute_metrics=masked_accuracy,
        callbacks=[*shared_callbacks(options.output_dir), *callbacks],
        tokens_per_step=tokens_per_step,
    )
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        mask_token, mask_id = mask_token_for(tokenizer, options.mask_token)
        summary = {
            **asdict(options),
            "mask_token_used": mask_token,
            "mask_token_id": mask_id,
            "train_blocks": len(train_blocks) if train_blocks is not None else None,
            "eval_blocks": len(eval_blocks) if eval_blocks else 0,
            "world_size": args.world_size,
        }
        write_json_atomic(output_dir / CONFIG_FILE, summary)
        logger.info(
            "MNTP: %s training blocks of %d tokens (%s), %d eval blocks, mask token %r (id %d).",
            summary["train_blocks"] or "streamed",
            options.max_seq_length,
            f"{samples * args.world_size / len(train_blocks):.2f} passes" if train_blocks else "read as needed",
            summary["eval_blocks"],
            mask_token,
            mask_id,
        )
    evaluate = eval_dataset is not None and has_eval
    trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {}
    if evaluate:
        done = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
        metrics = done[-1] if done else trainer.evaluate()
    adapter_dir = output_dir / ADAPTER_DIR
    merged_dir = None
    if trainer.is_world_process_zero():
        save_adapter(model.backbone, adapter_dir, tokenizer)
        if options.merge:
            from lm2vec.modeling.export import export_encoder

            merged_dir = output_dir / MERGED_DIR
            export_encoder(options.model, merged_dir, adapters=[adapter_dir], device="cpu")
    trainer.accelerator.wait_for_everyone()
    return TrainingResult(output_dir, adapter_dir, merged_dir, trainer.state.global_step, metrics, trainer)


def eval_accuracy_log(run_dir: str | Path) -> list[tuple[int, float]]:
    """(step, masked-token accuracy) of every evaluation in a run's log."""
    return [(r["step"], r["eval_accuracy"]) for r in read_log(run_dir) if "eval_accuracy" in r]
