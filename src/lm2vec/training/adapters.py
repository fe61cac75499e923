"""The LoRA adapter a training stage trains: added to the backbone, and saved when trained.

Convention: LoRA adapters are always trained on, saved from and merged into the *backbone* (`AutoModel`, no LM
head), so `LM2Vec.from_pretrained(base, adapters=[mntp, simcse])` can merge any stage's adapter.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from lm2vec.artifacts import atomic_folder
from lm2vec.modeling.pruning import write_adapter_record
from lm2vec.training.lora import fuse_lora_layers, mark_norm_outputs
from lm2vec.training.options import TrainingOptions


def add_lora(backbone: PreTrainedModel, options: TrainingOptions) -> PeftModel:
    """Wrap the backbone with a fresh LoRA adapter; only the adapter's weights train.

    With `options.fused_lora`, peft's LoRA layers are switched to lm2vec's (`lm2vec.training.lora`): the same
    function and adapter files with far fewer saved activations, and the norm outputs they keep are recomputed in
    the backward pass of forwards run under `recomputing_norm_outputs()`. Raises `FusedLoraError` when the
    installed peft does not fit them (then `fused_lora = false` trains with peft's own layers)."""
    targets = options.lora_target_modules
    config = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        bias="none",
    )
    model = get_peft_model(backbone, config)
    if options.fused_lora:
        fuse_lora_layers(model)
        mark_norm_outputs(model)
    return model


def save_adapter(model: PeftModel, folder: Path, tokenizer=None) -> Path:
    """Write a trained LoRA adapter (and the tokenizer, if given) to `folder` atomically, with the layers of the
    pruned model it was trained on; the training folder is lm2vec's, so an earlier adapter there is replaced."""
    with atomic_folder(folder, replaceable=True) as staging:
        model.save_pretrained(staging)
        write_adapter_record(staging, model.config)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return folder
