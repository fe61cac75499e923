"""FusedLoraLinear: the function, gradients, dropout distribution and saved adapter of peft's LoRA layer; what it
assumes of the installed peft; `fused_lora = false` (peft's own layers)."""

from __future__ import annotations

import inspect
import math
import random
import weakref

import peft
import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

import lm2vec.training.lora as lora_module
from lm2vec import LM2VecError
from lm2vec.training.adapters import add_lora
from lm2vec.training.callbacks import read_log
from lm2vec.training.lora import (
    GATED_MLP_CLASSES,
    PEFT_FORWARD_PARAMETERS,
    PEFT_LAYER_ATTRIBUTES,
    PEFT_LAYER_PROPERTIES,
    Dropped,
    FusedGatedMLP,
    FusedLoraError,
    FusedLoraLinear,
    LoraAddmm,
    dropped_positions,
    fuse_lora_layers,
    mark_norm_outputs,
    peft_layer_problems,
    peft_problems,
    recomputing_norm_outputs,
)
from lm2vec.training.mntp import MNTPConfig, build_mntp_model, load_causal_lm, train_mntp
from tests.tiny_models import WORDS


# --- the dropped positions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_dropped_positions_are_independent_bernoulli(p) -> None:
    torch.manual_seed(0)
    numel, draws = 1000, 400
    counts = torch.zeros(numel)
    pairs = 0.0
    for _ in range(draws):
        positions = dropped_positions(numel, p)
        assert torch.equal(positions, positions.unique())  # sorted, no repeats
        assert positions.numel() == 0 or (positions[0] >= 0 and positions[-1] < numel)
        mask = torch.zeros(numel)
        mask[positions] = 1.0
        counts += mask
        pairs += float((mask[:-1] * mask[1:]).mean())
    rate = counts / draws
    # Each position on its own: Bernoulli(p); neighbours: independent (P(both) = p^2); 6 standard deviations.
    assert abs(rate.mean() - p) < 6 * math.sqrt(p * (1 - p) / (numel * draws))
    per_position = math.sqrt(p * (1 - p) / draws)
    assert float((rate - p).abs().max()) < 6 * per_position
    assert abs(pairs / draws - p * p) < 6 * math.sqrt(p * p * (1 - p * p) / ((numel - 1) * draws))


def test_dropped_positions_cover_short_and_long_inputs() -> None:
    torch.manual_seed(1)
    assert all(dropped_positions(1, 0.5).numel() <= 1 for _ in range(50))
    assert sum(dropped_positions(1, 0.5).numel() for _ in range(2000)) == pytest.approx(1000, abs=6 * math.sqrt(500))
    long = dropped_positions(3_000_000, 0.05)
    assert long.numel() == pytest.approx(150_000, abs=6 * math.sqrt(3_000_000 * 0.05 * 0.95))
    assert long[-1] > 3_000_000 - 1000  # drawn to the very end
    with pytest.raises(ValueError, match="dropout probability"):
        dropped_positions(10, 0.0)


# --- the function and its gradients ----------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_lora_addmm_matches_the_unfused_computation(p) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 7, 12, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 12, dtype=torch.float64)  # the frozen projection
    weight_a = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    weight_b = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 7, 5, dtype=torch.float64)

    torch.manual_seed(7)
    out = LoraAddmm.apply(x @ weight.t(), x, weight_a, weight_b, 2.0, p)
    fused = torch.autograd.grad(out, (x, weight_a, weight_b), grad)
    torch.manual_seed(7)  # the same random numbers: the same dropped positions
    keep = torch.ones(x.numel(), dtype=torch.float64)
    if p:
        keep[Dropped(x.numel(), p, x.device).positions()] = 0.0
    dropped_x = x * (keep.view(x.shape) / (1 - p))
    expected = x @ weight.t() + (dropped_x @ weight_a.t() @ weight_b.t()) * 2.0
    reference = torch.autograd.grad(expected, (x, weight_a, weight_b), grad)
    torch.testing.assert_close(out, expected)
    for ours, theirs in zip(fused, reference, strict=True):
        torch.testing.assert_close(ours, theirs)
    if p:
        assert 0 < int((keep == 0).sum()) < x.numel()


