"""Loading a model to encode with: the device and dtype, the backbone of a source with its LoRA adapters merged,
its attention made bidirectional and checked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lm2vec.errors import LM2VecError
from lm2vec.modeling.bidirectional import (
    SUPPORTED_ARCHITECTURES,
    default_attn_implementation,
    set_bidirectional,
    verify_bidirectional,
)
from lm2vec.modeling.sources import resolve_source


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DeviceError(LM2VecError, ValueError):
    """A device torch does not know, or one this machine does not have."""


def check_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch device (None: `default_device()`), refused before any weights load when torch does not
    know it or this machine lacks it (torch would fail only when the loaded model is moved there)."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device {str(device)!r} is not a torch device (cpu, cuda, cuda:1, mps ...)") from None
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {str(device)!r}: MPS is not available on this machine")
    return parsed


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 halves memory and is fast on GPUs; CPUs without bf16 hardware run fp32 several times faster.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_backbone(
    source: str | os.PathLike,
    *,
    lm_head: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    attn_implementation: str | None = None,
    bidirectional: bool = True,
    adapters: Sequence[str | os.PathLike] = (),
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model of `source` (folder, hub id, .gguf file or `pkg:` alias) and its tokenizer: the backbone
    (`AutoModel`), or with `lm_head` the causal LM around it (MNTP trains the backbone and reads the head).

    `adapters` (LoRA folders trained on the backbone) are merged in order; the attention is switched to
    `bidirectional` and, when bidirectional, a probe checks that the first token sees the last one, or raises.
    With `device` the model is moved there and put in eval mode."""
    if adapters and lm_head:
        raise ValueError("Adapters are merged into the backbone; load them without the LM head.")
    folder = resolve_source(source)
    hf_config = AutoConfig.from_pretrained(folder)
    if bidirectional or hf_config.model_type in SUPPORTED_ARCHITECTURES:
        attn_implementation = default_attn_implementation(hf_config.model_type, attn_implementation)
    model_class = AutoModelForCausalLM if lm_head else AutoModel
    model = model_class.from_pretrained(folder, dtype=dtype, attn_implementation=attn_implementation)
    model = merge_adapters(model, adapters)
    set_bidirectional(model, bidirectional)
    if device is not None:
        model.to(device).eval()
    if bidirectional:
        verify_bidirectional(backbone_of(model) if lm_head else model, hf_config.vocab_size)
    return model, AutoTokenizer.from_pretrained(folder)


def backbone_of(causal_lm: PreTrainedModel) -> nn.Module:
    """The backbone (`AutoModel`) inside a causal LM."""
    return getattr(causal_lm, causal_lm.base_model_prefix)


def merge_adapters(model: PreTrainedModel, adapters: Sequence[str | os.PathLike]) -> PreTrainedModel:
    """Apply LoRA adapters (trained on the backbone) one after the other, merging each into the weights."""
    if not adapters:
        return model
    from peft import PeftModel

    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json).")
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model
