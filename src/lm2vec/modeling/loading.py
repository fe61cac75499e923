"""Loading a model to encode with: the device and dtype, the backbone of a source with its LoRA adapters merged
(weighted, if asked), its attention made bidirectional and checked."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
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
from lm2vec.modeling.pruning import check_prune_fraction, layers_to_keep, prune_model
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


MERGE_METHODS = ("linear", "ties", "dare_ties", "dare_linear")
DEFAULT_DENSITY = 0.5  # the share of each delta TIES keeps (by magnitude) and DARE keeps (at random)


class AdapterMergeError(LM2VecError, ValueError):
    """Adapter weights, a merge method or a density that cannot merge the adapters named."""


def check_adapter_merge(
    adapters: Sequence[object],
    weights: Sequence[float] | None = None,
    method: str = "linear",
    density: float | None = None,
) -> None:
    """Refuse, before anything loads, weights that are not one finite number per adapter, an unknown merge method,
    or a density outside (0, 1] or given to linear merging, which keeps every delta whole."""
    if method not in MERGE_METHODS:
        raise AdapterMergeError(f"merge method {method!r} is not one of {', '.join(MERGE_METHODS)}")
    if weights is not None:
        if len(weights) != len(adapters):
            raise AdapterMergeError(
                f"{len(weights)} adapter weight(s) for {len(adapters)} adapter(s): give one weight per adapter"
            )
        if bad := [weight for weight in weights if not finite_number(weight)]:
            raise AdapterMergeError(f"adapter weights must be finite numbers, got {', '.join(map(repr, bad))}")
    if density is not None:
        if method == "linear":
            raise AdapterMergeError("density applies to the ties and dare merge methods, not to linear")
        if not (finite_number(density) and 0 < density <= 1):
            raise AdapterMergeError(f"density must be in (0, 1], got {density!r}")


def finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# What `default_dtype` gives a CPU: fp32, or the GPUs' bf16 inside `gpu_dtype_on_cpu()`.
_CPU_DTYPE: ContextVar[torch.dtype] = ContextVar("lm2vec_cpu_dtype", default=torch.float32)


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 halves memory and is fast on GPUs; CPUs without bf16 hardware run fp32 several times faster.
    return torch.bfloat16 if device.type == "cuda" else _CPU_DTYPE.get()


@contextlib.contextmanager
def gpu_dtype_on_cpu() -> Iterator[None]:
    """Inside it, CPUs load, train (bf16 weights and autocast) and encode in the GPUs' dtype, so that a run on a CPU
    (`lm2vec run --dry-run`) goes the GPU's way and meets its dtype bugs."""
    token = _CPU_DTYPE.set(torch.bfloat16)
    try:
        yield
    finally:
        _CPU_DTYPE.reset(token)


