"""The contrastive Trainer: the LoRA-wrapped backbone trained with `batch_loss`."""

from __future__ import annotations

from torch.utils.data import DataLoader, Sampler

from lm2vec.modeling.encoder import LM2Vec
from lm2vec.training.contrastive.model import batch_loss
from lm2vec.training.contrastive.options import ContrastiveOptions
from lm2vec.training.trainer import StageTrainer


class ContrastiveTrainer(StageTrainer):
    """Trainer whose model is the LoRA-wrapped backbone; the loss is `batch_loss` on collated text batches."""

    def __init__(self, *args, encoder: LM2Vec, options: ContrastiveOptions, batch_sampler: Sampler, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder, self.options, self.batch_sampler = encoder, options, batch_sampler

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self.batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = batch_loss(self.encoder, model, inputs, self.options)
        return (loss, {}) if return_outputs else loss
