"""Memory and time of a plan's training stages, before any work: `lm2vec plan` prints them, `lm2vec run` refuses a
stage that cannot fit.

The model is built on the `meta` device from its config alone (no weights): `pkg:` models read the config of their
converted copy in the lm2vec cache, else their GGUF's metadata; local folders their config.json; a hub id its
config.json only, else lm2vec's copy of the architecture shape of the GPU recipes' models (`model_shapes.json`),
else `--config-from`. Every term is a simple formula, per device, in bytes:

- weights: the parameters (the causal LM with its head for MNTP, the backbone for the contrastive stages) times the
  training dtype's size: bf16 on GPUs, fp32 on CPUs (`lm2vec.modeling.loading.default_dtype`). With a stage's
  `fsdp` on several devices, 1/N of them, plus what FSDP2 gathers whole while it runs: the parameters outside the
  decoder layers (embeddings, head, final norm) and one layer's.
- LoRA: r x (in + out) parameters per adapted linear layer of the backbone, each with its fp32 weight, gradient
  and two AdamW states: 16 bytes a parameter.
- activations, kept for the backward pass by the tokens that carry a graph (MNTP: batch x max_seq_length;
  SimCSE: 2 x batch rows, supervised: (2 + hard negatives) x batch rows, of max_length tokens; with GradCache only
  one mini-batch of rows carries a graph). Per token and decoder layer, in elements of the compute dtype (counted
  from the tensors autograd keeps, with lm2vec's fused LoRA layers, which recompute the norm outputs):
      norms x h          each hidden-size norm keeps its input (2 in Llama-like layers, 4 in Gemma-2/3's)
    + 2 q + 2 kv         q, k, v and the attention output (q = heads x head_dim, kv = kv_heads x head_dim)
    + q + kv             only where the layer has q/k norms (Gemma-3, Qwen-3), which keep their inputs
    + 2 i                the gated MLP's gate and up outputs (i: intermediate size)
    + r x adapted        the LoRA A output of each adapted projection
    + q + s x heads x L  only where the (heads, L, L) scores are materialised: eager attention, or SDPA with
                         attention dropout on a CPU (its math path); s = 1 (the softmax output), + 1 with logit
                         soft-capping (Gemma-2), + 2 with attention dropout (the dropped copy and its mask).
  plus h per token for the final norm. With gradient checkpointing a layer keeps only its input (h per token) and
  one layer's activations are rebuilt at a time in the backward pass.
- logits (MNTP): the LM head runs on the masked positions only (mask_prob x tokens; every position without
  `sparse_lm_head`): rows x vocab x (its output in the compute dtype + fp32 log-probabilities kept by the loss +
  their fp32 gradient), + the compute dtype once more with logit soft-capping.
- runtime (CPUs only): what a training process holds besides the terms above, CPU_RUNTIME_BYTES, a measured
  baseline: benchmarks/plan_check.py prints a stage's peak RSS minus its model terms (0.55-0.65 GiB for SmolLM2 at
  small batches; importing the training stack alone takes 0.47 GiB, the tokenizer, data and allocator the rest).

Time: FLOPs = k x forward FLOPs x tokens, forward FLOPs per token = 2 x (the decoder's linear weights) + 4 x layers
x L x q (attention scores and their weighted sum) + 2 x h x vocab for each LM-head row (MNTP). k = 2: the forward
pass and the backward pass to the activations; a frozen base needs no weight gradients, so this is the usual
6 x params x tokens with the weight-gradient third dropped (LoRA's own FLOPs are negligible); + 1 with gradient
checkpointing (the recomputed forward), + 1 with GradCache (its no-grad embedding pass). A supervised stage that
mines hard negatives first adds one forward pass over the texts mining encodes: the queries its batches draw and the
positives of their sources (counted from the data where it exists when planning; else the queries only, and the
table says so). Hours = FLOPs / (devices x peak FLOP/s x MFU). The peak is DEFAULT_GPU_FLOPS on GPUs (an H100's
dense bf16), on CPUs a short fp32 matmul measured when planning; `--device-flops` sets it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm2vec.errors import LM2VecError
from lm2vec.modeling.pruning import kept_layers, prune_config
from lm2vec.pipeline.plan import Plan

SHAPES_FILE = Path(__file__).with_name("model_shapes.json")
# A CPU training process's peak RSS beyond the model terms (benchmarks/plan_check.py measures it).
CPU_RUNTIME_BYTES = 700 * 2**20
DEFAULT_GPU_FLOPS = 989e12  # H100 SXM, dense bf16
DEFAULT_MFU = 0.4
LORA_BYTES_PER_PARAMETER = 16  # fp32 weight, gradient and AdamW's two states
FP32 = 4
ESTIMATED = ("mntp", "simcse", "supervised")  # the training stages whose options the formulas read
UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


class EstimateError(LM2VecError, ValueError):
    """The plan's memory or time cannot be estimated as asked (a config that cannot be read, a bad quantity)."""


