"""LoRA layers that train with less memory and less random-number work: the same adapter, the same function.

peft's `lora.Linear` adds `lora_B(lora_A(dropout(x))) * scaling` to the frozen projection. In training, every
adapted projection then keeps a full-size copy of its input (the dropout output, saved by `lora_A`) and a
full-size fp32 dropout mask (saved by the multiplication), and draws one random number per input element: for
SmolLM2-135M with LoRA on its seven projections, more than half of all saved activations and about a seventh of
the step time on CPU.

`FusedLoraLinear` computes the same sum in one autograd node that keeps only the input itself (one tensor for the
projections that read the same input, as q/k/v and gate/up do) and the small `lora_A` output, and adds the
adapter's term into the projection's output in place (no full-size intermediates, so also less heap
fragmentation). On CPU the dropped positions are drawn as the gaps of a Bernoulli process (geometrically
distributed), which gives exactly the distribution of independent drops with probability p from about p times as
many random numbers, from a private generator whose seed is all the backward pass needs to draw them again.
`FusedGatedMLP` does the same for the down projection of a gated MLP and also recomputes `act(gate) * up` in the
backward pass instead of keeping it. The parameters, their names and the saved adapter are peft's own;
`fuse_lora_layers` switches a peft model's layers in place (the `fused_lora` training option, on by default;
off, training uses peft's own layers).

The fused layers read peft's `lora.Linear` internals (`PEFT_LAYER_ATTRIBUTES`, `PEFT_LAYER_PROPERTIES`, the
signature of its `forward`) and compute what its forward computes. `fuse_lora_layers` first checks all of that
against the installed peft, on a probe layer whose fused output and gradients must equal peft's, and raises
`FusedLoraError` (naming the peft version and `fused_lora = false`) rather than train with layers that no longer
fit; tests/test_lora.py asserts the same of the installed peft.

The input the adapters of q/k/v and gate/up keep is a normalisation layer's output, which nothing else keeps (a
frozen projection needs only its weight for the input's gradient). Under `recomputing_norm_outputs()` such a
tensor is not kept but recomputed in the backward pass from the norm's input, which the norm keeps anyway
(`mark_norm_outputs` marks the outputs).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import warnings

import peft
import torch
from torch import nn

from lm2vec.errors import LM2VecError

try:
    from peft.tuners.lora import Linear as LoraLinear
except ImportError:  # a peft without it: fuse_lora_layers refuses with FusedLoraError, fused_lora = false trains
    LoraLinear = None


def dropped_positions(
    numel: int, p: float, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sorted flat indices in [0, numel) of the elements that dropout drops: each independently with probability p.

    The gaps between successive drops of independent Bernoulli(p) trials are Geometric(p) on 1, 2, ...; drawing
    the gaps needs about numel * p random numbers instead of numel. Uses `generator`, else the default one."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout probability must be in (0, 1), got {p}.")
    expected = numel * p
    # Enough gaps to pass numel with overwhelming probability (6 standard deviations); otherwise draw on.
    count = int(expected + 6.0 * math.sqrt(expected * (1.0 - p)) + 16)
    chunks = []
    last = -1  # position of the last drop drawn so far
    while last < numel - 1:
        # Inverse CDF: ceil(log(1 - u) / log(1 - p)) for u uniform in [0, 1) is Geometric(p) (u = 0 gives 0 where it
        # should give 1, with probability 2^-53); about half the time of Tensor.geometric_ on CPU.
        uniform = torch.rand(count, dtype=torch.float64, device=device, generator=generator)
        gaps = uniform.neg_().log1p_().div_(math.log1p(-p)).ceil_().clamp_(min=1)
        positions = gaps.to(torch.int64).cumsum_(0).add_(last)
        chunks.append(positions)
        last = int(positions[-1])
    positions = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    return positions[: int(torch.searchsorted(positions, numel))]


class Dropped:
    """Which elements one dropout call drops, kept for the backward pass as cheaply as possible.

    On CPU: the seed of a private generator, drawn from the default one (so `torch.manual_seed` and the Trainer's
    RNG checkpoints govern it), from which `positions()` draws the sorted flat positions, again in the backward
    pass; nothing of the input's size is kept. Elsewhere random numbers are cheap and reading a position back
    would synchronise: a flat boolean mask."""

    def __init__(self, numel: int, p: float, device: torch.device):
        self.numel, self.p = numel, p
        self.mask = torch.rand(numel, device=device) < p if device.type != "cpu" else None
        self.seed = int(torch.empty((), dtype=torch.int64).random_()) if self.mask is None else None

    def positions(self) -> torch.Tensor:
        if self.mask is not None:
            return self.mask
        return dropped_positions(self.numel, self.p, generator=torch.Generator().manual_seed(self.seed))


class LoraAddmm(torch.autograd.Function):
    """`base + lora_B(lora_A(dropout(x))) * scaling`, added into `base` (the frozen projection's fresh output) in
    place, with dropout probability `p` (0: none).

    Saved for the backward: `x`, the `lora_A` output and `Dropped` (on CPU a seed), not the dropout output or an
    fp32 mask. The backward pass builds the dropout output once, as a transient, for `lora_A`'s gradient; the
    forward pass on CPU does not build it at all (see `_dropout_matmul`)."""

    @staticmethod
    def forward(ctx, base, x, weight_a, weight_b, scaling: float, p: float):
        x2d = x.reshape(-1, x.shape[-1])
        ctx.dropped = Dropped(x2d.numel(), p, x.device) if p > 0 else None
        scale = 1.0 / (1.0 - p)
        positions = ctx.dropped.positions() if ctx.dropped is not None else None
        hidden = _dropout_matmul(x2d, positions, scale, weight_a.t())
        base.view(-1, base.shape[-1]).addmm_(hidden, weight_b.t(), alpha=scaling)
        ctx.mark_dirty(base)
        ctx.save_for_backward(x, weight_a, weight_b, hidden)
        ctx.scaling, ctx.scale = scaling, scale
        return base

    @staticmethod
    def backward(ctx, grad):
        x, weight_a, weight_b, hidden = ctx.saved_tensors
        dropped = ctx.dropped.positions() if ctx.dropped is not None else None
        grad2d = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[3]:
            grad_b = (grad2d.t() @ hidden).mul_(ctx.scaling)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_hidden = (grad2d @ weight_b).mul_(ctx.scaling)
            if ctx.needs_input_grad[2]:
                grad_a = grad_hidden.t() @ _dropout(x.reshape(-1, x.shape[-1]), dropped, ctx.scale)
            if ctx.needs_input_grad[1]:
                grad_x = grad_hidden @ weight_a
                if dropped is not None:
                    _zero(grad_x.mul_(ctx.scale), dropped)
                grad_x = grad_x.view(x.shape)
        return grad, grad_x, grad_a, grad_b, None, None


def _zero(t: torch.Tensor, dropped: torch.Tensor) -> None:
    flat = t.view(-1)
    if dropped.dtype == torch.bool:
        flat.masked_fill_(dropped, 0.0)
    else:
        flat.index_fill_(0, dropped, 0.0)


def _dropout(x2d: torch.Tensor, dropped: torch.Tensor | None, scale: float) -> torch.Tensor:
    """The dropout output: x2d with the flat positions `dropped` zeroed and the rest scaled (a new tensor)."""
    if dropped is None:
        return x2d
    kept = x2d * scale
    _zero(kept, dropped)
    return kept


def _dropout_matmul(x2d: torch.Tensor, dropped: torch.Tensor | None, scale: float, other: torch.Tensor) -> torch.Tensor:
    """`dropout(x2d) @ other` (`other` has few columns: A^T). On CPU, without building the dropout output:
    `scale * (x2d @ other - S @ other)` where S holds x2d's dropped elements (a CSR matrix of about p * numel
    entries); no transient of x2d's size, which on glibc keeps the heap measurably less fragmented."""
    if dropped is None:
        return x2d @ other
    if dropped.dtype == torch.bool:
        return _dropout(x2d, dropped, scale) @ other
    rows, columns = x2d.shape
    row_starts = torch.searchsorted(dropped, torch.arange(0, (rows + 1) * columns, columns, device=dropped.device))
    values = x2d.reshape(-1)[dropped]
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        dropped_part = torch.sparse_csr_tensor(
            row_starts, dropped % columns, values, (rows, columns), check_invariants=False
        )
        return (x2d @ other).sub_(dropped_part @ other).mul_(scale)