def test_lora_addmm_skips_gradients_nobody_needs() -> None:
    x = torch.randn(6, 8)  # no grad: the first layer's input
    weight_a = torch.randn(2, 8, requires_grad=True)
    weight_b = torch.zeros(3, 2, requires_grad=True)
    LoraAddmm.apply(torch.zeros(6, 3), x, weight_a, weight_b, 1.0, 0.1).sum().backward()
    assert torch.count_nonzero(weight_a.grad) == 0  # B = 0: A gets no gradient yet
    assert torch.count_nonzero(weight_b.grad) > 0


# --- the layer -------------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(16, 16, bias=False)
        self.up_proj = nn.Linear(16, 24, bias=True)
        self.norm = nn.LayerNorm(16)

    def forward(self, x):
        return self.up_proj(self.q_proj(self.norm(x)) + x)


def lora_block(dropout: float, seed: int = 0):
    """float64, so that peft and the fused layer (which scale at different points) agree to ~1e-12."""
    torch.manual_seed(seed)
    model = get_peft_model(
        Block().double(), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "up_proj"])
    )
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter)  # B = 0 would hide mistakes in the adapter path
    return model


def forward_backward(model, x):
    out = model(x)
    out.pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("training", [True, False])
def test_fused_layer_equals_peft_without_dropout(training) -> None:
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    peft_model, fused_model = lora_block(0.0), lora_block(0.0)
    assert fuse_lora_layers(fused_model) == 2
    assert sum(type(m) is FusedLoraLinear for m in fused_model.modules()) == 2
    peft_model.train(training)
    fused_model.train(training)
    expected, expected_grads = forward_backward(peft_model, x)
    out, grads = forward_backward(fused_model, x)
    torch.testing.assert_close(out, expected)
    assert grads.keys() == expected_grads.keys() and any("lora_A" in name for name in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name])


def test_fused_layer_with_dropout_is_peft_with_some_dropout_mask() -> None:
    """In training, dropout only changes which elements are dropped; in eval, both are exactly peft's."""
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    peft_model, fused_model = lora_block(0.3), lora_block(0.3)
    fuse_lora_layers(fused_model)
    peft_model.eval()
    fused_model.eval()
    torch.testing.assert_close(fused_model(x), peft_model(x))
    fused_model.train()
    outs = [fused_model(x) for _ in range(2)]
    assert not torch.allclose(outs[0], outs[1])  # dropout is on, a fresh mask each call
    torch.manual_seed(3)
    first = fused_model(x)
    torch.manual_seed(3)
    torch.testing.assert_close(fused_model(x), first)  # and seeded


def test_fused_layer_falls_back_to_peft() -> None:
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    peft_model, fused_model = lora_block(0.0), lora_block(0.0)
    fuse_lora_layers(fused_model)
    with peft_model.disable_adapter(), fused_model.disable_adapter():
        torch.testing.assert_close(fused_model(x), peft_model(x))
    fused_model.merge_adapter()
    peft_model.merge_adapter()
    torch.testing.assert_close(fused_model(x), peft_model(x))


def test_fused_layers_save_peft_adapters() -> None:
    peft_model, fused_model = lora_block(0.05), lora_block(0.05)
    fuse_lora_layers(fused_model)
    theirs, ours = get_peft_model_state_dict(peft_model), get_peft_model_state_dict(fused_model)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert all(isinstance(m, LoraLinear) for m in fused_model.modules() if type(m) is FusedLoraLinear)


def test_mntp_model_uses_fused_layers(tiny_llama) -> None:
    causal_lm, _, _ = load_causal_lm(str(tiny_llama))
    model = build_mntp_model(causal_lm, MNTPConfig(mask_token="<unk>"))
    lora_layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert lora_layers and all(type(m) is FusedLoraLinear for m in lora_layers)


# --- the gated MLP ---------------------------------------------------------------------------------------------
MLP_MODULES = {
    "LlamaMLP": "llama",
    "MistralMLP": "mistral",
    "Qwen2MLP": "qwen2",
    "Qwen3MLP": "qwen3",
    "GemmaMLP": "gemma",
    "Gemma2MLP": "gemma2",
    "Gemma3MLP": "gemma3",
    "SmolLM3MLP": "smollm3",
    "StableLmMLP": "stablelm",
    "OlmoMLP": "olmo",
    "Olmo2MLP": "olmo2",
    "Olmo3MLP": "olmo3",
}


def test_gated_mlp_classes_compute_the_gated_product() -> None:
    """Guards a transformers upgrade: every class that FusedGatedMLP replaces still has exactly this forward."""
    import importlib
    import inspect

    assert set(MLP_MODULES) == set(GATED_MLP_CLASSES)
    for name, model_type in MLP_MODULES.items():
        module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
        source = inspect.getsource(getattr(module, name).forward)
        assert "self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))" in source, name
        assert source.count("\n") <= 4, name  # that expression and its return, nothing else


