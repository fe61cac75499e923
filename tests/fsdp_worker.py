"""One rank of the FSDP and multi-node tests (tests/test_fsdp.py), started by torchrun with the worker's settings as
JSON: a few MNTP steps on the tiny model (with `fsdp`, `kill` = [rank, step] to SIGKILL that rank once that step's
checkpoint is written, `resume`), then optionally one supervised contrastive step (exported). Each rank writes its
MNTP LoRA weights and what it saw of the sharding to OUT/rank{RANK}.pt."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from lm2vec.training.contrastive import SupervisedOptions, train_supervised
from lm2vec.training.mntp import MNTPConfig, train_mntp
from tests.test_mntp import lora_weights, tiny_options

RANK = int(os.environ.get("RANK", "0"))


def mntp_options(model: str, data: str, output_dir: str, **overrides) -> MNTPConfig:
    """The MNTP run of the tests: 4 steps of 4 blocks in all (2 per process under 2 processes), no dropout."""
    return tiny_options(model, data, output_dir, **{"max_steps": 4, "save_steps": 2, "lora_dropout": 0.0, **overrides})


def supervised_options(model: str, data: str, output_dir: str, **overrides) -> SupervisedOptions:
    """One supervised step on 8 records (4 per process under 2 processes), exported."""
    settings = dict(
        model=model,
        data=data,
        output_dir=output_dir,
        max_steps=1,
        per_device_batch_size=8,
        max_length=32,
        learning_rate=1e-3,
        warmup_steps=0,
        logging_steps=1,
        lora_dropout=0.0,
    )
    return SupervisedOptions(**{**settings, **overrides})


class SeeSharding(TrainerCallback):
    """Records, at the first step, how many frozen parameters are sharded and how much of them this rank holds."""

    def __init__(self, record: dict):
        self.record = record

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if "sharded" in self.record:
            return
        sharded = [p for p in model.parameters() if isinstance(p, DTensor)]
        self.record["sharded"] = len(sharded)
        self.record["held"] = sum(p.to_local().numel() for p in sharded)
        self.record["whole"] = sum(p.numel() for p in sharded)
        self.record["trainable_sharded"] = sum(p.requires_grad for p in sharded)


class KillAfterCheckpoint(TrainerCallback):
    """SIGKILL this process once the checkpoint of `step` is written: a rank dying as a machine would."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(settings: dict) -> None:
    out = Path(settings["out"])
    record: dict = {"world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    callbacks: list[TrainerCallback] = [SeeSharding(record)]
    kill_rank, kill_step = settings.get("kill") or (None, None)
    if kill_rank == RANK:
        callbacks.append(KillAfterCheckpoint(kill_step))
    options = mntp_options(settings["model"], settings["data"], str(out / "mntp"), fsdp=settings["fsdp"])
    result = train_mntp(options, resume=settings.get("resume", False), callbacks=callbacks)
    record["mntp"] = lora_weights(result.trainer.model)
    record["step"] = result.global_step
    if settings.get("pairs"):
        options = supervised_options(
            settings["model"],
            settings["pairs"],
            str(out / "supervised"),
            fsdp=settings["fsdp"],
            per_device_batch_size=4,
        )
        train_supervised(options)
    torch.save(record, out / f"rank{RANK}.pt")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
