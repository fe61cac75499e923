"""`TrainingOptions`: the options every training stage has; a stage's config dataclass inherits them."""

from __future__ import annotations

from dataclasses import dataclass, field

from lm2vec.modeling.pruning import PRUNE_HELP, prune_fraction_message, valid_prune_fraction
from lm2vec.options import Options

# MNTP's and SimCSE's `streaming` options (lm2vec.data.readers.ShuffledWindows).
STREAMING_HELP = (
    "Read `data` (a corpus folder, or .parquet files of paragraphs) a window of rows at a time instead of loading it "
    "whole: memory stays flat in corpus size and a resume reads only the window it continues in. The order differs "
    "from the default's (windows of row groups in a seeded order, shuffled within each)."
)
STREAM_WINDOW_HELP = "with streaming: rows (whole Parquet row groups) read and shuffled together"


@dataclass
class TrainingOptions(Options):
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
    prune_layers: float = field(default=0.0, metadata={"help": PRUNE_HELP})
    fsdp: bool = field(
        default=False,
        metadata={
            "help": (
                "under torchrun / accelerate launch, shard the frozen model's weights across the processes "
                "(PyTorch FSDP2 `fully_shard`): each holds 1/N of them, so a model too large for one device trains; "
                "the LoRA adapter stays whole on every process (DDP averages its gradients); one process: no effect"
            )
        },
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

    def checks(self) -> list[tuple[bool, str]]:
        """Refused before any work, all the recipe's mistakes named; a stage's config adds its own."""
        return [
            *super().checks(),
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
            (valid_prune_fraction(self.prune_layers), prune_fraction_message(self.prune_layers)),
        ]