def mntp_loss_and_grads(tiny_llama, fuse_mlp: bool, dropout: float, seed: int = 3):
    causal_lm, _, _ = load_causal_lm(str(tiny_llama))
    torch.manual_seed(0)
    model = build_mntp_model(causal_lm, MNTPConfig(mask_token="<unk>", lora_dropout=dropout)).double().train()
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.1)
    mlps = [m for m in model.modules() if isinstance(m, FusedGatedMLP)]
    assert len(mlps) == causal_lm.config.num_hidden_layers
    if not fuse_mlp:
        for mlp in mlps:
            mlp.__class__ = type(mlp).__mro__[2]  # the transformers class again
    input_ids = torch.randint(4, 60, (2, 12))
    labels = torch.where(torch.rand(2, 12) < 0.3, input_ids, -100)
    labels[:, 1] = input_ids[:, 1]
    torch.manual_seed(seed)
    loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_fused_mlp_equals_the_unfused_one(tiny_llama, dropout) -> None:
    """Same seed, same dropped positions (the draws happen in the same order): same loss, same gradients."""
    loss, grads = mntp_loss_and_grads(tiny_llama, True, dropout)
    expected_loss, expected_grads = mntp_loss_and_grads(tiny_llama, False, dropout)
    torch.testing.assert_close(loss, expected_loss)
    assert grads.keys() == expected_grads.keys() and any("down_proj.lora_A" in name for name in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], msg=name)


# --- norm outputs ----------------------------------------------------------------------------------------------
def test_norm_outputs_are_recomputed_not_kept(tiny_llama) -> None:
    causal_lm, _, _ = load_causal_lm(str(tiny_llama))
    torch.manual_seed(0)
    model = build_mntp_model(causal_lm, MNTPConfig(mask_token="<unk>", lora_dropout=0.1)).train()
    assert model.recompute_norm_outputs
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.1)
    outputs = []
    causal_lm.model.layers[0].input_layernorm.register_forward_hook(lambda m, a, out: outputs.append(weakref.ref(out)))
    input_ids = torch.randint(4, 60, (2, 12))
    labels = torch.where(torch.rand(2, 12) < 0.3, input_ids, -100)
    labels[:, 1] = input_ids[:, 1]

    def loss_and_grads(recompute: bool):
        model.recompute_norm_outputs = recompute
        torch.manual_seed(5)
        loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)["loss"]
        kept = outputs[-1]() is not None  # the graph (alive with the loss) holds the norm output
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return loss.detach(), grads, kept

    loss, grads, kept = loss_and_grads(True)
    expected_loss, expected_grads, expected_kept = loss_and_grads(False)
    assert expected_kept and not kept
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=0)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=0, atol=0, msg=name)


def test_recomputing_a_norm_output_refuses_a_changed_input() -> None:
    norm = nn.LayerNorm(4)
    assert mark_norm_outputs(nn.Sequential(norm)) == 1
    weight = torch.randn(4, 3, requires_grad=True)
    source = torch.randn(5, 4)
    with recomputing_norm_outputs():
        loss = (norm(source) @ weight).sum()  # mm keeps norm's output for weight's gradient
    source.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_gradient_checkpointing_redraws_the_same_dropout(tiny_llama) -> None:
    """Non-reentrant checkpointing reruns the forward pass with the RNG state restored: the fused layers draw the
    same dropped positions again, so the gradients equal those without checkpointing."""
    results = []
    for checkpointing in (False, True):
        causal_lm, _, _ = load_causal_lm(str(tiny_llama))
        torch.manual_seed(0)
        model = build_mntp_model(causal_lm, MNTPConfig(mask_token="<unk>", lora_dropout=0.2)).double().train()
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                nn.init.normal_(parameter, std=0.1)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        input_ids = torch.randint(4, 60, (2, 12), generator=torch.Generator().manual_seed(1))
        labels = input_ids.clone()
        torch.manual_seed(3)
        loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)["loss"]
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss, grads), (checkpointed_loss, checkpointed_grads) = results
    torch.testing.assert_close(checkpointed_loss, loss)
    assert checkpointed_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(checkpointed_grads[name], grads[name], msg=name)


