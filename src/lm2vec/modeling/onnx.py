"""ONNX for CPUs: an encoder's backbone as an ONNX graph (fp32) and its int8 copy, and an onnxruntime session
standing in for the backbone's forward.

The graph maps `input_ids`, `attention_mask` to `last_hidden_state`, the inputs and output sentence-transformers' ONNX
backend (optimum's `ORTModelForFeatureExtraction`) feeds and reads; pooling stays outside it, in sentence-transformers'
Pooling module there and in `lm2vec.modeling.pooling` here, so both pool as the torch encoder does. The exporter is
torch.onnx's dynamo exporter (torch.export), torch's maintained one: optimum-onnx's cannot be installed beside
transformers 5. int8 (`quantize_per_token`) has 7-bit weights per output channel (8 bits overflow onnxruntime's
AVX2 kernel where the CPU lacks VNNI), an int8 embedding table with one scale
per row and activations quantized to uint8 per token at run time, in a graph exported from a SmoothQuant-smoothed copy
of the backbone: activation outlier channels (down_proj inputs up to 230x their RMS in SmolLM2) would otherwise take
int8's whole range. Per token, because one scale per batch tensor (onnxruntime's quantize_dynamic) gives every token the
range of the batch's widest one, so a vector depends on its batch neighbours (main job's encoder, mean cosine to fp32 on
BBC article bodies: per batch tensor 0.981, each text in its own pass 0.991, per token 0.998 symmetric, 0.999
asymmetric; its zero points ride as extra input channels, so the output needs no correction). Per batch tensor, on 128
STS-B dev sentences, Gemma-3-270m / untrained SmolLM2: plain 0.967 / 0.897, smoothed (alpha 0.5) 0.988 / 0.948, alpha
0.8 0.986 / 0.963; SmolLM2 stays int8's hardest case (int8 weights alone: 0.990, min 0.73; its 1-8 worst linears kept in
fp32: <= 0.964; per token: 0.978, and least 0.50 on 1,000 sentences), and MatMulNBits (int8 weights, int8 compute per
block: 0.989) runs no faster than fp32 on AVX2 without VNNI, where dynamic int8 runs 2.5x faster. SmolLM2's trouble
is depth, not outliers: made bidirectional, its token states reach norms of 1,000-11,000 from the 10th layer on and
its output is a small difference of them, so rounding in the lowest layers changes it (weights alone, 8 bits: per
output channel 0.990, per group of 64 0.990; only layers 0-2 rounded: least 0.84; only layers 12-26: 1.000). The
export therefore checks the int8 graph on the calibration texts and keeps the lowest layers in fp32 until the text
vectors' mean cosine to fp32 is 0.99 (`quantize_within_tolerance`: none for Gemma-3-270m). The exported fp32
graph must agree with the torch model and, for a bidirectional encoder, pass the same attention probe as every torch
load; a graph that does not is refused and no ONNX file is left behind.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from lm2vec.errors import LM2VecError
from lm2vec.modeling.bidirectional import StillCausalError, probe_attention
from lm2vec.modeling.int8_tolerance import INT8_MIN_COSINE

logger = logging.getLogger(__name__)

ONNX_FOLDER = "onnx"
ONNX_FILE = f"{ONNX_FOLDER}/model.onnx"
# sentence-transformers' name for a dynamically quantized int8 file (`model_<weights>_<target>.onnx`).
QUANTIZED_FILE = f"{ONNX_FOLDER}/model_qint8_avx2.onnx"
BACKENDS = ("torch", "onnx")
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "last_hidden_state"
# protobuf's limit on one file; bigger graphs keep their weights in `model.onnx.data` beside it.
SINGLE_FILE_BYTES = 2_000_000_000
MAX_RELATIVE_ERROR = 1e-3  # fp32 graph against the torch model, on a batch of another shape than the trace's


class OnnxUnavailableError(LM2VecError, ImportError):
    """The onnx extra (onnx, onnxruntime, onnxscript) is not installed."""


class OnnxExportError(LM2VecError, RuntimeError):
    """torch.onnx could not export the architecture, or its graph does not compute what the model does."""


class OnnxCausalGraphError(StillCausalError):
    """The exported graph of a bidirectional encoder is causal: the export lost the bidirectional mask."""


class OnnxBackendError(LM2VecError, ValueError):
    """A backend or an ONNX file the source does not have, or a load option the ONNX backend cannot honour."""


def require_onnx() -> None:
    """Raise OnnxUnavailableError unless onnx, onnxruntime and onnxscript import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise OnnxUnavailableError(
            f"ONNX export and the onnx backend need the onnx extra ({error.name} is missing): pip install -e '.[onnx]'"
        ) from None


