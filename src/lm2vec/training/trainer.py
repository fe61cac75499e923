"""`StageTrainer`: the Trainer every training stage's Trainer (MNTP's, the contrastive one) is made from."""

from __future__ import annotations

from transformers import Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from lm2vec.training.callbacks import StageProgress
from lm2vec.training.checkpoints import AtomicCheckpoints


class OneProgressBar:
    """Trainer mixin: `StageProgress` instead of the Trainer's progress bars and printed log dicts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.add_callback(StageProgress())


class StageTrainer(AtomicCheckpoints, OneProgressBar, Trainer):
    """A Trainer whose checkpoints are written atomically and which shows one progress bar."""