# --- what the fused layers assume of peft ----------------------------------------------------------------------
def test_the_installed_peft_fits_the_fused_layers() -> None:
    """Guards a peft upgrade: each assumption FusedLoraLinear makes, asserted against the installed peft itself."""
    assert peft_problems() == ()
    # The class: the properties read, forward(self, x, *args, **kwargs), and the vanilla LoRA sum in that forward.
    assert all(isinstance(inspect.getattr_static(LoraLinear, name), property) for name in PEFT_LAYER_PROPERTIES)
    parameters = inspect.signature(LoraLinear.forward).parameters.values()
    assert tuple((p.name, p.kind) for p in parameters) == PEFT_FORWARD_PARAMETERS
    source = inspect.getsource(LoraLinear.forward)
    assert "result = self.base_layer(x, *args, **kwargs)" in source
    assert "if active_adapter not in self.lora_variant:  # vanilla LoRA" in source
    assert "result = result + lora_B(lora_A(dropout(x))) * scaling" in source
    assert "self.disable_adapters" in source and "self.merged" in source and "self.active_adapters" in source
    # A layer made by get_peft_model: the attributes, their types, and what they hold.
    layer = next(m for m in lora_block(0.1).modules() if type(m) is LoraLinear)
    assert peft_layer_problems(layer) == []
    assert set(PEFT_LAYER_ATTRIBUTES) == {
        "base_layer",
        "lora_A",
        "lora_B",
        "lora_dropout",
        "scaling",
        "lora_variant",
        "use_dora",
    }
    for name, kind in PEFT_LAYER_ATTRIBUTES.items():
        assert isinstance(getattr(layer, name), kind), name
    assert type(layer.base_layer) is nn.Linear and layer.active_adapters == ["default"]
    assert type(layer.lora_A["default"]) is nn.Linear and type(layer.lora_B["default"]) is nn.Linear
    assert type(layer.lora_dropout["default"]) is nn.Dropout and layer.lora_dropout["default"].p == 0.1
    assert layer.scaling == {"default": 8 / 4} and layer.lora_variant == {} and layer.use_dora == {"default": False}
    assert layer.merged is False and layer.disable_adapters is False


def test_the_peft_probe_does_not_touch_the_random_numbers() -> None:
    peft_problems.cache_clear()
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    assert peft_problems() == ()
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


@pytest.fixture
def fresh_peft_check():
    peft_problems.cache_clear()
    yield
    peft_problems.cache_clear()


def _changed_forward(self, inputs, *args, **kwargs):  # a peft whose forward renamed x
    return self.base_layer(inputs)


@pytest.mark.parametrize("change", ["forward signature", "attribute", "no class", "different result"])
def test_a_peft_that_no_longer_fits_is_refused_at_wrap_time(change, tiny_llama, monkeypatch, fresh_peft_check):
    """A changed peft: add_lora refuses, naming the peft version and `fused_lora = false`, which then trains."""
    causal_lm, _, _ = load_causal_lm(str(tiny_llama))
    if change == "forward signature":
        monkeypatch.setattr(LoraLinear, "forward", _changed_forward)
        expected = "is not forward(self, x, ...)"
    elif change == "attribute":  # e.g. peft renames `scaling`
        original = LoraLinear.update_layer

        def update_layer(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            self.__dict__["scale_factors"] = self.__dict__.pop("scaling")
            return result

        monkeypatch.setattr(LoraLinear, "update_layer", update_layer)
        expected = "lora.Linear.scaling is NoneType, not dict"
    elif change == "no class":
        monkeypatch.setattr(lora_module, "LoraLinear", None)
        expected = "peft.tuners.lora has no Linear class"
    else:  # peft computes something else (say, scaling applied twice): only the probe can tell
        original_forward = LoraLinear.forward

        def forward(self, x, *args, **kwargs):
            base = self.base_layer(x)
            return base + (original_forward(self, x, *args, **kwargs) - base) * 2.0

        monkeypatch.setattr(LoraLinear, "forward", forward)
        expected = "the fused forward no longer equals lora.Linear's"
    backbone = getattr(causal_lm, causal_lm.base_model_prefix)
    with pytest.raises(FusedLoraError) as error:
        add_lora(backbone, MNTPConfig(mask_token="<unk>"))
    message = str(error.value)
    assert expected in message and f"peft {peft.__version__}" in message and "fused_lora = false" in message
    assert isinstance(error.value, LM2VecError)
    if change != "attribute":  # peft's own layers still train there (the renamed attribute breaks peft too)
        causal_lm, _, _ = load_causal_lm(str(tiny_llama))
        model = add_lora(getattr(causal_lm, causal_lm.base_model_prefix), MNTPConfig(fused_lora=False))
        assert not any(isinstance(m, FusedLoraLinear | FusedGatedMLP) for m in model.modules())


# --- fused_lora = false ----------------------------------------------------------------------------------------
def mntp_model(tiny_llama, fused: bool, dropout: float):
    causal_lm, _, _ = load_causal_lm(str(tiny_llama))
    torch.manual_seed(0)
    options = MNTPConfig(mask_token="<unk>", lora_dropout=dropout, fused_lora=fused)
    model = build_mntp_model(causal_lm, options).double()
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.1)
    return model