def onnx_available() -> bool:
    try:
        require_onnx()
    except OnnxUnavailableError:
        return False
    return True


def check_backend(source: str | os.PathLike, backend: str, onnx_file: str = QUANTIZED_FILE) -> None:
    """Refuse, before anything loads, an unknown backend, or an onnx backend for a source that is not an encoder
    folder holding `onnx_file` (a hub id, a .gguf file or a `pkg:` alias have none)."""
    if backend not in BACKENDS:
        raise OnnxBackendError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "onnx":
        return
    require_onnx()
    if not (Path(source) / onnx_file).is_file():
        raise OnnxBackendError(
            f"{source} has no {onnx_file}: the onnx backend runs an exported encoder folder; write one with "
            f"`lm2vec convert SOURCE OUT --onnx` (or `[export] onnx = true`)"
        )


class _TokenStates(nn.Module):
    """The graph to export: token ids and mask in, the backbone's last hidden state out."""

    def __init__(self, backbone: PreTrainedModel) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _sample_batch(vocab_size: int, rows: int, length: int, padding: int, seed: int) -> dict[str, torch.Tensor]:
    """Random ids, the second row right-padded by `padding`: the trace and the checks see the mask's real path."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (rows, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, length - padding :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def write_onnx_files(
    model: PreTrainedModel, folder: Path, bidirectional: bool, int8_min_cosine: float = INT8_MIN_COSINE
) -> list[Path]:
    """Write `folder/onnx/model.onnx` (the backbone `model`, fp32, smoothed) and `folder/onnx/model_qint8_avx2.onnx`
    (its int8 copy, `quantize_within_tolerance` with `int8_min_cosine`).

    `folder` must hold the model's tokenizer: the smoothing's calibration texts are tokenized with it. The graph is
    exported from a smoothed copy of `model` (`smooth_activations`: the same function in fp32, outliers moved into
    the weights for int8); `model` itself is left as it is. The fp32 graph must give the torch model's token states
    (else OnnxExportError) and, when `bidirectional`, pass the attention probe (else OnnxCausalGraphError); on any
    error the onnx folder is removed. `folder` is meant to be the temporary folder of an atomic write, so a refused
    graph never lands in an export."""
    import shutil

    require_onnx()
    # ONNX for CPUs is fp32 (the quantizer's input); a model loaded in bf16 or on a GPU is exported from a copy.
    reference = next(model.parameters())
    if reference.dtype != torch.float32 or reference.device.type != "cpu":
        model = copy.deepcopy(model).to("cpu", torch.float32)
    calibration = _calibration_batch(AutoTokenizer.from_pretrained(folder))
    smoothed = _smoothed_copy(model, calibration)
    target = folder / ONNX_FOLDER
    target.mkdir()
    try:
        fp32, int8 = folder / ONNX_FILE, folder / QUANTIZED_FILE
        _export(smoothed, fp32)
        backbone = OnnxBackbone(fp32, model.config)
        if bidirectional and not probe_attention(backbone, model.config.vocab_size):
            raise OnnxCausalGraphError(
                f"the ONNX graph exported from {model.config.model_type} is causal (the first token does not see "
                "the last one): the export lost the bidirectional attention mask; no ONNX file was written"
            )
        _check_agreement(backbone, model)
        del smoothed
        external = fp32.with_name(fp32.name + ".data").exists()
        quantize_within_tolerance(
            backbone, int8, calibration, model.config.num_hidden_layers, external, min_cosine=int8_min_cosine
        )
    except BaseException:
        shutil.rmtree(target)
        raise
    return sorted(target.iterdir())


def quantize_within_tolerance(
    fp32: OnnxBackbone,
    target: Path,
    batch: dict[str, torch.Tensor],
    layers: int,
    external: bool = False,
    min_cosine: float = INT8_MIN_COSINE,
) -> int:
    """Write `fp32`'s int8 copy to `target` with its lowest 0, 1, 2, 3, 4, 6, 8 ... (at most half of its `layers`)
    layers left in fp32: the fewest whose text vectors on `batch` keep a mean cosine of `min_cosine` to fp32's
    (0: every layer int8, unchecked); returns that number of layers. A model whose lowest layers feed massive
    activations (untrained or trained bidirectional SmolLM2: token states of norm 1,000-11,000 from its 10th layer on,
    of which the output is a small difference) turns int8's rounding there into a different output; higher layers'
    rounding costs little."""
    if min_cosine <= 0:
        quantize_per_token(fp32.path, target, external)
        return 0
    reference = _text_vectors(fp32, batch)

    def cosine_to_fp32() -> float:
        return float((reference * _text_vectors(OnnxBackbone(target, fp32.config), batch)).sum(-1).mean())

    per_layer = max(quantize_per_token(fp32.path, target, external) // max(layers, 1), 1)
    kept, cosine = 0, cosine_to_fp32()
    every_layer = cosine  # for the warning
    for count in (count for count in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if count <= layers // 2):
        if cosine >= min_cosine:
            break
        kept = count
        quantize_per_token(fp32.path, target, external, fp32_matmuls=kept * per_layer)
        cosine = cosine_to_fp32()
    if kept:
        # `target` sits in the export's temporary folder: the user knows it by its name in the encoder folder.
        name = f"{target.parent.name}/{target.name}"
        logger.warning(
            "%s: with every layer int8 its text vectors kept a mean cosine of %.4f to fp32's on the calibration "
            "texts (below %s); the lowest %d of %d layers stay fp32 (%.4f%s), which costs some of int8's speed; "
            "int8_min_cosine 0 (--int8-min-cosine 0) keeps every layer int8",
            name,
            every_layer,
            min_cosine,
            kept,
            layers,
            cosine,
            "" if cosine >= min_cosine else f", still below {min_cosine}: no more layers are tried",
        )
    return kept


@torch.no_grad()
def _text_vectors(backbone: OnnxBackbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean of each text's token states, unit length."""
    states = backbone(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    return nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)


