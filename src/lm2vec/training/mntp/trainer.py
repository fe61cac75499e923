"""The MNTP Trainer: sequential samples, adapter-only checkpoints, masked-token accuracy, tokens/s."""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn

from lm2vec.training.mntp.model import MNTPModel
from lm2vec.training.trainer import StageTrainer


def masked_accuracy(prediction) -> dict[str, float]:
    """From the per-batch [correct, labelled, summed loss] rows: accuracy and per-token loss on masked tokens."""
    stats = np.asarray(prediction.predictions).reshape(-1, 3)
    correct, labelled, loss_sum = stats.sum(0)
    return {"accuracy": float(correct / max(labelled, 1)), "token_loss": float(loss_sum / max(labelled, 1))}


class MNTPTrainer(StageTrainer):
    """Reads the (already ordered) training samples sequentially, saves and restores only the LoRA adapter in
    checkpoints, and logs tokens per second."""

    def __init__(self, *args, tokens_per_step: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_per_step = tokens_per_step
        self._rate_mark: tuple[float, int] | None = None

    def _get_train_sampler(self, train_dataset=None):
        return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        model: MNTPModel = self.accelerator.unwrap_model(self.model)
        if state_dict is not None:  # FSDP / DeepSpeed hand over the gathered weights
            prefix = "backbone."
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        model.backbone.save_pretrained(output_dir, state_dict=state_dict)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        weights = load_file(os.path.join(resume_from_checkpoint, "adapter_model.safetensors"), device="cpu")
        result = set_peft_model_state_dict(model.backbone, weights)
        if result.unexpected_keys:
            raise ValueError(f"{resume_from_checkpoint}: unexpected adapter weights {result.unexpected_keys[:5]}")

    def tokens_per_second(self) -> float | None:
        now, step = time.perf_counter(), self.state.global_step
        if self._rate_mark is None or step <= self._rate_mark[1]:
            self._rate_mark = (now, step)
            return None
        start, start_step = self._rate_mark
        self._rate_mark = (now, step)
        return (step - start_step) * self.tokens_per_step / max(now - start, 1e-9)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and (rate := self.tokens_per_second()) is not None:
            logs["tokens_per_second"] = round(rate, 1)
        super().log(logs, *args, **kwargs)