def load_backbone(
    source: str | os.PathLike,
    *,
    lm_head: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    attn_implementation: str | None = None,
    bidirectional: bool = True,
    adapters: Sequence[str | os.PathLike] = (),
    adapter_weights: Sequence[float] | None = None,
    merge_method: str = "linear",
    merge_density: float | None = None,
    prune_layers: float = 0.0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model of `source` (folder, hub id, .gguf file or `pkg:` alias) and its tokenizer: the backbone
    (`AutoModel`), or with `lm_head` the causal LM around it (MNTP trains the backbone and reads the head).

    `adapters` (LoRA folders trained on the backbone) are merged in order (`merge_adapters`: weighted by
    `adapter_weights`, combined by `merge_method`); the attention is switched to
    `bidirectional` and, when bidirectional, a probe checks that the first token sees the last one, or raises.
    The top decoder layers are dropped first (`lm2vec.modeling.pruning`): `prune_layers` of them, or as many as the
    adapters were trained without; a share that cannot work raises PruneError before the weights load.
    With `device` the model is moved there and put in eval mode."""
    if adapters and lm_head:
        raise ValueError("Adapters are merged into the backbone; load them without the LM head.")
    check_adapter_merge(adapters, adapter_weights, merge_method, merge_density)
    check_prune_fraction(prune_layers)
    folder = resolve_source(source)
    hf_config = AutoConfig.from_pretrained(folder)
    keep = layers_to_keep(str(source), hf_config.num_hidden_layers, prune_layers, adapters)
    if bidirectional or hf_config.model_type in SUPPORTED_ARCHITECTURES:
        attn_implementation = default_attn_implementation(hf_config.model_type, attn_implementation)
    model_class = AutoModelForCausalLM if lm_head else AutoModel
    model = model_class.from_pretrained(folder, dtype=dtype, attn_implementation=attn_implementation)
    prune_model(model, keep)
    model = merge_adapters(model, adapters, adapter_weights, merge_method, merge_density)
    set_bidirectional(model, bidirectional)
    if device is not None:
        model.to(device).eval()
    if bidirectional:
        verify_bidirectional(backbone_of(model) if lm_head else model, hf_config.vocab_size)
    return model, AutoTokenizer.from_pretrained(folder)


def backbone_of(causal_lm: PreTrainedModel) -> nn.Module:
    """The backbone (`AutoModel`) inside a causal LM."""
    return getattr(causal_lm, causal_lm.base_model_prefix)


def merge_adapters(
    model: PreTrainedModel,
    adapters: Sequence[str | os.PathLike],
    weights: Sequence[float] | None = None,
    method: str = "linear",
    density: float | None = None,
) -> PreTrainedModel:
    """Merge LoRA adapters (trained on the backbone, each on top of the ones before it) into the weights.

    Merged adapters are additive deltas, W = W0 + d1 + d2 + ..., so `weights` (one per adapter, default 1) scale
    them exactly: "linear" multiplies each adapter's LoRA scaling by its weight before merging it. "ties",
    "dare_ties" and "dare_linear" combine the adapters' full deltas of each layer with peft's merge functions (TIES:
    each delta trimmed to its `density` largest entries, signs elected, agreeing entries averaged; DARE: entries
    dropped at random, seeded, so one merge always gives one model) and add the result, with no low-rank
    approximation (peft's `add_weighted_adapter` would cut it back to one LoRA rank by SVD)."""
    check_adapter_merge(adapters, weights, method, density)
    if not adapters:
        return model
    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json).")
    weights = [1.0] * len(adapters) if weights is None else [float(weight) for weight in weights]
    if method != "linear":
        return _merge_combined(model, adapters, weights, method, DEFAULT_DENSITY if density is None else density)
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    for adapter, weight in zip(adapters, weights, strict=True):
        model = PeftModel.from_pretrained(model, str(adapter))
        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.scale_layer(weight)
        model = model.merge_and_unload()
    return model


def _merge_combined(
    model: PreTrainedModel, adapters: Sequence[str | os.PathLike], weights: list[float], method: str, density: float
) -> PreTrainedModel:
    """All adapters loaded side by side, each layer's deltas combined by peft's `merge_utils.<method>` (in fp32 on
    the CPU, whose generator is seeded for DARE) and added to the layer's weight."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from peft.utils import merge_utils

    names = [f"adapter_{position}" for position in range(len(adapters))]
    peft_model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
    for name, adapter in zip(names[1:], adapters[1:], strict=True):
        peft_model.load_adapter(str(adapter), adapter_name=name)
    combine = getattr(merge_utils, method)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(0)
        for module in peft_model.modules():
            if not isinstance(module, LoraLayer):
                continue
            present = [(name, weight) for name, weight in zip(names, weights, strict=True) if name in module.lora_A]
            deltas = [module.get_delta_weight(name).float().cpu() for name, _ in present]
            merged = combine(deltas, torch.tensor([weight for _, weight in present]), density)
            base = module.get_base_layer().weight
            base += merged.to(base.device, base.dtype)
    return peft_model.unload()
