"""`StageTrainer`: the Trainer every training stage's Trainer (MNTP's, the contrastive one) is made from."""

from __future__ import annotations

import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
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


def shard_frozen_weights(model: nn.Module, device_type: str) -> None:
    """Shard `model`'s frozen weights across the processes with FSDP2 (`fully_shard`: each decoder layer, then the
    rest), the trainable ones (the LoRA adapter) left whole on every process and hidden from FSDP, and tell DDP to
    leave the sharded ones alone: DDP (the Trainer's wrapping) then averages only the adapter's gradients."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    trainable = {parameter for parameter in model.parameters() if parameter.requires_grad}
    layer_classes = {name for module in model.modules() for name in getattr(module, "_no_split_modules", None) or ()}
    for module in [module for module in model.modules() if type(module).__name__ in layer_classes]:
        fully_shard(module, mesh=mesh, ignored_params=trainable)
    fully_shard(model, mesh=mesh, ignored_params=trainable)
    frozen = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)


class ShardedFrozenWeights:
    """Trainer mixin: with `args.shard_frozen_weights` (a stage's `fsdp`) and several processes, the frozen weights
    are sharded across the processes (`shard_frozen_weights`), so each holds 1/N of them; they stay so after
    training, so a stage merges its adapter from the saved files (`sharded` says so)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sharded = getattr(self.args, "shard_frozen_weights", False) and self.args.world_size > 1
        if self.sharded:
            shard_frozen_weights(self.model, self.args.device.type)


class StageTrainer(AtomicCheckpoints, OneProgressBar, ShardedFrozenWeights, Trainer):
    """A Trainer whose checkpoints are written atomically, which shows one progress bar and shards the frozen
    weights under `fsdp`."""