def _export(model: PreTrainedModel, path: Path) -> None:
    """torch.onnx (dynamo) export of the backbone with dynamic batch and sequence axes, traced on a padded batch."""
    sample = _sample_batch(model.config.vocab_size, rows=2, length=8, padding=3, seed=0)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    was_training = model.training
    graph = _TokenStates(model).eval()
    # The exporter logs each missing optional operator library (torchvision) as a warning: noise, not a problem.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        torch.onnx.export(
            graph,
            (sample["input_ids"], sample["attention_mask"]),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=axes,
            dynamo=True,
            external_data=size > SINGLE_FILE_BYTES,
            verbose=False,
        )
    except Exception as error:
        raise OnnxExportError(
            f"torch.onnx cannot export {model.config.model_type} ({type(model).__name__}): "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    finally:
        exporter_log.setLevel(level)
        model.train(was_training)


@torch.no_grad()
def _check_agreement(backbone: OnnxBackbone, model: PreTrainedModel) -> None:
    batch = _sample_batch(model.config.vocab_size, rows=3, length=11, padding=4, seed=1)
    error = relative_error(model, backbone, batch)
    if not error <= MAX_RELATIVE_ERROR:
        raise OnnxExportError(
            f"the ONNX graph exported from {model.config.model_type} does not compute the model's token states "
            f"(relative error {error:.2g} > {MAX_RELATIVE_ERROR}); no ONNX file was written"
        )


# --- SmoothQuant: activation outliers moved into the weights before int8 ------------------------------------------
SMOOTHING_ALPHA = 0.5  # SmoothQuant's default: splits each channel's range evenly between activation and weight
CALIBRATION_TEXTS = 64
CALIBRATION_TOKENS = 128
# fp32 rounding of the rescaled weights, amplified by an untrained bidirectional model (SmolLM2: 1.7e-4).
SMOOTHING_MAX_RELATIVE_ERROR = 1e-3


def _calibration_batch(tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """The first sentences of lm2vec's packaged STS-B train split (not the dev split benchmarks score), padded."""
    from lm2vec.data.formats import read_sts
    from lm2vec.data.packaged import SHIPPED_STSB

    data = read_sts(SHIPPED_STSB / "sts-train.csv")
    texts = [*data.sentences1[: CALIBRATION_TEXTS // 2], *data.sentences2[: CALIBRATION_TEXTS // 2]]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, padding=True, truncation=True, max_length=CALIBRATION_TOKENS, return_tensors="pt")
    return {name: batch[name] for name in INPUT_NAMES}


def _norm_offset(norm: nn.Module) -> float:
    """1 for a norm that scales by (1 + weight) (Gemma's), 0 for one that scales by weight: with a zero weight
    (and bias) the first outputs the normalized input, the second zeros."""
    saved = [(p, p.detach().clone()) for p in (norm.weight, getattr(norm, "bias", None)) if p is not None]
    try:
        for parameter, _ in saved:
            parameter.data.zero_()
        probe = norm(torch.randn(2, norm.weight.numel(), generator=torch.Generator().manual_seed(0)))
    finally:
        for parameter, value in saved:
            parameter.data.copy_(value)
    return 0.0 if bool(probe.abs().max() == 0) else 1.0


@torch.no_grad()
def _smoothed_copy(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A smoothed copy of `model`, or `model` itself (with a warning) where smoothing does not keep its token states:
    an architecture whose norm output also feeds something other than the linears found would change."""
    smoothed = copy.deepcopy(model).eval()
    smooth_activations(smoothed, batch)
    if (error := relative_error(model, smoothed, batch)) <= SMOOTHING_MAX_RELATIVE_ERROR:
        return smoothed
    logger.warning(
        "smoothing changes %s's token states (relative error %.2g): its int8 graph is quantized unsmoothed",
        model.config.model_type,
        error,
    )
    return model


@torch.no_grad()
def smooth_activations(model: PreTrainedModel, batch: dict[str, torch.Tensor], alpha: float = SMOOTHING_ALPHA) -> int:
    """SmoothQuant (arXiv 2211.10438) in place: each linear's per-input-channel activation range on `batch` is
    divided by s = max|x|^alpha / max|w|^(1 - alpha), folded into what produces its input (a norm's weight and bias,
    or up_proj's output rows for down_proj) and multiplied into the linear's input columns. In fp32 the model
    computes the same function; int8's activation scale (per token) then no longer goes to a few outlier channels.
    Returns the number of linears smoothed."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    norms = [
        module
        for module in model.modules()
        if not isinstance(module, nn.Linear | nn.Embedding)
        and not list(module.children())
        and isinstance(getattr(module, "weight", None), nn.Parameter)
        and module.weight.dim() == 1
    ]
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    consumers: dict[nn.Module, list[nn.Linear]] = {}
    ranges: dict[nn.Linear, torch.Tensor] = {}

    def record_output(module, args, output) -> None:
        outputs[id(output)] = (module, output)  # the tensor is kept: its id cannot be reused during the pass

    def record_input(module, args) -> None:
        (inputs,) = args
        ranges[module] = inputs.detach().flatten(0, -2).abs().amax(0).float()
        if (producer := outputs.get(id(inputs))) is not None and producer[1] is inputs:
            consumers.setdefault(producer[0], []).append(module)

    hooks = [norm.register_forward_hook(record_output) for norm in norms]
    hooks += [linear.register_forward_pre_hook(record_input) for linear in linears]
    try:
        model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
        outputs.clear()

    def scales(targets: list[nn.Linear]) -> torch.Tensor:
        weight_range = torch.stack([t.weight.abs().amax(0) for t in targets]).amax(0).float()
        activation_range = ranges[targets[0]]
        return (activation_range.pow(alpha) / weight_range.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)

    smoothed = 0
    for norm, targets in consumers.items():
        s = scales(targets)
        offset = _norm_offset(norm)
        norm.weight.copy_((norm.weight + offset) / s - offset)
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(s)
        for target in targets:
            target.weight.mul_(s)
        smoothed += len(targets)
    # Llama-style MLPs, down_proj(act(gate_proj(x)) * up_proj(x)): down_proj's input is linear in up_proj's rows.
    for mlp in model.modules():
        up, down = getattr(mlp, "up_proj", None), getattr(mlp, "down_proj", None)
        if isinstance(up, nn.Linear) and isinstance(down, nn.Linear) and hasattr(mlp, "gate_proj") and down in ranges:
            s = scales([down])
            up.weight.div_(s[:, None])
            if up.bias is not None:
                up.bias.div_(s)
            down.weight.mul_(s)
            smoothed += 1
    return smoothed


def relative_error(reference: nn.Module, candidate: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """The largest deviation of `candidate`'s token states from `reference`'s on `batch`'s real tokens, relative to
    the largest state."""
    expected = reference(**batch).last_hidden_state.float()
    got = candidate(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].bool()
    return float((expected - got)[mask].abs().max() / expected[mask].abs().max().clamp(min=1e-6))


# --- int8: weights per output channel, activations per token -------------------------------------------------------
INT8_LEVELS = 127  # symmetric int8 embedding rows, [-127, 127]
# MatMul weights take 7 bits, [-63, 63] (onnxruntime's reduce_range): on AVX2 without VNNI its uint8 x int8 kernel
# adds pairs of products in int16 (vpmaddubsw), which saturates above 32,767: 255 x 127 x 2 does, 255 x 63 x 2 not.
MATMUL_WEIGHT_LEVELS = 63
UINT8_LEVELS = 255  # activations, [0, 255] with each token's zero point
WEIGHT_LEVELS_KEY = "lm2vec.matmul_weight_levels"  # in the int8 file's metadata: its weights are safe on AVX2
FP32_MATMULS_KEY = "lm2vec.fp32_matmuls"  # in the int8 file's metadata: the lowest MatMuls left in fp32


def _int8(values, axis: int, levels: int = INT8_LEVELS):
    """Symmetric int8 `values` with one scale per slice along `axis` (each slice's max |value| maps to `levels`)."""
    import numpy as np

    scale = np.maximum(np.abs(values).max(axis, keepdims=True), 1e-12) / levels
    return np.clip(np.round(values / scale), -levels, levels).astype(np.int8), scale.astype(np.float32)


def _zero_point_rows(weights, count: int):
    """`count` int8 rows whose column sums are minus `weights`' (each row takes up to MATMUL_WEIGHT_LEVELS of what
    is left)."""
    import numpy as np

    total = -weights.astype(np.int64).sum(0)
    filled = np.clip(np.abs(total) - MATMUL_WEIGHT_LEVELS * np.arange(count)[:, None], 0, MATMUL_WEIGHT_LEVELS)
    return (np.sign(total) * filled).astype(np.int8)


def _token_quantizer(activation: str, prefix: str) -> list:
    """The nodes that quantize `activation` (..., K) per token, asymmetrically: `{prefix}_quantized` (the tokens as
    uint8 rows, each followed by its zero point in the zero-point channels), `{prefix}_scale_column` (one scale a row)
    and `{prefix}_leading_shape` (the activation's shape without K); they read the constants `{prefix}_rows_shape`
    ([-1, K]) and `{prefix}_channels_shape` ([1, channels]) and those named `int8_*` in `quantize_per_token`."""
    from onnx import TensorProto, helper

    return [
        # the token's range, 0 included: its scale and zero point (..., 1)
        helper.make_node("ReduceMax", [activation, "int8_last_axis"], [f"{prefix}_max"], keepdims=1),
        helper.make_node("ReduceMin", [activation, "int8_last_axis"], [f"{prefix}_min"], keepdims=1),
        helper.make_node("Max", [f"{prefix}_max", "int8_zero"], [f"{prefix}_high"]),
        helper.make_node("Min", [f"{prefix}_min", "int8_zero"], [f"{prefix}_low"]),
        helper.make_node("Sub", [f"{prefix}_high", f"{prefix}_low"], [f"{prefix}_range"]),
        helper.make_node("Mul", [f"{prefix}_range", "int8_levels"], [f"{prefix}_raw_scale"]),
        helper.make_node("Max", [f"{prefix}_raw_scale", "int8_smallest_scale"], [f"{prefix}_scale"]),
        helper.make_node("Div", [f"{prefix}_low", f"{prefix}_scale"], [f"{prefix}_negated_zero_point"]),
        helper.make_node("Neg", [f"{prefix}_negated_zero_point"], [f"{prefix}_unrounded_zero_point"]),
        helper.make_node("Round", [f"{prefix}_unrounded_zero_point"], [f"{prefix}_float_zero_point"]),
        helper.make_node("Cast", [f"{prefix}_float_zero_point"], [f"{prefix}_zero_point"], to=TensorProto.UINT8),
        # tokens as rows (tokens, K), one scale and zero point each, then the zero-point channels
        helper.make_node("Reshape", [activation, f"{prefix}_rows_shape"], [f"{prefix}_rows"]),
        helper.make_node("Reshape", [f"{prefix}_scale", "int8_flat"], [f"{prefix}_row_scales"]),
        helper.make_node("Reshape", [f"{prefix}_zero_point", "int8_flat"], [f"{prefix}_row_zero_points"]),
        helper.make_node(
            "QuantizeLinear",
            [f"{prefix}_rows", f"{prefix}_row_scales", f"{prefix}_row_zero_points"],
            [f"{prefix}_quantized_rows"],
            axis=0,
        ),
        helper.make_node("Reshape", [f"{prefix}_zero_point", "int8_column"], [f"{prefix}_zero_point_column"]),
        helper.make_node("Expand", [f"{prefix}_zero_point_column", f"{prefix}_channels_shape"], [f"{prefix}_channels"]),
        helper.make_node("Concat", [f"{prefix}_quantized_rows", f"{prefix}_channels"], [f"{prefix}_quantized"], axis=1),
        helper.make_node("Reshape", [f"{prefix}_scale", "int8_column"], [f"{prefix}_scale_column"]),
        helper.make_node("Shape", [activation], [f"{prefix}_leading_shape"], end=-1),
    ]


def quantize_per_token(source: Path, target: Path, external: bool = False, fp32_matmuls: int = 0) -> int:
    """Write the int8 copy of the fp32 graph `source` to `target` (its weights in `target.data` when `external`);
    return the number of MatMuls quantized. The first `fp32_matmuls` MatMuls by a constant weight, in the graph's
    order (the lowest layers'), stay fp32.

    Each MatMul by a constant 2-D weight becomes com.microsoft's MatMulIntegerToFloat: int8 weights with one scale per
    output channel, and activations quantized to uint8 at run time per token (its [min, max], 0 included, onto
    [0, 255] with its own zero point; an input that several MatMuls read is quantized once), the output multiplied
    back by the token's scale. The operator takes one zero point for all rows, 0 here: each token's own goes in as
    data, its row extended by channels holding its zero point and the weight by int8 rows summing to minus the
    weight's column sums, which subtracts exactly zero point x column sum. A Gather from a constant 2-D table (the
    embedding) reads int8 rows with one scale each. A token's quantization depends on its own values only, so a
    text's vector does not depend on the other texts of its batch, nor on their padding. `source` has opset 18 or
    later (torch.onnx's dynamo exporter writes 18 and up): ReduceMax takes its axes as an input."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer if tensor.data_type == TensorProto.FLOAT}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    replaced: set[str] = set()

    def is_table(name: str) -> bool:
        return name in constants and len(constants[name].dims) == 2

    def table(name: str) -> np.ndarray | None:
        """The constant 2-D fp32 table `name`, taken out of the graph when nothing else reads it."""
        if not is_table(name):
            return None
        if readers[name] == 1:
            replaced.add(name)
        return numpy_helper.to_array(constants[name])

    # The weights first: an input's zero-point channels are as many as its widest reader needs.
    quantized: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # MatMul output -> int8 weight, scales per column
    channels: dict[str, int] = {}  # input -> zero-point channels
    weight_matmuls = [node for node in graph.node if node.op_type == "MatMul" and is_table(node.input[1])]
    for node in weight_matmuls[fp32_matmuls:]:
        weights, scales = _int8(table(node.input[1]), axis=0, levels=MATMUL_WEIGHT_LEVELS)
        quantized[node.output[0]] = weights, scales.reshape(-1)
        needed = int(np.abs(weights.astype(np.int64).sum(0)).max()) // MATMUL_WEIGHT_LEVELS + 1
        channels[node.input[0]] = max(channels.get(node.input[0], 0), needed)
    new_constants = {
        "int8_one": np.array(1.0, np.float32),
        "int8_zero": np.array(0.0, np.float32),
        "int8_uint8_zero": np.array(0, np.uint8),
        "int8_levels": np.array(1 / UINT8_LEVELS, np.float32),
        "int8_smallest_scale": np.array(1e-30, np.float32),  # an all-zero token: zeros, not 0 / 0
        "int8_last_axis": np.array([-1], np.int64),
        "int8_flat": np.array([-1], np.int64),
        "int8_column": np.array([-1, 1], np.int64),
    }
    quantized_inputs: set[str] = set()
    nodes = []
    for node in graph.node:
        if node.output[0] in quantized:
            activation, out = node.input[0], node.output[0]
            prefix = f"{activation}_int8"  # of the names computed from the activation
            if activation not in quantized_inputs:
                quantized_inputs.add(activation)
                new_constants[f"{prefix}_rows_shape"] = np.array([-1, quantized[out][0].shape[0]], np.int64)
                new_constants[f"{prefix}_channels_shape"] = np.array([1, channels[activation]], np.int64)
                nodes += _token_quantizer(activation, prefix)
            weights, scales = quantized[out]
            new_constants[f"{out}_weight_int8"] = np.concatenate(
                [weights, _zero_point_rows(weights, channels[activation])]
            )
            new_constants[f"{out}_weight_scale"] = scales
            new_constants[f"{out}_columns"] = np.array([weights.shape[1]], np.int64)
            inputs = [f"{prefix}_quantized", f"{out}_weight_int8", "int8_one", f"{out}_weight_scale", "int8_uint8_zero"]
            nodes += [
                helper.make_node("MatMulIntegerToFloat", inputs, [f"{out}_unscaled"], domain="com.microsoft"),
                helper.make_node("Mul", [f"{out}_unscaled", f"{prefix}_scale_column"], [f"{out}_rows"]),
                helper.make_node("Concat", [f"{prefix}_leading_shape", f"{out}_columns"], [f"{out}_shape"], axis=0),
                helper.make_node("Reshape", [f"{out}_rows", f"{out}_shape"], [out]),
            ]
        elif (
            node.op_type == "Gather"
            and not any(attribute.name == "axis" and attribute.i != 0 for attribute in node.attribute)
            and (rows := table(node.input[0])) is not None
        ):
            out = node.output[0]
            new_constants[f"{out}_table_int8"], new_constants[f"{out}_table_scale"] = _int8(rows, axis=1)
            nodes += [
                helper.make_node("Gather", [f"{out}_table_int8", node.input[1]], [f"{out}_int8"]),
                helper.make_node("Cast", [f"{out}_int8"], [f"{out}_unscaled"], to=TensorProto.FLOAT),
                helper.make_node("Gather", [f"{out}_table_scale", node.input[1]], [f"{out}_scale"]),
                helper.make_node("Mul", [f"{out}_unscaled", f"{out}_scale"], [out]),
            ]
        else:
            nodes.append(node)
    kept = [tensor for tensor in graph.initializer if tensor.name not in replaced]
    graph.ClearField("initializer")
    graph.initializer.extend([*kept, *(numpy_helper.from_array(value, name) for name, value in new_constants.items())])
    graph.ClearField("node")
    graph.node.extend(nodes)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    helper.set_model_props(model, {WEIGHT_LEVELS_KEY: str(MATMUL_WEIGHT_LEVELS), FP32_MATMULS_KEY: str(fp32_matmuls)})
    onnx.save_model(
        model, str(target), save_as_external_data=external, all_tensors_to_one_file=True, location=f"{target.name}.data"
    )
    return len(quantized)


class OnnxBackbone(nn.Module):
    """An onnxruntime session (CPU) in place of the backbone: `(input_ids=, attention_mask=)` gives an output with
    `last_hidden_state`, as a transformers model does; it has no torch parameters and runs on the CPU. A pass runs
    on as many threads as torch's (`torch.get_num_threads()` at load), unless `set_num_threads` says otherwise."""

    def __init__(self, path: str | os.PathLike, config) -> None:
        super().__init__()
        self.path = Path(path)
        self.config = config
        self.threads = 0
        self.set_num_threads(torch.get_num_threads())

    def set_num_threads(self, threads: int) -> None:
        """Run each pass on `threads` threads, the caller's included. onnxruntime fixes a session's thread pool
        when it opens, so a change opens the session again. Passes on one session may run at once (`lm2vec serve
        --workers`); with `threads` = 1 each runs on its caller's thread alone, so none waits for a pool."""
        import onnxruntime

        if threads == self.threads:
            return
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.threads = threads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        inputs = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        (hidden,) = self.session.run([OUTPUT_NAME], inputs)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))


def cpu_adds_int8_pairs_exactly() -> bool:
    """Whether this CPU has VNNI or AMX, with which onnxruntime's uint8 x int8 kernel cannot saturate; False where
    the flags cannot be read (not Linux)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def load_onnx_backbone(
    folder: str | os.PathLike, onnx_file: str, bidirectional: bool
) -> tuple[OnnxBackbone, PreTrainedTokenizerBase]:
    """The session of `folder/onnx_file` and the folder's tokenizer; a bidirectional encoder's graph is probed as a
    torch load is (OnnxCausalGraphError if it is causal)."""
    check_backend(folder, "onnx", onnx_file)
    backbone = OnnxBackbone(Path(folder) / onnx_file, AutoConfig.from_pretrained(folder))
    eight_bit = WEIGHT_LEVELS_KEY not in backbone.session.get_modelmeta().custom_metadata_map
    if Path(onnx_file) == Path(QUANTIZED_FILE) and eight_bit and not cpu_adds_int8_pairs_exactly():
        raise OnnxBackendError(
            f"{Path(folder) / onnx_file} has 8-bit weights (an lm2vec before 2026-12-07 wrote it), whose products "
            "overflow on this CPU (AVX2 without VNNI): its vectors would be wrong. Export it again with `lm2vec "
            "convert FOLDER OUT --onnx`"
        )
    if bidirectional and not probe_attention(backbone, backbone.config.vocab_size):
        raise OnnxCausalGraphError(
            f"{Path(folder) / onnx_file} is causal (the first token does not see the last one) but the encoder is "
            "bidirectional; export it again with `lm2vec convert FOLDER OUT --onnx`"
        )
    return backbone, AutoTokenizer.from_pretrained(folder)


__all__ = [
    "BACKENDS",
    "ONNX_FILE",
    "QUANTIZED_FILE",
    "OnnxBackbone",
    "OnnxBackendError",
    "OnnxCausalGraphError",
    "OnnxExportError",
    "OnnxUnavailableError",
    "check_backend",
    "load_onnx_backbone",
    "onnx_available",
    "relative_error",
    "smooth_activations",
    "write_onnx_files",
]
