"""One rank of the DDP test (tests/test_mntp_ddp.py), started by torchrun: a few MNTP steps on the tiny model,
then this rank's LoRA weights and the hashes of the batches it trained on go to OUT/rank{RANK}.pt."""

from __future__ import annotations

import hashlib
import os
import sys

import torch

from lm2vec.training.mntp import train_mntp
from tests.test_mntp import lora_weights, tiny_options


def main(model: str, data: str, out: str) -> None:
    batches: list[str] = []

    def record(module, args, kwargs):
        if module.training:
            batches.append(hashlib.sha1(kwargs["input_ids"].numpy().tobytes()).hexdigest())

    options = tiny_options(model, data, os.path.join(out, "run"), max_steps=4, save_steps=2)
    from transformers import TrainerCallback

    class Hook(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(record, with_kwargs=True)

    result = train_mntp(options, callbacks=[Hook()])
    trainer = result.trainer
    weights = lora_weights(trainer.model)
    rank = int(os.environ["RANK"])
    torch.save(
        {"weights": weights, "batches": batches, "world_size": trainer.args.world_size, "step": result.global_step},
        os.path.join(out, f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