class FusedLoraLinear(LoraLinear if LoraLinear is not None else nn.Module):
    """peft's `lora.Linear` whose forward runs `LoraAddmm` when it can: a plain `nn.Linear` base, one active plain
    LoRA adapter (no DoRA or other variant, no LoRA bias), not merged, matching dtypes, no autocast, no extra
    arguments. Anything else goes to peft's own forward."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        adapter = None if args or kwargs else self._fused_adapter(x)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        return LoraAddmm.apply(self.base_layer(x), x, *self._adapter_arguments(adapter))

    def _adapter_arguments(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """(A, B, scaling, dropout probability in this mode)."""
        dropout = self.lora_dropout[adapter]
        p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
        return self.lora_A[adapter].weight, self.lora_B[adapter].weight, self.scaling[adapter], p

    def _fused_adapter(self, x: torch.Tensor) -> str | None:
        if (
            self.disable_adapters
            or self.merged
            or len(self.active_adapters) != 1
            or type(self.base_layer) is not nn.Linear
        ):
            return None
        adapter = self.active_adapters[0]
        if adapter not in self.lora_A or adapter in getattr(self, "lora_variant", {}):
            return None
        if getattr(self, "use_dora", {}).get(adapter, False):
            return None
        lora_a, lora_b, dropout = self.lora_A[adapter], self.lora_B[adapter], self.lora_dropout[adapter]
        if type(lora_a) is not nn.Linear or type(lora_b) is not nn.Linear or lora_a.bias is not None:
            return None
        if lora_b.bias is not None or not isinstance(dropout, nn.Dropout | nn.Identity):
            return None
        if x.dtype != lora_a.weight.dtype or lora_b.weight.dtype != x.dtype or x.dim() < 2:
            return None
        if torch.is_autocast_enabled(x.device.type):
            return None
        return adapter


# The transformers MLP classes whose forward is exactly `down_proj(act_fn(gate_proj(x)) * up_proj(x))`.
GATED_MLP_CLASSES = frozenset(
    {
        "LlamaMLP",
        "MistralMLP",
        "Qwen2MLP",
        "Qwen3MLP",
        "GemmaMLP",
        "Gemma2MLP",
        "Gemma3MLP",
        "SmolLM3MLP",
        "StableLmMLP",
        "OlmoMLP",
        "Olmo2MLP",
        "Olmo3MLP",
    }
)


class GatedLoraDown(torch.autograd.Function):
    """`down_proj(act(g) * u)` for a frozen `down_proj` (weight, optional bias) with a LoRA adapter, saving `g`
    and `u` (which the gate and up projections produce anyway) instead of `act(g)` and the product: both are
    recomputed in the backward pass, two elementwise operations."""

    @staticmethod
    def forward(ctx, g, u, weight, bias, weight_a, weight_b, scaling: float, p: float, act: nn.Module):
        product = act(g).mul_(u)  # the only full-size transient: it also becomes the dropout output
        out = nn.functional.linear(product, weight, bias)
        x2d = product.view(-1, product.shape[-1])
        ctx.dropped = Dropped(x2d.numel(), p, product.device) if p > 0 else None
        scale = 1.0 / (1.0 - p)
        if ctx.dropped is not None:
            _zero(x2d.mul_(scale), ctx.dropped.positions())
        hidden = x2d @ weight_a.t()
        del product, x2d
        out.view(-1, out.shape[-1]).addmm_(hidden, weight_b.t(), alpha=scaling)
        ctx.save_for_backward(g, u, weight, weight_a, weight_b, hidden)
        ctx.scaling, ctx.scale, ctx.act = scaling, scale, act
        return out

    @staticmethod
    def backward(ctx, grad):
        g, u, weight, weight_a, weight_b, hidden = ctx.saved_tensors
        dropped = ctx.dropped.positions() if ctx.dropped is not None else None
        grad2d = grad.reshape(-1, grad.shape[-1])
        with torch.enable_grad():
            gate = g.detach().requires_grad_(True)
            activated = ctx.act(gate)
        grad_a = grad_b = None
        if ctx.needs_input_grad[5]:
            grad_b = (grad2d.t() @ hidden).mul_(ctx.scaling)
        grad_hidden = (grad2d @ weight_b).mul_(ctx.scaling)
        if ctx.needs_input_grad[4]:
            product = activated.detach() * u  # the dropout output again
            x2d = product.view(-1, product.shape[-1])
            if dropped is not None:
                _zero(x2d.mul_(ctx.scale), dropped)
            grad_a = grad_hidden.t() @ x2d
            del product, x2d
        grad_product = grad_hidden @ weight_a  # through the adapter, then through the frozen projection
        if dropped is not None:
            _zero(grad_product.mul_(ctx.scale), dropped)
        grad_product = grad_product.addmm_(grad2d, weight).view(u.shape)
        grad_u = grad_product * activated.detach() if ctx.needs_input_grad[1] else None
        grad_g = None
        if ctx.needs_input_grad[0]:
            (grad_g,) = torch.autograd.grad(activated, gate, grad_product.mul_(u))
        return grad_g, grad_u, None, None, grad_a, grad_b, None, None, None


class FusedGatedMLP(nn.Module):
    """Mixed into a gated MLP class (see `GATED_MLP_CLASSES`) by `fuse_lora_layers`: runs `GatedLoraDown` when
    `down_proj` is a `FusedLoraLinear` that can fuse and its base is frozen; otherwise the class's own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = self.down_proj
        adapter = down._fused_adapter(x) if isinstance(down, FusedLoraLinear) else None
        base = down.base_layer if adapter is not None else None
        if base is None or base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
            return super().forward(x)
        if getattr(self.act_fn, "inplace", False):  # GatedLoraDown must not overwrite the gate's output
            return super().forward(x)
        g, u = self.gate_proj(x), self.up_proj(x)
        return GatedLoraDown.apply(g, u, base.weight, base.bias, *down._adapter_arguments(adapter), self.act_fn)


