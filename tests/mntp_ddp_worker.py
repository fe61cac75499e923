"""One rank of the DDP test (tests/test_mntp_ddp.py), started by torchrun: a few MNTP steps on the tiny model,
then this rank's LoRA weights and the hashes of the batches it trained on go to OUT/rank{RANK}.pt."""

from __future__ import annotations

import hashlib
import os
import sys

import torch

from lm2vec.training.mntp import MNTPConfig, train_mntp


def main(model: str, data: str, out: str) -> None:
    batches: list[str] = []

    def record(module, args, kwargs):
        if module.training:
            batches.append(hashlib.sha1(kwargs["input_ids"].numpy().tobytes()).hexdigest())

    options = MNTPConfig(
        model=model,
        data=data,
        output_dir=os.path.join(out, "run"),
        max_seq_length=16,
        per_device_batch_size=2,
        max_steps=4,
        learning_rate=5e-3,
        logging_steps=1,
        save_steps=2,
        mask_token="<unk>",
        eval_on_start=False,
    )
    from transformers import TrainerCallback

    class Hook(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(record, with_kwargs=True)

    result = train_mntp(options, callbacks=[Hook()])
    trainer = result.trainer
    weights = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}
    rank = int(os.environ["RANK"])
    torch.save(
        {"weights": weights, "batches": batches, "world_size": trainer.args.world_size, "step": result.global_step},
        os.path.join(out, f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
