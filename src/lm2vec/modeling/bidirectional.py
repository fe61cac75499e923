"""Bidirectional attention for decoder-only models, switched on by transformers' own flag and verified.

transformers 5.x builds its attention masks in `masking_utils`, which return a bidirectional (padding-only) mask
when `config.is_causal` is False, and the flag survives `save_pretrained`/`from_pretrained`. We build on that
instead of copying attention classes per architecture. Two gaps remain, and both are closed generically:

- SDPA gets no mask at all when a batch has no padding and relies on `module.is_causal`; some architectures
  (StableLM) do not forward the config flag to it, so every attention module's `is_causal` is cleared as well.
- Whatever the architecture does, `probe_attention` checks the result on every load: a model that is still
  causal raises `StillCausalError` instead of silently producing causal embeddings.
"""

from __future__ import annotations

import torch
import transformers
from packaging.version import Version
from torch import nn

from lm2vec.errors import LM2VecError

MIN_TRANSFORMERS = Version("5.0")

# Architectures (config.model_type) whose masks honour `is_causal=False`, verified by tests/test_bidirectional.py
# on tiny random models. Values are the attention implementations they support; the first one is the default.
SUPPORTED_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "llama": ("sdpa", "eager"),
    "mistral": ("sdpa", "eager"),
    "qwen2": ("sdpa", "eager"),
    "qwen3": ("sdpa", "eager"),
    "gemma": ("sdpa", "eager"),
    "gemma2": ("eager",),  # transformers' Gemma-2 has no SDPA path (logit soft-capping).
    "gemma3_text": ("sdpa", "eager"),
    "phi3": ("sdpa", "eager"),
    "stablelm": ("sdpa", "eager"),  # its SDPA path ignores the config flag; the module flag fixes it.
    "smollm3": ("sdpa", "eager"),
    "phi": ("sdpa", "eager"),
    "olmo": ("sdpa", "eager"),
    "olmo2": ("sdpa", "eager"),
    "olmo3": ("sdpa", "eager"),
    "granite": ("sdpa", "eager"),
    "cohere": ("sdpa", "eager"),
    "cohere2": ("sdpa", "eager"),
    "starcoder2": ("sdpa", "eager"),
    "mixtral": ("sdpa", "eager"),
    "qwen2_moe": ("sdpa", "eager"),
    "qwen3_moe": ("sdpa", "eager"),
    "helium": ("sdpa", "eager"),
    "glm": ("sdpa", "eager"),
    "exaone4": ("sdpa", "eager"),
    "ministral": ("sdpa", "eager"),
    "arcee": ("sdpa", "eager"),
}


class UnsupportedArchitectureError(LM2VecError, ValueError):
    """The architecture has not been verified to become bidirectional with this transformers version."""


class StillCausalError(LM2VecError, RuntimeError):
    """The bidirectional probe found that a token does not see the tokens after it."""


def check_transformers_version() -> None:
    if Version(transformers.__version__) < MIN_TRANSFORMERS:
        raise RuntimeError(
            f"lm2vec needs transformers >= {MIN_TRANSFORMERS} (its mask functions honour config.is_causal); "
            f"found {transformers.__version__}."
        )


def default_attn_implementation(model_type: str, requested: str | None) -> str:
    """The attention implementation to load `model_type` with, refusing unverified architectures."""
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"Architecture {model_type!r} is not supported by lm2vec: its bidirectional attention has not been "
            f"verified. Supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}. "
            "Use bidirectional=False for a causal baseline."
        )
    supported = SUPPORTED_ARCHITECTURES[model_type]
    if requested is None:
        return supported[0]
    if requested not in supported and not requested.startswith("flash_attention"):
        raise UnsupportedArchitectureError(
            f"attn_implementation={requested!r} is not supported for {model_type!r}; use one of {supported}."
        )
    return requested


def set_bidirectional(model: nn.Module, bidirectional: bool = True) -> None:
    """Switch every attention layer of `model` between bidirectional and causal, in place."""
    check_transformers_version()
    for config in {id(c): c for c in _configs(model)}.values():
        config.is_causal = not bidirectional
    for module in model.modules():
        if module is not model and hasattr(module, "is_causal") and isinstance(module.is_causal, bool):
            module.is_causal = not bidirectional


def _configs(model: nn.Module) -> list:
    configs = [model.config]
    text_config = getattr(model.config, "text_config", None)
    if text_config is not None:
        configs.append(text_config)
    return configs


@torch.no_grad()
def probe_attention(model: nn.Module, vocab_size: int, length: int = 6) -> bool:
    """Return True if the first token's hidden state changes when the last token changes.

    Runs a batch without padding and a right-padded batch, because some attention paths take different
    branches for the two (SDPA skips the mask when nothing is padded)."""
    device = next(model.parameters(), torch.empty(0)).device  # none: an onnxruntime session, on the CPU
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab_size, (1, length), generator=generator)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % vocab_size if ids[0, -1] + 1 < vocab_size else 3
    batch = torch.cat([ids, changed]).to(device)
    unpadded = torch.ones_like(batch)
    padded_batch = torch.cat([batch, torch.zeros_like(batch[:, :2])], dim=1)
    padded = torch.cat([unpadded, torch.zeros_like(unpadded[:, :2])], dim=1)
    results = []
    for input_ids, attention_mask in ((batch, unpadded), (padded_batch, padded)):
        hidden = _last_hidden_state(model, input_ids, attention_mask)
        first = hidden[:, 0].float()
        scale = first.abs().max().clamp(min=1e-6)
        results.append(bool(((first[0] - first[1]).abs().max() / scale) > 1e-4))
    return all(results)


def _last_hidden_state(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def verify_bidirectional(model: nn.Module, vocab_size: int) -> None:
    """Raise StillCausalError unless `model` attends in both directions."""
    if not probe_attention(model, vocab_size):
        raise StillCausalError(
            f"{type(model).__name__} ({model.config.model_type}, attn_implementation="
            f"{model.config._attn_implementation}) is still causal after setting is_causal=False: "
            "its attention ignores the flag. Try attn_implementation='eager' or bidirectional=False."
        )