_FUSED_MLP_CLASSES: dict[type, type] = {}


def _fused_mlp_class(cls: type) -> type:
    if cls not in _FUSED_MLP_CLASSES:
        _FUSED_MLP_CLASSES[cls] = type(f"Fused{cls.__name__}", (FusedGatedMLP, cls), {"__module__": __name__})
    return _FUSED_MLP_CLASSES[cls]


def fuse_lora_layers(model: nn.Module) -> int:
    """Switch, in place, every peft `lora.Linear` of `model` to `FusedLoraLinear` and every gated MLP of a known
    class (`GATED_MLP_CLASSES`) to its `FusedGatedMLP` subclass; returns how many LoRA layers were switched.

    Raises `FusedLoraError` (before switching anything) when the installed peft does not fit the fused layers."""
    check_peft_fits()
    layers = [module for module in model.modules() if LoraLinear is not None and type(module) is LoraLinear]
    for layer in layers:
        if problems := peft_layer_problems(layer):
            raise FusedLoraError(_misfit(problems))
    switched = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.__class__ = FusedLoraLinear
            switched += 1
        elif type(module).__name__ in GATED_MLP_CLASSES and not isinstance(module, FusedGatedMLP):
            module.__class__ = _fused_mlp_class(type(module))
    return switched


# --- what the fused layers assume of peft ----------------------------------------------------------------------
# The instance attributes of a peft `lora.Linear` that FusedLoraLinear reads (peft's LoraLayer sets them), and
# their types: `lora_A`/`lora_B`/`lora_dropout` map an adapter name to its nn.Linear/nn.Linear/dropout module,
# `scaling` to its float, `lora_variant` to a variant (DoRA ...) object, `use_dora` to a flag.
PEFT_LAYER_ATTRIBUTES: dict[str, type] = {
    "base_layer": nn.Module,
    "lora_A": nn.ModuleDict,
    "lora_B": nn.ModuleDict,
    "lora_dropout": nn.ModuleDict,
    "scaling": dict,
    "lora_variant": dict,
    "use_dora": dict,
}
# Properties of the class (peft's BaseTunerLayer): bool, bool, list of adapter names.
PEFT_LAYER_PROPERTIES = ("disable_adapters", "merged", "active_adapters")
# `lora.Linear.forward(self, x, *args, **kwargs)`: FusedLoraLinear.forward overrides it with the same parameters.
PEFT_FORWARD_PARAMETERS = (
    ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ("x", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ("args", inspect.Parameter.VAR_POSITIONAL),
    ("kwargs", inspect.Parameter.VAR_KEYWORD),
)


class FusedLoraError(LM2VecError, RuntimeError):
    """The installed peft does not fit lm2vec's fused LoRA layers; `fused_lora = false` trains with peft's own."""


def _misfit(problems: list[str]) -> str:
    return (
        f"lm2vec's fused LoRA layers do not fit the installed peft {peft.__version__}: {'; '.join(problems)}. "
        "Set `fused_lora = false` in the training stage's recipe section (e.g. `--set mntp.fused_lora=false` for "
        "`lm2vec run`, `--set fused_lora=false` for `lm2vec train`) to train with peft's own LoRA layers."
    )


def peft_class_problems() -> list[str]:
    """How the installed peft's `lora.Linear` class differs from what FusedLoraLinear assumes (empty: it fits)."""
    if LoraLinear is None:
        return ["peft.tuners.lora has no Linear class"]
    problems = [
        f"lora.Linear has no `{name}` property" for name in PEFT_LAYER_PROPERTIES if not hasattr(LoraLinear, name)
    ]
    parameters = tuple((p.name, p.kind) for p in inspect.signature(LoraLinear.forward).parameters.values())
    if parameters != PEFT_FORWARD_PARAMETERS:
        problems.append(f"lora.Linear.forward{inspect.signature(LoraLinear.forward)} is not forward(self, x, ...)")
    return problems


def peft_layer_problems(layer: nn.Module) -> list[str]:
    """How a peft `lora.Linear` instance differs from what FusedLoraLinear reads of it (empty: it fits)."""
    problems = []
    for name, kind in PEFT_LAYER_ATTRIBUTES.items():
        value = getattr(layer, name, None)
        if not isinstance(value, kind):
            problems.append(f"lora.Linear.{name} is {type(value).__name__}, not {kind.__name__}")
    active = getattr(layer, "active_adapters", None)
    if not isinstance(active, list | tuple) or not all(isinstance(name, str) for name in active):
        problems.append(f"lora.Linear.active_adapters is {active!r}, not a list of adapter names")
    for name in ("disable_adapters", "merged"):
        if not isinstance(getattr(layer, name, None), bool):
            problems.append(f"lora.Linear.{name} is not a bool")
    if not problems and isinstance(layer.scaling, dict):
        if not all(isinstance(value, float | int) for value in layer.scaling.values()):
            problems.append("lora.Linear.scaling does not map adapters to numbers")
    return problems


@functools.cache
def peft_problems() -> tuple[str, ...]:
    """Everything the fused layers assume of the installed peft, checked once per process: the class, the
    attributes of a probe layer (float64, LoRA on one 8x6 projection, random B), and that on it the fused forward
    actually runs and gives peft's output and gradients (no dropout; with dropout the same up to the mask)."""
    if problems := peft_class_problems():
        return tuple(problems)
    # The probe draws random numbers (training's seeds must not see them) and needs gradients wherever it is called.
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(0)
        config = peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["0"], init_lora_weights=False)
        probe = peft.get_peft_model(nn.Sequential(nn.Linear(8, 6)).double(), config)
        layers = [module for module in probe.modules() if type(module) is LoraLinear]
        if len(layers) != 1:
            return (f"get_peft_model made {len(layers)} lora.Linear layers of one targeted nn.Linear, not 1",)
        if problems := peft_layer_problems(layers[0]):
            return tuple(problems)
        x = torch.randn(2, 3, 8, dtype=torch.float64)
        fused = copy.deepcopy(probe)
        fused_layer = next(module for module in fused.modules() if type(module) is LoraLinear)
        fused_layer.__class__ = FusedLoraLinear
        if fused_layer._fused_adapter(x) is None:
            return ("a plain LoRA layer no longer takes the fused path",)
        results = []
        for model in (probe, fused):
            model.train()
            out = model(x)
            out.pow(2).sum().backward()
            grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            results.append((out.detach(), grads))
    (expected, expected_grads), (out, grads) = results
    if not torch.allclose(out, expected, rtol=1e-9, atol=1e-9):
        return ("the fused forward no longer equals lora.Linear's (base + lora_B(lora_A(dropout(x))) * scaling)",)
    if grads.keys() != expected_grads.keys() or not all(
        torch.allclose(grads[n], expected_grads[n], rtol=1e-9, atol=1e-9) for n in grads
    ):
        return ("the fused layer's gradients no longer equal lora.Linear's",)
    return ()


