"""Which layers' int8 rounding moves an encoder's vectors: the int8 graph's arithmetic simulated in torch.

    PYTHONPATH=src .venv/bin/python benchmarks/int8_layers.py SOURCE [--sentences 128] [--layers 1 2 3]
        [--projections q_proj,k_proj,v_proj,o_proj down_proj ...]

The smoothed copy that `lm2vec.modeling.onnx` exports, each linear's input rounded per token to uint8 with its own
zero point and its weight per output channel to 7 bits (`quantize_per_token`'s arithmetic), then the mean cosine of
the text vectors to fp32 torch's on the first STS-B dev sentences with every layer in int8 and with groups of the
lowest layers left in fp32. Diagnostic only: the export itself measures the real int8 graph
(`quantize_within_tolerance`).
"""

from __future__ import annotations

import argparse
import copy

import torch
from serve import sts_sentences
from torch import nn

from lm2vec import LM2Vec
from lm2vec.modeling import onnx as onnx_module


def rounded_tokens(x: torch.Tensor) -> torch.Tensor:
    high, low = x.amax(-1, keepdim=True).clamp(min=0), x.amin(-1, keepdim=True).clamp(max=0)
    scale = ((high - low) / onnx_module.UINT8_LEVELS).clamp(min=1e-30)
    zero_point = torch.round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero_point, 0, onnx_module.UINT8_LEVELS) - zero_point) * scale


def rounded_weight(weight: torch.Tensor) -> torch.Tensor:
    levels = onnx_module.MATMUL_WEIGHT_LEVELS
    scale = weight.abs().amax(1, keepdim=True).clamp(min=1e-12) / levels
    return torch.clamp(torch.round(weight / scale), -levels, levels) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--layers", type=int, nargs="+", help="how many lowest layers to leave in fp32, each in turn")
    parser.add_argument(
        "--projections",
        nargs="+",
        help="also leave only these linears of those layers in fp32, a comma-separated group each (q_proj,k_proj)",
    )
    args = parser.parse_args()
    texts = sts_sentences()[: args.sentences]
    encoder = LM2Vec.from_pretrained(args.source, device="cpu")
    reference = encoder.encode(texts, batch_size=32, normalize=True)
    simulated = copy.deepcopy(encoder.model).eval()
    with torch.no_grad():
        onnx_module.smooth_activations(simulated, onnx_module._calibration_batch(encoder.tokenizer))
    linears = {name: module for name, module in simulated.named_modules() if isinstance(module, nn.Linear)}
    rounded = {name: rounded_weight(module.weight.detach()) for name, module in linears.items()}
    fp32_layers: set[int] = set()
    fp32_projections: tuple[str, ...] = ()  # () = every linear of an fp32 layer

    def forward(name: str, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        in_fp32_layer = any(f"layers.{layer}." in name for layer in fp32_layers)
        if in_fp32_layer and (not fp32_projections or name.rsplit(".", 1)[-1] in fp32_projections):
            return nn.functional.linear(x, module.weight, module.bias)
        return nn.functional.linear(rounded_tokens(x), rounded[name], module.bias)

    for name, module in linears.items():
        module.forward = lambda x, name=name, module=module: forward(name, module, x)
    encoder.model = simulated
    layers = simulated.config.num_hidden_layers
    groups = [()] if not args.projections else [(), *(tuple(group.split(",")) for group in args.projections)]
    for kept in args.layers or (0, 1, 2, 3, 6, layers // 3):
        for fp32_projections in groups if kept else [()]:
            fp32_layers.clear()
            fp32_layers.update(range(kept))
            with torch.no_grad():
                cosine = (encoder.encode(texts, batch_size=32, normalize=True) * reference).sum(-1)
            which = ", ".join(fp32_projections) or "every linear"
            print(
                f"lowest {kept:2d} of {layers} layers in fp32 ({which}): mean cosine {cosine.mean():.4f}, "
                f"least {cosine.min():.4f}"
            )


if __name__ == "__main__":
    main()
