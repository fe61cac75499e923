"""Checkpoints a run resumes from: written atomically by the Trainer, found again (complete ones only) on resume.

Checkpoints are written into a hidden sibling and renamed to `checkpoint-N` when complete (`AtomicCheckpoints`);
resuming skips, reports and removes an incomplete one left by an older version or a damaged disk, and falls back
to the previous complete one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from lm2vec.artifacts import remove_leftovers, remove_path, temporary_sibling
from lm2vec.training.callbacks import truncate_log
from lm2vec.training.options import TrainingOptions
from lm2vec.training.results import claim_training_folder

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors")


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


def _checkpoint_step(checkpoint: str) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])