def check_peft_fits() -> None:
    """Raise `FusedLoraError` naming the peft version and `fused_lora = false` unless the installed peft fits."""
    if problems := peft_problems():
        raise FusedLoraError(_misfit(list(problems)))


# --- norm outputs ----------------------------------------------------------------------------------------------
NORM_SOURCE = "_lm2vec_norm_source"


def mark_norm_outputs(model: nn.Module) -> int:
    """Make every RMSNorm / LayerNorm layer of `model` note, on each output it produces with grad enabled, the layer
    and the input it came from (see `recomputing_norm_outputs`); returns how many layers were hooked."""
    hooked = 0
    for module in model.modules():
        if type(module).__name__.endswith(("RMSNorm", "LayerNorm")) and next(module.children(), None) is None:
            module.register_forward_hook(_note_norm_source)
            hooked += 1
    return hooked


def _note_norm_source(module: nn.Module, args: tuple, output) -> None:
    if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and len(args) == 1:
        (source,) = args
        if isinstance(source, torch.Tensor) and source is not output:
            setattr(output, NORM_SOURCE, (module, source, source._version))


def recomputing_norm_outputs() -> torch.autograd.graph.saved_tensors_hooks:
    """Saved-tensor hooks under which a tensor marked by `mark_norm_outputs` is kept for the backward pass as (norm
    layer, its input) and recomputed when the backward pass needs it: the same kernels on the same input, so the
    same values. Nested hooks (non-reentrant gradient checkpointing) take precedence inside their region."""
    return torch.autograd.graph.saved_tensors_hooks(_pack_norm_output, _unpack_norm_output)


def _pack_norm_output(tensor: torch.Tensor):
    source = getattr(tensor, NORM_SOURCE, None)
    return source if source is not None else tensor


def _unpack_norm_output(packed):
    if not isinstance(packed, tuple):
        return packed
    module, source, version = packed
    if source._version != version:
        raise RuntimeError(
            f"The input of {type(module).__name__} was modified in place after the forward pass; its output cannot "
            "be recomputed for the backward pass."
        )
    with torch.no_grad():
        return module(source)


__all__ = [
    "GATED_MLP_CLASSES",
    "FusedGatedMLP",
    "FusedLoraLinear",
    "GatedLoraDown",
    "LoraAddmm",
    "Dropped",
    "FusedLoraError",
    "PEFT_FORWARD_PARAMETERS",
    "PEFT_LAYER_ATTRIBUTES",
    "PEFT_LAYER_PROPERTIES",
    "check_peft_fits",
    "dropped_positions",
    "fuse_lora_layers",
    "peft_class_problems",
    "peft_layer_problems",
    "peft_problems",
    "mark_norm_outputs",
    "recomputing_norm_outputs",
]
