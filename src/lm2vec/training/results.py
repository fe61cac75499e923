"""What a training stage leaves: its folder's record, the `TrainingResult` of its `train_*` function, and the
config of the encoder it trained (`encoder_config`), which every export of a trained encoder writes.

A training folder is lm2vec's once it holds `lm2vec_training.json` (`lm2vec.artifacts`); a non-empty folder
without it is refused. The record also keeps what training learnt from its data for the export: the instruction
the supervised queries carried (`query_instruction`), recorded once, when training read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm2vec.artifacts import claim_folder, read_record, write_json_atomic
from lm2vec.modeling.config import EncoderConfig
from lm2vec.training.options import TrainingOptions

TRAINING_RECORD = "lm2vec_training.json"
TRAINING_FORMAT = "lm2vec-training"


@dataclass
class TrainingResult:
    """What a training stage's `train_*` function returns."""

    output_dir: Path
    adapter_dir: Path  # relative to the base model with the stage's starting adapters merged
    encoder_dir: Path | None  # the merged export (MNTP's merged/ with `merge`, contrastive encoder/ with `export`)
    global_step: int
    metrics: dict = field(default_factory=dict)  # the final evaluation's, for stages that evaluate (MNTP)
    trainer: Any = field(default=None, repr=False, compare=False)  # the Trainer that ran, with the trained model


def claim_training_folder(options: TrainingOptions) -> None:
    """Make `output_dir` this stage's folder (main process); refuses a non-empty folder lm2vec did not make."""
    output_dir = Path(options.output_dir)
    if claim_folder(output_dir, TRAINING_RECORD, TRAINING_FORMAT) is None:
        write_json_atomic(output_dir / TRAINING_RECORD, {"format": TRAINING_FORMAT, "stage": type(options).__name__})


def training_record(output_dir: str | Path) -> dict[str, Any]:
    """The record of a training folder (empty if it has none)."""
    return read_record(Path(output_dir), TRAINING_RECORD, TRAINING_FORMAT) or {}


def record_in_training_folder(output_dir: str | Path, **facts: Any) -> None:
    """Add `facts` to the record of a claimed training folder (main process)."""
    write_json_atomic(Path(output_dir) / TRAINING_RECORD, {**training_record(output_dir), **facts})


def encoder_config(
    options: TrainingOptions, pooling: str | None = None, max_length: int | None = None
) -> EncoderConfig:
    """The config of the encoder that training with `options` gave, for `lm2vec train` alone and a run's export
    alike: the pooling and max length it trained with (`pooling` and `max_length` instead, when given: a run's
    `[run]` settings, which MNTP, training neither, needs), the instruction its supervised queries carried
    (recorded in its folder) and the Matryoshka sizes its loss was summed over."""
    record = training_record(options.output_dir)
    return EncoderConfig(
        pooling=pooling or options.pooling,
        max_length=max_length or options.max_length,
        query_instruction=record.get("query_instruction", ""),
        matryoshka_dims=sorted(set(getattr(options, "matryoshka_dims", ()))),
    )