def test_fused_lora_false_uses_peft_layers_with_the_same_function(tiny_llama) -> None:
    """The same adapter through peft's layers and through the fused ones: the same loss and LoRA gradients
    (training, no dropout), the same output with dropout in eval mode, and the same adapter state dict."""
    fused, plain = mntp_model(tiny_llama, True, 0.0), mntp_model(tiny_llama, False, 0.0)
    assert sum(type(m) is FusedLoraLinear for m in fused.modules()) == 14  # 7 projections x 2 layers
    assert sum(type(m) is LoraLinear for m in plain.modules()) == 14
    assert not any(isinstance(m, FusedLoraLinear | FusedGatedMLP) for m in plain.modules())
    input_ids = torch.randint(4, 60, (2, 12), generator=torch.Generator().manual_seed(1))
    labels = torch.where(torch.rand(2, 12, generator=torch.Generator().manual_seed(2)) < 0.3, input_ids, -100)
    labels[:, 1] = input_ids[:, 1]
    results = []
    for model in (fused, plain):
        model.train()
        loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)["loss"]
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss, grads), (expected_loss, expected_grads) = results
    torch.testing.assert_close(loss, expected_loss)
    assert grads.keys() == expected_grads.keys() and len(grads) == 28
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], msg=name)

    fused, plain = mntp_model(tiny_llama, True, 0.2).eval(), mntp_model(tiny_llama, False, 0.2).eval()
    with torch.no_grad():
        logits = [m(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))["logits"] for m in (fused, plain)]
    torch.testing.assert_close(logits[0], logits[1])
    theirs, ours = get_peft_model_state_dict(plain.backbone), get_peft_model_state_dict(fused.backbone)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_fused_lora_false_trains(tiny_llama, tmp_path) -> None:
    """A short MNTP run with peft's own layers: the loss goes the way the fused layers' run goes (no dropout, the
    same seed: the same steps up to float32 rounding) and the adapter it saves loads."""
    rng = random.Random(0)
    documents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(60)]
    (tmp_path / "texts.txt").write_text("\n\n".join(documents))
    runs = {}
    for fused in (True, False):
        options = MNTPConfig(
            model=str(tiny_llama),
            data=str(tmp_path / "texts.txt"),
            output_dir=str(tmp_path / f"run-{fused}"),
            max_seq_length=16,
            per_device_batch_size=2,
            max_steps=4,
            learning_rate=5e-3,
            logging_steps=1,
            save_steps=4,
            mask_token="<unk>",
            eval_on_start=False,
            lora_dropout=0.0,
            fused_lora=fused,
        )
        result = train_mntp(options)
        trainer = result.trainer
        assert result.global_step == 4
        assert any(type(m) is FusedLoraLinear for m in trainer.model.modules()) == fused
        runs[fused] = [record["loss"] for record in read_log(options.output_dir) if "loss" in record]
        assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert len(runs[False]) == 4
    assert runs[False] == pytest.approx(runs[True], rel=1e-3)


def test_fused_lora_is_a_recipe_option_of_every_training_stage() -> None:
    from lm2vec.recipe import RecipeError, build_config
    from lm2vec.training.contrastive import SimCSEOptions, SupervisedOptions

    for options, section in ((MNTPConfig, "mntp"), (SimCSEOptions, "simcse"), (SupervisedOptions, "supervised")):
        assert options().fused_lora is True
        assert build_config(options, section, {section: {"fused_lora": False}}, []).fused_lora is False
        assert build_config(options, section, {}, [f"{section}.fused_lora=false"]).fused_lora is False
    with pytest.raises(RecipeError, match="fused_lora='sometimes' is not a boolean"):
        build_config(MNTPConfig, "mntp", {"mntp": {"fused_lora": "sometimes"}}, [])
