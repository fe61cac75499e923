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
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    set_seed,
)

from lm2vec.artifacts import atomic_folder, write_json_atomic
from lm2vec.modeling.encoder import backbone_of, default_device, default_dtype, load_backbone
from lm2vec.modeling.sources import resolve_source
from lm2vec.training.callbacks import read_log
from lm2vec.training.common import (
    AtomicCheckpoints,
    OneProgressBar,
    add_lora,
    resume_checkpoint,
    shared_callbacks,
    training_arguments,
)
from lm2vec.training.lora import recomputing_norm_outputs
from lm2vec.training.masking import IGNORE_INDEX, MNTPCollator, mask_token_for, sample_seed
from lm2vec.training.mntp.options import MNTPConfig

logger = logging.getLogger(__name__)

SECTION = "mntp"
CONFIG_FILE = "mntp_config.json"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"


# --- the model -------------------------------------------------------------------------------------------------
class MNTPModel(nn.Module):
    """A LoRA-wrapped bidirectional backbone and its frozen LM head, trained with the shifted MNTP loss.

    `forward(input_ids, attention_mask, labels)` returns `loss` (mean over labelled tokens, or their sum divided
    by `num_items_in_batch` when the Trainer passes it for exact gradient accumulation) and, in eval mode,
    `stats` = [[correct, labelled, summed loss]] for the masked-token accuracy."""

    accepts_loss_kwargs = True  # the Trainer then passes num_items_in_batch

    def __init__(
        self,
        backbone: nn.Module,
        lm_head: nn.Module,
        config,
        sparse_lm_head: bool = True,
        recompute_norm_outputs: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.lm_head = lm_head
        self.config = config
        self.sparse_lm_head = sparse_lm_head
        # Norm outputs that the LoRA layers keep are recomputed in the backward pass (see lora.mark_norm_outputs).
        self.recompute_norm_outputs = recompute_norm_outputs
        for parameter in lm_head.parameters():
            parameter.requires_grad_(False)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The causal LM's logits for hidden states, with the architecture's output scaling."""
        logits = self.lm_head(hidden)
        if (scale := getattr(self.config, "logit_scale", None)) is not None:  # Cohere
            logits = logits * scale
        if (divisor := getattr(self.config, "logits_scaling", None)) is not None:  # Granite
            logits = logits / divisor
        if (cap := getattr(self.config, "final_logit_softcapping", None)) is not None:  # Gemma-2/3
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        with recomputing_norm_outputs() if self.recompute_norm_outputs else contextlib.nullcontext():
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if labels is None:
            return {"logits": self.lm_logits(hidden)}
        # The token at i is predicted from the output at i-1.
        hidden, targets = hidden[:, :-1], labels[:, 1:]
        if self.sparse_lm_head:
            labelled = targets != IGNORE_INDEX
            logits = self.lm_logits(hidden[labelled]).float()
            targets = targets[labelled]
        else:
            logits = self.lm_logits(hidden).float().flatten(0, 1)
            targets = targets.flatten()
        loss_sum = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
        count = (targets != IGNORE_INDEX).sum()
        divisor = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
        if torch.is_tensor(divisor):
            divisor = divisor.to(loss_sum.device)
        output = {"loss": loss_sum / divisor}
        if not self.training:
            correct = ((logits.argmax(-1) == targets) & (targets != IGNORE_INDEX)).sum()
            output["stats"] = torch.stack([correct.float(), count.float(), loss_sum.detach().float()])[None]
        return output

    def activation_checkpointing_enable(self, **kwargs) -> None:
        self.backbone.get_base_model().activation_checkpointing_enable(**kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs) -> None:
        self.backbone.get_base_model().gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
        )


def load_causal_lm(source: str, attn_implementation: str | None = None, dtype: torch.dtype = torch.float32):
    """The causal LM of `source` (pkg alias, GGUF, folder, hub id) with bidirectional attention, verified
    (`lm2vec.modeling.encoder.load_backbone` with the LM head), its tokenizer and its resolved folder."""
    folder = resolve_source(source)
    causal_lm, tokenizer = load_backbone(folder, lm_head=True, dtype=dtype, attn_implementation=attn_implementation)
    return causal_lm, tokenizer, folder


def build_mntp_model(causal_lm: PreTrainedModel, options: MNTPConfig) -> MNTPModel:
    """LoRA on the backbone (so the adapter merges into `LM2Vec`'s `AutoModel`), LM head frozen. `add_lora`'s fused
    layers and recomputed norm outputs save about 60% of the activations (see `lm2vec.training.lora`)."""
    backbone = add_lora(backbone_of(causal_lm), options)
    return MNTPModel(backbone, causal_lm.get_output_embeddings(), causal_lm.config, options.sparse_lm_head)


# --- the data --------------------------------------------------------------------------------------------------
def load_texts(spec: str, split: str = "train", text_field: str = "text") -> datasets.Dataset | None:
    """A dataset with a `text` column from any supported source; None if it has no such split."""
    if spec.startswith("hf:"):
        name, _, config_name = spec[3:].partition(":")
        try:
            dataset = datasets.load_dataset(name, config_name or None, split=split)
        except ValueError:
            if split == "train":
                raise
            return None
        return _text_column(dataset, text_field)
    path = Path(spec)
    if path.is_dir():
        from lm2vec.data.corpus import corpus_files, is_corpus, load_corpus

        if is_corpus(path):
            if not corpus_files(path, "paragraphs", split):
                return None
            return load_corpus(path, kind="paragraphs", split=split)
        if split != "train":
            return None
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl", ".json", ".parquet"))
        if not files:
            raise FileNotFoundError(f"{path}: no .txt, .jsonl, .json or .parquet files.")
        return datasets.concatenate_datasets([_read_file(p, text_field) for p in files])
    if split != "train":
        return None
    if not path.is_file():
        raise FileNotFoundError(f"Training data not found: {spec!r} (a corpus folder, a file, or hf:NAME).")
    return _read_file(path, text_field)


def _read_file(path: Path, text_field: str) -> datasets.Dataset:
    if path.suffix in (".txt", ".jsonl"):
        from lm2vec.data.corpus import read_texts

        return read_texts(path, text_field)
    builder = {".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if builder is None:
        raise ValueError(f"{path}: unsupported file type (use .txt, .jsonl, .json or .parquet).")
    return _text_column(datasets.load_dataset(builder, data_files=str(path), split="train"), text_field)


def _text_column(dataset: datasets.Dataset, text_field: str) -> datasets.Dataset:
    if text_field not in dataset.column_names:
        raise ValueError(f"The data has no {text_field!r} column (columns: {dataset.column_names}).")
    return dataset.select_columns([text_field]).rename_column(text_field, "text") if text_field != "text" else dataset


def pack_blocks(
    texts: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, block_size: int, num_proc: int | None = None
) -> datasets.Dataset:
    """Tokenize texts (with the tokenizer's special tokens, EOS between documents) and cut the token stream into
    blocks of exactly `block_size`; the remainder of every 1000 texts is dropped, as in run_mlm."""
    eos = tokenizer.eos_token_id

    def pack(batch: dict) -> dict:
        stream: list[int] = []
        for ids in tokenizer([t for t in batch["text"] if t and t.strip()], add_special_tokens=True)["input_ids"]:
            stream.extend(ids)
            if eos is not None and ids and ids[-1] != eos:
                stream.append(eos)
        n_blocks = len(stream) // block_size
        return {"input_ids": [stream[i * block_size : (i + 1) * block_size] for i in range(n_blocks)]}

    return texts.map(
        pack,
        batched=True,
        batch_size=1000,
        remove_columns=texts.column_names,
        num_proc=num_proc,
        desc=f"Packing into {block_size}-token blocks",
    )


class PackedBlocks(torch.utils.data.Dataset):
    """`length` samples drawn pass after pass over the blocks, each pass in its own seeded order; sample j is
    masked with seed `sample_seed(seed, j)`. The order and the masks are fixed by (seed, j) alone, so the
    Trainer reads it sequentially and a resumed run continues exactly where the checkpoint left off."""

    def __init__(self, blocks: datasets.Dataset, length: int | None, seed: int | str, shuffle: bool = True):
        if len(blocks) == 0:
            raise ValueError("No training blocks: the data has fewer tokens than max_seq_length.")
        self.blocks = blocks
        self.length = length if length is not None else len(blocks)
        self.seed = seed
        self.shuffle = shuffle
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def block_index(self, sample: int) -> int:
        epoch, position = divmod(sample, len(self.blocks))
        if not self.shuffle:
            return position
        if epoch not in self._orders:
            rng = np.random.default_rng(sample_seed(self.seed, -1 - epoch))
            self._orders = {epoch: rng.permutation(len(self.blocks))}
        return int(self._orders[epoch][position])

    def __getitem__(self, sample: int) -> dict:
        if not 0 <= sample < self.length:
            raise IndexError(sample)
        block = self.blocks[self.block_index(sample)]["input_ids"]
        return {"input_ids": block, "mask_seed": sample_seed(self.seed, sample)}


def prepare_data(
    options: MNTPConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Packed training and evaluation blocks."""
    if not options.data:
        raise ValueError("No training data: set `data` (a corpus folder, a text/JSONL/Parquet file, or hf:NAME).")
    train = pack_blocks(
        load_texts(options.data, "train", options.text_field),
        tokenizer,
        options.max_seq_length,
        options.preprocessing_workers,
    )
    held_out = load_texts(options.validation_data or options.data, "validation", options.text_field)
    if options.validation_data and held_out is None:
        held_out = load_texts(options.validation_data, "train", options.text_field)
    if held_out is not None:
        evaluation = pack_blocks(held_out, tokenizer, options.max_seq_length, options.preprocessing_workers)
    elif options.validation_fraction > 0 and len(train) > 1:
        n_eval = max(1, round(len(train) * options.validation_fraction))
        split = train.train_test_split(test_size=n_eval, seed=options.seed, shuffle=True)
        train, evaluation = split["train"], split["test"]
    else:
        evaluation = None
    if evaluation is not None and options.max_eval_blocks is not None and len(evaluation) > options.max_eval_blocks:
        evaluation = evaluation.select(range(options.max_eval_blocks))
    if evaluation is not None and len(evaluation) == 0:
        evaluation = None
    return train, evaluation


# --- the Trainer -----------------------------------------------------------------------------------------------
def masked_accuracy(prediction) -> dict[str, float]:
    """From the per-batch [correct, labelled, summed loss] rows: accuracy and per-token loss on masked tokens."""
    stats = np.asarray(prediction.predictions).reshape(-1, 3)
    correct, labelled, loss_sum = stats.sum(0)
    return {"accuracy": float(correct / max(labelled, 1)), "token_loss": float(loss_sum / max(labelled, 1))}


class MNTPTrainer(AtomicCheckpoints, OneProgressBar, Trainer):
    """Reads the (already ordered) training samples sequentially, saves and restores only the LoRA adapter in
    checkpoints, and logs tokens per second."""

    def __init__(self, *args, tokens_per_step: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_per_step = tokens_per_step
        self._rate_mark: tuple[float, int] | None = None

    def _get_train_sampler(self, train_dataset=None):
        return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        model: MNTPModel = self.accelerator.unwrap_model(self.model)
        if state_dict is not None:  # FSDP / DeepSpeed hand over the gathered weights
            prefix = "backbone."
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        model.backbone.save_pretrained(output_dir, state_dict=state_dict)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        weights = load_file(os.path.join(resume_from_checkpoint, "adapter_model.safetensors"), device="cpu")
        result = set_peft_model_state_dict(model.backbone, weights)
        if result.unexpected_keys:
            raise ValueError(f"{resume_from_checkpoint}: unexpected adapter weights {result.unexpected_keys[:5]}")

    def tokens_per_second(self) -> float | None:
        now, step = time.perf_counter(), self.state.global_step
        if self._rate_mark is None or step <= self._rate_mark[1]:
            self._rate_mark = (now, step)
            return None
        start, start_step = self._rate_mark
        self._rate_mark = (now, step)
        return (step - start_step) * self.tokens_per_step / max(now - start, 1e-9)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and (rate := self.tokens_per_second()) is not None:
            logs["tokens_per_second"] = round(rate, 1)
        super().log(logs, *args, **kwargs)


class TokensPerSecondBar(TrainerCallback):
    """Shows the training throughput (tokens/s over the last steps) on the Trainer's progress bar."""

    def __init__(self, tokens_per_step: int, window: int = 10):
        self.tokens_per_step = tokens_per_step
        self.window = window
        self.times: list[float] = []
        self.trainer: Trainer | None = None

    def on_step_end(self, args, state, control, **kwargs):
        self.times = [*self.times[-self.window :], time.perf_counter()]
        bar = self._bar()
        if bar is not None and len(self.times) > 1:
            rate = (len(self.times) - 1) * self.tokens_per_step / max(self.times[-1] - self.times[0], 1e-9)
            bar.set_postfix({"tok/s": f"{rate:.0f}"}, refresh=False)

    def _bar(self):
        if self.trainer is None:
            return None
        for callback in self.trainer.callback_handler.callbacks:
            if isinstance(callback, ProgressCallback):
                return callback.training_bar
        return None


@dataclass
class MNTPResult:
    output_dir: Path
    adapter_dir: Path
    merged_dir: Path | None
    global_step: int
    metrics: dict


def train_mntp(
    options: MNTPConfig, resume: bool = False, callbacks: list[TrainerCallback] | tuple = ()
) -> tuple[MNTPResult, MNTPTrainer]:
    """Run MNTP; with `resume`, continue from the latest checkpoint in `options.output_dir`."""
    checkpoint = resume_checkpoint(options, resume)
    output_dir = Path(options.output_dir)
    # bf16 weights on GPUs (the LoRA weights stay fp32), fp32 on CPUs without bf16 hardware.
    dtype = default_dtype(default_device())
    causal_lm, tokenizer, _ = load_causal_lm(options.model, options.attn_implementation, dtype)
    set_seed(options.seed)  # the LoRA initialisation
    model = build_mntp_model(causal_lm, options)
    collator = MNTPCollator.for_tokenizer(
        tokenizer, causal_lm.config.vocab_size, options.mask_prob, options.mask_strategy, options.mask_token
    )
    has_eval = options.eval_steps is not None or options.eval_on_start
    args = training_arguments(options, label_names=["labels"])
    with args.main_process_first(desc="packing the data"):
        train_blocks, eval_blocks = prepare_data(options, tokenizer)
    samples = options.max_steps * options.per_device_batch_size * options.gradient_accumulation_steps
    train_dataset = PackedBlocks(train_blocks, samples * args.world_size, options.seed)
    eval_dataset = PackedBlocks(eval_blocks, None, f"eval-{options.seed}", shuffle=False) if eval_blocks else None
    # Step 0 evaluates the bidirectional model before MNTP (LoRA B is still zero).
    args.eval_on_start = bool(options.eval_on_start and eval_dataset is not None and checkpoint is None)
    tokens_per_step = samples // options.max_steps * args.world_size * options.max_seq_length
    bar = TokensPerSecondBar(tokens_per_step)
    trainer = MNTPTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if has_eval else None,
        data_collator=collator,
        compute_metrics=masked_accuracy,
        callbacks=[bar, *shared_callbacks(options), *callbacks],
        tokens_per_step=tokens_per_step,
    )
    bar.trainer = trainer
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        mask_token, mask_id = mask_token_for(tokenizer, options.mask_token)
        summary = {
            **asdict(options),
            "mask_token_used": mask_token,
            "mask_token_id": mask_id,
            "train_blocks": len(train_blocks),
            "eval_blocks": len(eval_blocks) if eval_blocks else 0,
            "world_size": args.world_size,
        }
        write_json_atomic(output_dir / CONFIG_FILE, summary)
        n_passes = samples * args.world_size / len(train_blocks)
        logger.info(
            "MNTP: %d training blocks of %d tokens (%.2f passes), %d eval blocks, mask token %r (id %d).",
            len(train_blocks),
            options.max_seq_length,
            n_passes,
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
        with atomic_folder(adapter_dir, replaceable=True) as folder:  # the training folder is lm2vec's
            model.backbone.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        if options.merge:
            from lm2vec.modeling.export import export_encoder

            merged_dir = output_dir / MERGED_DIR
            export_encoder(options.model, merged_dir, adapters=[adapter_dir], device="cpu")
    trainer.accelerator.wait_for_everyone()
    result = MNTPResult(output_dir, adapter_dir, merged_dir, trainer.state.global_step, metrics)
    return result, trainer


def eval_accuracy_log(run_dir: str | Path) -> list[tuple[int, float]]:
    """(step, masked-token accuracy) of every evaluation in a run's log."""
    return [(r["step"], r["eval_accuracy"]) for r in read_log(run_dir) if "eval_accuracy" in r]


__all__ = [
    "MNTPConfig",
    "MNTPModel",
    "MNTPResult",
    "MNTPTrainer",
    "PackedBlocks",
    "build_mntp_model",
    "eval_accuracy_log",
    "load_causal_lm",
    "load_texts",
    "pack_blocks",
    "prepare_data",
    "train_mntp",
]