class DoesNotFitError(LM2VecError, RuntimeError):
    """A training stage needs more memory per device than the device has; the message names what to change."""


def parse_quantity(text: str | float, what: str) -> float:
    """`80GB`, `80GiB`, `24G`, `989T`, `312e12` as a number (GB = 1e9 bytes, GiB = 2^30)."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgtp]i?)?\s*(b|flops?(?:/s)?)?\s*", str(text), re.IGNORECASE)
    if match is None:
        raise EstimateError(f"{what} {text!r} is not a quantity such as 80GB, 80GiB or 989e12.")
    return float(match.group(1)) * UNITS[(match.group(2) or "").upper()]


@dataclass(frozen=True)
class Target:
    """The devices a plan is estimated for: `gpus` GPUs (0: this CPU) of `memory` bytes each (None: unknown)."""

    gpus: int
    memory: float | None
    mfu: float
    device_flops: float | None = None  # peak FLOP/s of one device; None: an H100's bf16, or this CPU's measured

    @property
    def flops(self) -> float:
        """Read only for hours: the CPU's rate is measured (a tenth of a second), which a memory check never needs."""
        if self.device_flops is not None:
            return self.device_flops
        return DEFAULT_GPU_FLOPS if self.on_gpu else cpu_flops()

    @property
    def on_gpu(self) -> bool:
        return self.gpus > 0

    @property
    def devices(self) -> int:
        return max(self.gpus, 1)

    @property
    def compute_bytes(self) -> int:
        return 2 if self.on_gpu else FP32  # bf16 on GPUs, fp32 on CPUs, as training loads the weights

    def describe(self) -> str:
        memory = f" with {gib(self.memory)} each" if self.memory else ""
        where = f"{self.gpus} GPU(s){memory}, bf16 weights" if self.on_gpu else f"CPU{memory} of RAM, fp32 weights"
        return f"{where}; peak {self.flops / 1e12:.3g} TFLOP/s a device, MFU {self.mfu}"


def target_for(
    gpus: int | None = None, gpu_memory: str | None = None, mfu: float = DEFAULT_MFU, device_flops: str | None = None
) -> Target:
    """The devices to estimate for: `gpus` (default: this machine's CUDA devices, or 1 when `gpu_memory` is given),
    each of `gpu_memory` (default: the CUDA device's own memory on this machine); 0 GPUs: this CPU and its RAM."""
    import torch

    if not 0 < mfu <= 1:
        raise EstimateError(f"--mfu must be in (0, 1], got {mfu}.")
    if gpus is None:
        gpus = torch.cuda.device_count() or (1 if gpu_memory else 0)
    if gpus < 0:
        raise EstimateError(f"--gpus must be >= 0, got {gpus}.")
    if gpus == 0 and gpu_memory:
        raise EstimateError("--gpu-memory is for GPUs; with --gpus 0 the plan is for this CPU and its RAM.")
    if gpu_memory:
        memory: float | None = parse_quantity(gpu_memory, "--gpu-memory")
    elif gpus:
        memory = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    else:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    flops = parse_quantity(device_flops, "--device-flops") if device_flops else None
    return Target(gpus, memory, mfu, flops)


