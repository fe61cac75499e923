"""The `[mntp]` options: `MNTPConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from lm2vec.training.masking import STRATEGIES
from lm2vec.training.options import STREAM_WINDOW_HELP, STREAMING_HELP, TrainingOptions


@dataclass
class MNTPConfig(TrainingOptions):
    """The `[mntp]` recipe section. Paper defaults: mask_prob 0.2, LoRA r=16/alpha=32/dropout 0.05."""

    output_dir: str = "runs/mntp"
    model: str = field(default="pkg:smollm2", metadata={"help": "base model: folder, hub id, .gguf or pkg: alias"})
    data: str = field(
        default="",
        metadata={
            "help": (
                "Training text: a corpus folder from `lm2vec data` (paragraphs), a .txt (documents separated by "
                "blank lines) / .jsonl / .json / .parquet file or a folder of them, or `hf:NAME[:CONFIG]` (a "
                "datasets dataset)."
            )
        },
    )
    validation_data: str | None = field(
        default=None,
        metadata={
            "help": (
                "Held-out text in the same forms; default: the corpus's validation split, else "
                "`validation_fraction` of the packed training blocks."
            )
        },
    )
    validation_fraction: float = field(
        default=0.02,
        metadata={"help": "share of the packed training blocks held out when there is no held-out text"},
    )
    max_eval_blocks: int | None = field(
        default=256,
        metadata={"help": "evaluate on at most this many held-out blocks; none: all"},
    )
    text_field: str = field(
        default="text",
        metadata={"help": "the .jsonl/.json/.parquet field or dataset column holding the text"},
    )
    max_seq_length: int = field(default=512, metadata={"help": "tokens per packed training block"})
    mask_prob: float = field(default=0.2, metadata={"help": "share of tokens masked and predicted (paper: 0.2)"})
    mask_strategy: str = field(
        default="bert",
        metadata={"help": "bert: 80% mask / 10% random / 10% kept; all: 100% mask token"},
    )
    mask_token: str | None = field(
        default=None,
        metadata={"help": "None: the tokenizer's mask token, else \"_\" (the paper's stand-in)"},
    )
    sparse_lm_head: bool = field(
        default=True,
        metadata={"help": "apply the LM head to the masked positions only (faster, less memory; the same loss)"},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "sdpa or eager; none: the model type's default"},
    )
    preprocessing_workers: int | None = field(
        default=None,
        metadata={"help": "processes that tokenize and pack the text; none: one"},
    )
    streaming: bool = field(default=False, metadata={"help": STREAMING_HELP})
    stream_window_rows: int = field(default=50_000, metadata={"help": STREAM_WINDOW_HELP})
    merge: bool = field(
        default=False,
        metadata={"help": "also write `merged/`, the backbone with the adapter merged in"},
    )
    eval_on_start: bool = field(
        default=True,
        metadata={"help": "evaluate the held-out masked-token accuracy before the first step too"},
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (self.stream_window_rows >= 1, f"stream_window_rows must be at least 1, got {self.stream_window_rows}."),
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
