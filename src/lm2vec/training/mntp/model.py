"""The MNTP model: the LoRA-wrapped bidirectional backbone, its frozen LM head and the shifted loss."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    PreTrainedModel,
)

from lm2vec.modeling.loading import backbone_of, load_backbone
from lm2vec.modeling.sources import resolve_source
from lm2vec.training.adapters import add_lora
from lm2vec.training.lora import recomputing_norm_outputs
from lm2vec.training.masking import IGNORE_INDEX
from lm2vec.training.mntp.options import MNTPConfig


class MNTPModel(nn.Module):
    """A LoRA-wrapped bidirectional backbone and its frozen LM head, trained with the shifted MNTP loss.

    `forward(input_ids, attention_mask, labels)` returns `loss` (mean over labelled tokens, or their sum divided
    by `num_items_in_batch` when the Trainer passes it for exact gradient accumulation) and, in eval mode,
    `stats` = [[correct, labelled, summed loss]] for the masked-token accuracy."""

    accepts_loss_kwargs = True  # the Trainer then passes num_items_in_batch

    def __init__(
        self,
        backbone: nn.Module,
        lm_head: nn.Module,
        config,
        sparse_lm_head: bool = True,
        recompute_norm_outputs: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.lm_head = lm_head
        self.config = config
        self.sparse_lm_head = sparse_lm_head
        # Norm outputs that the LoRA layers keep are recomputed in the backward pass (see lora.mark_norm_outputs).
        self.recompute_norm_outputs = recompute_norm_outputs
        for parameter in lm_head.parameters():
            parameter.requires_grad_(False)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The causal LM's logits for hidden states, with the architecture's output scaling."""
        logits = self.lm_head(hidden)
        if (scale := getattr(self.config, "logit_scale", None)) is not None:  # Cohere
            logits = logits * scale
        if (divisor := getattr(self.config, "logits_scaling", None)) is not None:  # Granite
            logits = logits / divisor
        if (cap := getattr(self.config, "final_logit_softcapping", None)) is not None:  # Gemma-2/3
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        with recomputing_norm_outputs() if self.recompute_norm_outputs else contextlib.nullcontext():
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if labels is None:
            return {"logits": self.lm_logits(hidden)}
        # The token at i is predicted from the output at i-1.
        hidden, targets = hidden[:, :-1], labels[:, 1:]
        if self.sparse_lm_head:
            labelled = targets != IGNORE_INDEX
            logits = self.lm_logits(hidden[labelled]).float()
            targets = targets[labelled]
        else:
            logits = self.lm_logits(hidden).float().flatten(0, 1)
            targets = targets.flatten()
        loss_sum = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
        count = (targets != IGNORE_INDEX).sum()
        divisor = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
        if torch.is_tensor(divisor):
            divisor = divisor.to(loss_sum.device)
        output = {"loss": loss_sum / divisor}
        if not self.training:
            correct = ((logits.argmax(-1) == targets) & (targets != IGNORE_INDEX)).sum()
            output["stats"] = torch.stack([correct.float(), count.float(), loss_sum.detach().float()])[None]
        return output

    def activation_checkpointing_enable(self, **kwargs) -> None:
        self.backbone.get_base_model().activation_checkpointing_enable(**kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs) -> None:
        self.backbone.get_base_model().gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
        )


def load_causal_lm(
    source: str, attn_implementation: str | None = None, dtype: torch.dtype = torch.float32, prune_layers: float = 0.0
):
    """The causal LM of `source` (pkg alias, GGUF, folder, hub id) with bidirectional attention, verified, and its
    top `prune_layers` decoder layers dropped (`lm2vec.modeling.loading.load_backbone` with the LM head), its
    tokenizer and its resolved folder."""
    folder = resolve_source(source)
    causal_lm, tokenizer = load_backbone(
        folder, lm_head=True, dtype=dtype, attn_implementation=attn_implementation, prune_layers=prune_layers
    )
    return causal_lm, tokenizer, folder


def build_mntp_model(causal_lm: PreTrainedModel, options: MNTPConfig) -> MNTPModel:
    """LoRA on the backbone (so the adapter merges into `LM2Vec`'s `AutoModel`), LM head frozen. `add_lora`'s fused
    layers and recomputed norm outputs save about 60% of the activations (see `lm2vec.training.lora`)."""
    backbone = add_lora(backbone_of(causal_lm), options)
    return MNTPModel(backbone, causal_lm.get_output_embeddings(), causal_lm.config, options.sparse_lm_head)