@functools.cache
def cpu_flops() -> float:
    """This CPU's fp32 matmul rate: the fastest of a few 1024 x 1024 products (a tenth of a second)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # warm-up
    fastest = math.inf
    for _ in range(5):  # the fastest of a few: other processes share the cores
        started = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - started)
    return 2 * 1024**3 / fastest


def model_config(source: str, config_from: str | None = None):
    """The transformers config of `source` without its weights (see the module docstring for where it comes from)."""
    from transformers import AutoConfig

    from lm2vec.modeling.sources import ModelSourceError, check_source, converted_folder

    if config_from:
        path = Path(config_from)
        if path.is_file():
            values = json.loads(path.read_text())
            return AutoConfig.for_model(values.pop("model_type"), **values)
        if (path / "config.json").is_file():
            return AutoConfig.from_pretrained(path)
        raise EstimateError(f"--config-from {config_from}: neither a config.json file nor a folder holding one.")
    if source in (shapes := json.loads(SHAPES_FILE.read_text())):
        values = {key: value for key, value in shapes[source].items() if not key.startswith("_")}
        return AutoConfig.for_model(values.pop("model_type"), **values)
    try:
        located = check_source(source)
    except ModelSourceError as error:
        raise EstimateError(
            f"model {source!r}: {error} Without it, `lm2vec plan` and `lm2vec run --dry-run` take its config.json "
            "with --config-from."
        ) from None
    if isinstance(located, Path) and located.suffix == ".gguf":
        converted = converted_folder(located)
        if (converted / "config.json").is_file():
            return AutoConfig.from_pretrained(converted)
        return AutoConfig.from_pretrained(located.parent, gguf_file=located.name)
    return AutoConfig.from_pretrained(located)


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of a model, read from its meta-device copy."""

    model_type: str
    parameters: int  # the causal LM's, with its head (counted once where tied to the embeddings)
    backbone_parameters: int
    linear_parameters: int  # the decoder layers' linear weights: the matmul FLOPs
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    norms_per_layer: int  # hidden-size norms of a decoder layer
    head_norms: bool  # q/k norms (Gemma-3, Qwen-3)
    softcapping: bool  # attention logit soft-capping (Gemma-2)
    final_softcapping: bool
    linears: tuple[tuple[str, int, int], ...]  # (name, in, out) of every linear layer of the backbone

    def lora_parameters(self, rank: int, targets: list[str]) -> int:
        """peft's count: r x (in + out) for each targeted linear layer ("all-linear": every one of the backbone)."""
        return sum(rank * (n_in + n_out) for name, n_in, n_out in self.linears if _targeted(name, targets))

    def adapted_per_layer(self, targets: list[str]) -> float:
        return sum(_targeted(name, targets) for name, _, _ in self.linears) / self.layers


def _targeted(name: str, targets: list[str]) -> bool:
    """Whether peft puts a LoRA adapter on the linear layer `name` for `lora_target_modules` = `targets`."""
    return targets == ["all-linear"] or any(name == target or name.endswith(f".{target}") for target in targets)


@functools.cache
def source_shape(source: str, config_from: str | None = None, prune_layers: float = 0.0) -> ModelShape:
    """`model_shape` of a model source's config, with `prune_layers` of its top decoder layers dropped, once per
    process."""
    config = model_config(source, config_from)
    if prune_layers:
        text = getattr(config, "text_config", None) or config
        prune_config(text, kept_layers(text.num_hidden_layers, prune_layers))
    return model_shape(config)


def model_shape(config) -> ModelShape:
    """Build the causal LM of `config` on the meta device (no memory, no weights) and measure it."""
    import torch
    from transformers import AutoModelForCausalLM

    from lm2vec.modeling.loading import backbone_of

    with torch.device("meta"):  # (accelerate's init_empty_weights would untie the LM head from the embeddings)
        causal_lm = AutoModelForCausalLM.from_config(config)
    backbone = backbone_of(causal_lm)
    text = getattr(config, "text_config", None) or config
    hidden, heads = text.hidden_size, text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    layer = backbone.layers[0]
    norm_sizes = [
        module.weight.shape[0]
        for module in layer.modules()
        if "norm" in type(module).__name__.lower() and getattr(module, "weight", None) is not None
    ]
    linears = tuple(
        (name, module.in_features, module.out_features)
        for name, module in backbone.named_modules()
        if isinstance(module, torch.nn.Linear)
    )
    return ModelShape(
        model_type=config.model_type,
        parameters=sum(p.numel() for p in causal_lm.parameters()),
        backbone_parameters=sum(p.numel() for p in backbone.parameters()),
        linear_parameters=sum(n_in * n_out for _, n_in, n_out in linears),
        hidden=hidden,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab=text.vocab_size,
        norms_per_layer=sum(size == hidden for size in norm_sizes),
        head_norms=any(size == head_dim != hidden for size in norm_sizes),
        softcapping=bool(getattr(text, "attn_logit_softcapping", None)),
        final_softcapping=bool(getattr(text, "final_logit_softcapping", None)),
        linears=linears,
    )


