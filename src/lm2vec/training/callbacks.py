"""Trainer callbacks every training stage shares: a JSONL log and a PNG loss plot in the run folder.

TensorBoard is the Trainer's callback, writing to one folder (`tensorboard/`) for every attempt, with the steps
after the resumed checkpoint purged (`ResumableTensorBoard`). The JSONL log is appended to, so a resumed run
continues the same file and the plot shows one continuous curve.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.integrations import TensorBoardCallback

from lm2vec.artifacts import append_jsonl, atomic_file, write_jsonl_atomic
from lm2vec.console import on_terminal

LOG_NAME = "log.jsonl"
PLOT_NAME = "loss.png"
TENSORBOARD_DIR = "tensorboard"


class ResumableTensorBoard(TensorBoardCallback):
    """TensorBoard events in `output_dir/tensorboard`; a resumed run purges the events a killed attempt wrote
    after its checkpoint (SummaryWriter's `purge_step`), so no step appears twice."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.tb_writer is None and self._SummaryWriter is not None:
            self.logging_dir = str(Path(args.output_dir) / TENSORBOARD_DIR)
            # Steps up to the checkpoint's were logged before it was saved; later ones are logged again.
            purge_step = state.global_step + 1 if state.global_step else None
            self.tb_writer = self._SummaryWriter(log_dir=self.logging_dir, purge_step=purge_step)
        super().on_train_begin(args, state, control, **kwargs)


class JsonlLogCallback(TrainerCallback):
    """Appends every Trainer log (training loss, eval metrics, learning rate) as a JSON line with its step and
    wall-clock time."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOG_NAME

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
        append_jsonl(self.path, record)


class StageProgress(TrainerCallback):
    """The one progress display of a training stage: a single bar (step, loss, tokens/s, ETA) on a terminal,
    nothing when stderr is not one, so CI logs hold no carriage-return spam. It replaces the Trainer's own bars
    (with their nested evaluation bar) and the log dicts it prints; every log still goes to log.jsonl.

    tokens/s counts the real (non-padding) input tokens of this attempt, from the Trainer's
    `num_input_tokens_seen`, over this attempt's wall time."""

    def __init__(self) -> None:
        self.bar = None
        self.figures: dict[str, str] = {}
        self.start: tuple[float, int] = (0.0, 0)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and on_terminal():
            from tqdm.auto import tqdm

            name = Path(args.output_dir).name
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=name, dynamic_ncols=True)
            self.start = (time.perf_counter(), state.num_input_tokens_seen)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            if rate := tokens_per_second(self.start, state.num_input_tokens_seen):
                self.figures["tokens/s"] = f"{rate:,.0f}"
            self.bar.set_postfix(self.figures, refresh=False)
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.figures["loss"] = f"{logs['loss']:.4g}"
            self.bar.set_postfix(self.figures, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def tokens_per_second(start: tuple[float, int], tokens_now: int) -> float | None:
    """Tokens seen since `start` = (perf_counter time, tokens seen then), per second; None before any."""
    seconds, tokens = time.perf_counter() - start[0], tokens_now - start[1]
    return tokens / seconds if tokens > 0 and seconds > 0 else None


class LossPlotCallback(TrainerCallback):
    """Redraws loss.png from the JSONL log after each evaluation and at the end of training."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(self.run_dir)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(self.run_dir)


def read_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_log(run_dir: str | Path, step: int) -> int:
    """Drop log records after `step`; returns how many were dropped."""
    path = Path(run_dir) / LOG_NAME
    records = read_log(run_dir)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) < len(records):
        write_jsonl_atomic(path, kept)
    return len(records) - len(kept)


def shared_callbacks(run_dir: str | Path) -> list[TrainerCallback]:
    """The callbacks every stage's Trainer gets, before its own: log.jsonl, loss.png and TensorBoard."""
    return [JsonlLogCallback(run_dir), LossPlotCallback(run_dir), ResumableTensorBoard()]


def plot_losses(run_dir: str | Path) -> Path | None:
    """Training and evaluation loss against step; returns the PNG path, or None before anything was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(run_dir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evaluation = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evaluation:
        return None
    figure, axes = plt.subplots(figsize=(7, 4))
    for points, label, style in ((train, "train loss", "-"), (evaluation, "eval loss", "o--")):
        if points:
            axes.plot(*zip(*points, strict=True), style, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(Path(run_dir).name)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(run_dir) / PLOT_NAME
    with atomic_file(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return path
