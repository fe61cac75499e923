"""The `[mntp]` options: `MNTPConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from lm2vec.recipe import failed_checks
from lm2vec.training.common import TrainingOptions
from lm2vec.training.masking import STRATEGIES


@dataclass
class MNTPConfig(TrainingOptions):
    """The `[mntp]` recipe section. Paper defaults: mask_prob 0.2, LoRA r=16/alpha=32/dropout 0.05."""

    output_dir: str = "runs/mntp"
    model: str = "pkg:smollm2"
    # Training text: a corpus folder from `lm2vec data` (paragraphs), a .txt (documents separated by blank
    # lines) / .jsonl / .json / .parquet file or a folder of them, or `hf:NAME[:CONFIG]` (a datasets dataset).
    data: str = ""
    # Held-out text in the same forms; default: the corpus's validation split, else `validation_fraction` of the
    # packed training blocks.
    validation_data: str | None = None
    validation_fraction: float = 0.02
    max_eval_blocks: int | None = 256
    text_field: str = "text"
    max_seq_length: int = 512
    mask_prob: float = 0.2
    mask_strategy: str = "bert"  # bert: 80% mask / 10% random / 10% kept; all: 100% mask token
    mask_token: str | None = None  # None: the tokenizer's mask token, else "_" (the paper's stand-in)
    sparse_lm_head: bool = True
    attn_implementation: str | None = None
    preprocessing_workers: int | None = None
    merge: bool = False
    eval_on_start: bool = True

    def problems(self) -> list[str]:
        checks = [
            (self.max_seq_length >= 2, f"max_seq_length must be at least 2, got {self.max_seq_length}."),
            (0 < self.mask_prob < 1, f"mask_prob must be between 0 and 1, got {self.mask_prob}."),
            (
                self.mask_strategy in STRATEGIES,
                f"mask_strategy must be one of {', '.join(STRATEGIES)}, got {self.mask_strategy!r}.",
            ),
            (
                0 <= self.validation_fraction < 1,
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}.",
            ),
            (
                self.max_eval_blocks is None or self.max_eval_blocks >= 1,
                f"max_eval_blocks must be at least 1 (or none), got {self.max_eval_blocks}.",
            ),
        ]
        return super().problems() + failed_checks(checks)