@dataclass
class StageEstimate:
    """One training stage's estimate, per device, in bytes, with what it was computed from."""

    stage: str
    parameters: int
    trainable: int
    rows: int  # sequences a batch carries (MNTP: blocks; contrastive: texts, both sides)
    length: int  # tokens per sequence (at most)
    attention: str
    checkpointing: bool
    weights: float
    lora: float
    activations: float
    logits: float
    runtime: float
    tokens: int  # over the whole stage, all devices
    flops: float
    scores_kept: bool  # the (heads, L, L) attention scores are materialised
    sharded: bool  # the weights are sharded across the devices (`fsdp`)
    target: Target
    mined_texts: int = 0  # texts the mining pass before training encodes (0: the stage does not mine)
    mining_pool_counted: bool = True  # False: the data did not exist when planning, so only the queries are counted

    @property
    def hours(self) -> float:
        return self.flops / (self.target.devices * self.target.flops * self.target.mfu) / 3600

    @property
    def total(self) -> float:
        return self.weights + self.lora + self.activations + self.logits + self.runtime


def layer_activation_elements(
    shape: ModelShape, length: int, adapted: int, rank: int, scores_kept: bool, dropout: bool
) -> float:
    """Elements the backward pass keeps per token of one decoder layer (the module docstring's formula)."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    elements = shape.norms_per_layer * shape.hidden + 2 * q + 2 * kv + 2 * shape.intermediate + rank * adapted
    if shape.head_norms:
        elements += q + kv
    if scores_kept:
        elements += q + (1 + shape.softcapping + 2 * dropout) * shape.heads * length
    return elements


def mining_texts(options: Any, devices: int) -> tuple[int, bool]:
    """The texts a supervised stage's mining encodes (`lm2vec.training.contrastive.data.mined_records`): the records
    its batches draw and the positives of its `mining_pool` in every source holding one; and whether the positives
    were counted (the data exists when planning, or the pool is the drawn records' positives: at most one each;
    else only the queries)."""
    from lm2vec.training.contrastive.data import GroupedBatchSampler, mining_pools, supervised_data

    global_batches = options.max_steps * options.gradient_accumulation_steps
    queries = global_batches * options.per_device_batch_size * devices
    paths = [options.data] if isinstance(options.data, str) else list(options.data)
    if not all(Path(path).exists() for path in paths):
        return (2 * queries, True) if options.mining_pool == "drawn" else (queries, False)
    data = supervised_data(options)
    drawn = GroupedBatchSampler(data.groups, options.per_device_batch_size, devices, options.seed).records_drawn(
        global_batches
    )
    pools = mining_pools(data.records, drawn, data.sources, options.mining_pool)
    return sum(len(part) + len(pool) for part, pool in pools), True


def estimate_stage(
    name: str, options: Any, shape: ModelShape, target: Target, mined: tuple[int, bool] = (0, True)
) -> StageEstimate:
    """The estimate of training stage `name` (mntp, simcse, supervised) with its `options`; `mined`: the texts its
    mining pass encodes and whether that count is whole (`mining_texts`)."""
    from lm2vec.modeling.bidirectional import default_attn_implementation

    size = target.compute_bytes
    mntp = name == "mntp"
    if mntp:
        rows, length = options.per_device_batch_size, options.max_seq_length
        rows_with_graph, dropout = rows, False  # MNTP keeps the config's attention dropout: 0 in these models
        attention = default_attn_implementation(shape.model_type, options.attn_implementation)
        parameters = shape.parameters
    else:
        sides = 2 + getattr(options, "num_hard_negatives", 0) if name == "supervised" else 2
        rows, length = sides * options.per_device_batch_size, options.max_length
        rows_with_graph = min(options.mini_batch_size, rows) if options.cached and options.mini_batch_size else rows
        dropout = options.dropout > 0
        attention = default_attn_implementation(shape.model_type, None)
        parameters = shape.backbone_parameters
    scores_kept = attention == "eager" or (attention == "sdpa" and dropout and not target.on_gpu)
    adapted = shape.adapted_per_layer(options.lora_target_modules)
    per_layer = layer_activation_elements(shape, length, adapted, options.lora_r, scores_kept, dropout)
    graph_tokens = rows_with_graph * length
    if options.gradient_checkpointing:
        activations = graph_tokens * (shape.layers * shape.hidden + per_layer + shape.hidden) * size
    else:
        activations = graph_tokens * (shape.layers * per_layer + shape.hidden) * size
    head_rows = logits = 0.0
    if mntp:
        head_rows = rows * (length - 1) * (options.mask_prob if options.sparse_lm_head else 1.0)
        logits = head_rows * shape.vocab * (size + 2 * FP32 + size * shape.final_softcapping)

    weights = parameters * size
    sharded = getattr(options, "fsdp", False) and target.devices > 1
    if sharded:
        layer = shape.linear_parameters / shape.layers
        gathered = parameters - shape.linear_parameters + layer
        weights = (parameters / target.devices + gathered) * size

    steps_tokens = options.max_steps * options.gradient_accumulation_steps * target.devices
    tokens = steps_tokens * rows * length
    forward_per_token = 2 * shape.linear_parameters + 4 * shape.layers * length * shape.heads * shape.head_dim
    passes = 2 + options.gradient_checkpointing + bool(getattr(options, "cached", False))
    flops = passes * (forward_per_token * tokens + 2 * shape.hidden * shape.vocab * head_rows * steps_tokens)
    flops += forward_per_token * mined[0] * length  # mining: one forward pass, texts cut at max_length
    return StageEstimate(
        stage=name,
        parameters=parameters,
        trainable=shape.lora_parameters(options.lora_r, options.lora_target_modules),
        rows=rows,
        length=length,
        attention=attention,
        checkpointing=options.gradient_checkpointing,
        weights=weights,
        lora=shape.lora_parameters(options.lora_r, options.lora_target_modules) * LORA_BYTES_PER_PARAMETER,
        activations=activations,
        logits=logits,
        runtime=0.0 if target.on_gpu else CPU_RUNTIME_BYTES,
        tokens=tokens,
        flops=flops,
        scores_kept=scores_kept,
        sharded=sharded,
        target=target,
        mined_texts=mined[0],
        mining_pool_counted=mined[1],
    )


def estimate_plan(
    plan: Plan,
    target: Target,
    stages: list[str] | None = None,
    config_from: str | None = None,
    mining: bool = True,
) -> list[StageEstimate]:
    """The estimates of the plan's training stages (or of `stages` among them), in run order; a plug-in stage
    that trains is not estimated (its options are its own). `mining=False` skips counting the texts a mining pass
    encodes (which reads the supervised data): only the hours need it, not the memory check."""
    estimates = []
    for name in plan.trained:
        if name not in ESTIMATED or (stages is not None and name not in stages):
            continue
        options = plan.options[name]
        # An adapter trained pruned prunes every stage after it (lm2vec.modeling.pruning): the most pruned one rules.
        prune = max(getattr(plan.options[stage], "prune_layers", 0.0) for stage in plan.chain(name))
        shape = source_shape(getattr(options, "model", plan.run.model), config_from, prune)
        mined = mining_texts(options, target.devices) if mining and getattr(options, "mine_negatives", 0) else (0, True)
        estimates.append(estimate_stage(name, options, shape, target, mined))
    return estimates


def check_fits(estimates: list[StageEstimate], target: Target) -> None:
    """Raise DoesNotFitError for the first stage whose estimate exceeds the device memory, naming what to change."""
    if target.memory is None:
        return
    for estimate in estimates:
        if estimate.total <= target.memory:
            continue
        name = estimate.stage
        length_option = "max_seq_length" if name == "mntp" else "max_length"
        changes = [
            f"lower {name}.per_device_batch_size (with gradient_accumulation_steps for the same batch)",
            f"lower {name}.{length_option}",
        ]
        if not estimate.checkpointing:
            changes.append(f"set {name}.gradient_checkpointing = true")
        if estimate.scores_kept and name == "mntp":
            changes.append(f'set {name}.attn_implementation = "sdpa" (where the architecture has it)')
        if name != "mntp":
            changes.append(f"set {name}.cached = true with a smaller {name}.mini_batch_size")
        if target.devices > 1 and not estimate.sharded:
            changes.append(f"set {name}.fsdp = true to shard the weights across the {target.devices} GPUs")
        where = f"the {gib(target.memory)} of each GPU" if target.on_gpu else f"this machine's {gib(target.memory)} RAM"
        raise DoesNotFitError(
            f"{name} needs about {gib(estimate.total)} per device ({breakdown(estimate)}), more than {where}. "
            f"To fit: {'; or '.join(changes)}. `lm2vec plan` shows the estimate."
        )


def breakdown(estimate: StageEstimate) -> str:
    terms = {"weights": estimate.weights, "LoRA": estimate.lora, "activations": estimate.activations}
    terms |= {"logits": estimate.logits, "runtime": estimate.runtime}
    return ", ".join(f"{term} {gib(value)}" for term, value in terms.items() if value)


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB" if value < 10 * 2**30 else f"{value / 2**30:.1f} GiB"


def _count(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f}"


def plan_table(estimates: list[StageEstimate], target: Target) -> str:
    """The estimates as a markdown table, one column per stage."""
    rows: list[tuple[str, list[str]]] = [
        ("parameters", [_count(e.parameters) for e in estimates]),
        ("trainable (LoRA)", [_count(e.trainable) for e in estimates]),
        ("sequences x tokens a batch", [f"{e.rows} x {e.length}" for e in estimates]),
        ("attention", [e.attention + (", scores kept" if e.scores_kept else "") for e in estimates]),
        ("gradient checkpointing", ["yes" if e.checkpointing else "no" for e in estimates]),
        (
            f"weights ({'bf16' if target.on_gpu else 'fp32'})",
            [gib(e.weights) + (" (FSDP)" if e.sharded else "") for e in estimates],
        ),
        ("LoRA + grads + AdamW (fp32)", [gib(e.lora) for e in estimates]),
        ("activations", [gib(e.activations) for e in estimates]),
        ("logits", [gib(e.logits) if e.logits else "-" for e in estimates]),
    ]
    if not target.on_gpu:
        rows.append(("runtime (Python, torch)", [gib(e.runtime) for e in estimates]))
    rows.append(("total per device", [gib(e.total) for e in estimates]))
    if target.memory:
        rows.append((f"fits {gib(target.memory)}", ["yes" if e.total <= target.memory else "NO" for e in estimates]))
    if any(e.mined_texts for e in estimates):
        rows.append(("mining pass before training (texts)", [_mining(e) for e in estimates]))
    rows += [
        ("tokens", [_count(e.tokens) for e in estimates]),
        ("PFLOPs", [f"{e.flops / 1e15:.3g}" for e in estimates]),
        (
            f"hours at MFU {target.mfu}",
            [_hours(e.hours) + ("" if e.mining_pool_counted else " + positives' pass") for e in estimates],
        ),
    ]
    header = "| | " + " | ".join(e.stage for e in estimates) + " |"
    rule = "| --- |" + " ---: |" * len(estimates)
    return "\n".join([header, rule, *(f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows)])


def _mining(estimate: StageEstimate) -> str:
    if not estimate.mined_texts:
        return "-"
    return _count(estimate.mined_texts) + ("" if estimate.mining_pool_counted else " queries + their positives")


def _hours(hours: float) -> str:
    return f"{hours:.3g}" if hours >= 0.01 else f"{hours * 3600:.0f} s"


def describe_source(source: str, config_from: str | None) -> str:
    if config_from:
        return f"config from {config_from}"
    return "architecture from lm2vec's model_shapes.json" if source in json.loads(SHAPES_FILE.read_text()) else ""


__all__ = [
    "CPU_RUNTIME_BYTES",
    "DoesNotFitError",
    "EstimateError",
    "ModelShape",
    "StageEstimate",
    "Target",
    "check_fits",
    "estimate_plan",
    "estimate_stage",
    "layer_activation_elements",
    "mining_texts",
    "model_config",
    "model_shape",
    "source_shape",
    "parse_quantity",
    "plan_table",
    "target_for",
]
