"""`lm2vec plan`'s estimates (lm2vec.pipeline.estimate): counts on the meta device, how each memory term scales, the
table for every shipped recipe, and `lm2vec run` refusing a stage that cannot fit. No real weights are loaded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from typer.testing import CliRunner

from lm2vec.cli import app
from lm2vec.modeling.bidirectional import set_bidirectional
from lm2vec.pipeline.estimate import (
    DoesNotFitError,
    EstimateError,
    Target,
    check_fits,
    estimate_stage,
    layer_activation_elements,
    mining_texts,
    model_config,
    model_shape,
    parse_quantity,
    plan_table,
    source_shape,
)
from lm2vec.training.adapters import add_lora
from lm2vec.training.contrastive.options import SupervisedOptions
from lm2vec.training.lora import _pack_norm_output
from lm2vec.training.mntp.options import MNTPConfig
from tests.tiny_models import tiny_config, tiny_gguf

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "smollm2-en-quick.toml"
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.2"
GPU = Target(gpus=1, memory=80e9, mfu=0.4, device_flops=989e12)
CPU = dataclasses.replace(GPU, gpus=0)


def test_parameter_counts_on_meta_equal_the_real_model(tiny_llama) -> None:
    shape = model_shape(AutoConfig.from_pretrained(tiny_llama))
    causal_lm = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert shape.parameters == sum(p.numel() for p in causal_lm.parameters())
    assert shape.backbone_parameters == sum(p.numel() for p in causal_lm.model.parameters())
    for targets in (["all-linear"], ["q_proj", "v_proj"]):
        lora = add_lora(causal_lm.model, MNTPConfig(lora_r=8, lora_target_modules=targets))
        trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
        assert shape.lora_parameters(8, targets) == trainable
        lora.unload()


def test_the_shipped_shapes_are_the_published_sizes() -> None:
    assert round(source_shape(MISTRAL).parameters / 1e9, 2) == 7.24  # Mistral-7B, untied head
    assert round(source_shape("INSAIT-Institute/BgGPT-Gemma-2-9B-IT-v1.0").parameters / 1e9, 2) == 9.24  # tied


def _saved_elements_per_token_and_layer(model_type: str, attention: str, layers: int, length: int) -> float:
    """What autograd keeps for the backward pass of the LoRA-wrapped backbone (parameters aside), per token."""
    torch.manual_seed(0)
    config = tiny_config(model_type, num_hidden_layers=layers, hidden_size=64, intermediate_size=128, head_dim=16)
    causal_lm = AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    set_bidirectional(causal_lm, True)
    backbone = add_lora(causal_lm.model, MNTPConfig()).train()
    weights = {t.untyped_storage().data_ptr() for t in [*backbone.parameters(), *backbone.buffers()]}
    kept: dict[int, int] = {}

    def pack(tensor):
        tensor = _pack_norm_output(tensor)  # what `recomputing_norm_outputs` keeps of a norm output: its input
        if isinstance(tensor, torch.Tensor) and (pointer := tensor.untyped_storage().data_ptr()) not in weights:
            kept[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        backbone(input_ids=torch.randint(4, 100, (2, length))).last_hidden_state.sum()
    return sum(kept.values()) / 4 / (2 * length)


@pytest.mark.parametrize(("model_type", "attention"), [("llama", "sdpa"), ("llama", "eager"), ("gemma3_text", "sdpa")])
def test_the_activation_formula_counts_what_autograd_keeps(model_type: str, attention: str) -> None:
    """Per decoder layer, the formula gives the tensors autograd keeps (the difference of 3 and 2 layers), but for
    the few elements per row (norms' reciprocal RMS, attention's log-sum-exp) it leaves out."""
    length = 24
    measured = _saved_elements_per_token_and_layer(model_type, attention, 3, length)
    measured -= _saved_elements_per_token_and_layer(model_type, attention, 2, length)
    config = tiny_config(model_type, num_hidden_layers=2, hidden_size=64, intermediate_size=128, head_dim=16)
    shape = model_shape(config)
    adapted = shape.adapted_per_layer(["all-linear"])
    formula = layer_activation_elements(shape, length, adapted, 16, attention == "eager", False)
    assert formula == pytest.approx(measured, rel=0.03)


def _mntp(**changes) -> MNTPConfig:
    return MNTPConfig(**{"per_device_batch_size": 8, "max_seq_length": 512, **changes})


def test_memory_terms_scale_as_they_should() -> None:
    shape = source_shape(MISTRAL)
    base = estimate_stage("mntp", _mntp(), shape, GPU)
    doubled = estimate_stage("mntp", _mntp(per_device_batch_size=16), shape, GPU)
    assert doubled.activations == pytest.approx(2 * base.activations, rel=1e-3)
    assert doubled.logits == pytest.approx(2 * base.logits)
    assert (doubled.weights, doubled.lora) == (base.weights, base.lora)

    eager = estimate_stage("mntp", _mntp(attn_implementation="eager"), shape, GPU)
    tokens, q = 8 * 512, shape.heads * shape.head_dim
    scores = tokens * shape.layers * (q + shape.heads * 512) * 2  # bf16: softmax output + transposed output
    assert eager.activations - base.activations == pytest.approx(scores)

    checkpointed = estimate_stage("mntp", _mntp(gradient_checkpointing=True), shape, GPU)
    assert checkpointed.activations < base.activations / 5

    on_cpu = estimate_stage("mntp", _mntp(), shape, CPU)
    assert base.weights == on_cpu.weights / 2 == shape.parameters * 2  # bf16 on GPUs, fp32 on CPUs
    assert base.lora == on_cpu.lora == base.trainable * 16
    assert on_cpu.runtime > 0 == base.runtime


def test_hours_follow_tokens_devices_and_mfu() -> None:
    shape = source_shape(MISTRAL)
    one = estimate_stage("mntp", _mntp(), shape, GPU)
    eight = estimate_stage("mntp", _mntp(), shape, dataclasses.replace(GPU, gpus=8))
    assert eight.tokens == 8 * one.tokens == 8 * 8 * 512 * 1000
    assert eight.hours == pytest.approx(one.hours)  # eight times the tokens on eight devices
    assert estimate_stage("mntp", _mntp(), shape, dataclasses.replace(GPU, mfu=0.2)).hours == pytest.approx(
        2 * one.hours
    )


def test_fsdp_shards_the_weights_across_the_devices() -> None:
    shape = source_shape(MISTRAL)
    eight = dataclasses.replace(GPU, gpus=8)
    whole = estimate_stage("mntp", _mntp(), shape, eight)
    sharded = estimate_stage("mntp", _mntp(fsdp=True), shape, eight)
    gathered = shape.parameters - shape.linear_parameters + shape.linear_parameters / shape.layers
    assert not whole.sharded and sharded.sharded
    assert sharded.weights == pytest.approx((shape.parameters / 8 + gathered) * 2)
    assert whole.weights / 8 < sharded.weights < whole.weights / 4  # 1/8, plus embeddings, head and one layer
    assert (sharded.activations, sharded.lora) == (whole.activations, whole.lora)  # the adapter stays whole
    assert estimate_stage("mntp", _mntp(fsdp=True), shape, GPU).weights == whole.weights  # one device: no effect


def test_a_stage_too_big_for_several_gpus_is_told_about_fsdp() -> None:
    small = dataclasses.replace(GPU, gpus=8, memory=16e9)
    estimate = estimate_stage("mntp", _mntp(gradient_checkpointing=True), source_shape(MISTRAL), small)
    with pytest.raises(DoesNotFitError, match="set mntp.fsdp = true"):
        check_fits([estimate], small)


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda path: path.stem)
@pytest.mark.usefixtures("converted_packaged_models")  # a GGUF's own metadata: the next test
def test_plan_prints_the_table_for_every_shipped_recipe(recipe: Path) -> None:
    result = CliRunner().invoke(app, ["plan", str(recipe), "--gpus", "1", "--gpu-memory", "80GB"])
    assert result.exit_code == 0, result.output
    assert "| | mntp |" in result.output and "| total per device |" in result.output
    assert "| fits 74.5 GiB | yes" in result.output


def test_a_gguf_is_planned_from_its_metadata_without_converting_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LM2VEC_CACHE", str(tmp_path / "cache"))
    config = model_config(str(tiny_gguf(tmp_path / "tiny.gguf")))
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("llama", 16, 1)
    assert not (tmp_path / "cache").exists()


def test_plan_names_config_from_for_a_model_it_cannot_read(tmp_path: Path, tiny_llama: Path) -> None:
    runner = CliRunner()
    unknown = ["--set", "run.model=nobody/not-a-model-here"]
    result = runner.invoke(app, ["plan", str(QUICK), *unknown])
    assert result.exit_code == 2 and "--config-from" in result.output, result.output
    result = runner.invoke(app, ["plan", str(QUICK), *unknown, "--config-from", str(tiny_llama / "config.json")])
    assert result.exit_code == 0, result.output


def test_quantities() -> None:
    assert parse_quantity("80GB", "x") == 80e9 and parse_quantity("80GiB", "x") == 80 * 2**30
    assert parse_quantity("989e12", "x") == 989e12 and parse_quantity("312T", "x") == 312e12
    with pytest.raises(EstimateError, match="80 gigs"):
        parse_quantity("80 gigs", "--gpu-memory")


def test_run_refuses_a_stage_that_cannot_fit_before_any_model_loads(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The memory check needs no FLOP rate: the CPU's is measured only for `lm2vec plan`'s hours.
    monkeypatch.setattr("lm2vec.pipeline.estimate.cpu_flops", lambda: pytest.fail("measured the CPU's FLOP rate"))
    docs = tmp_path / "docs.txt"
    docs.write_text("the cat sat on the mat .\n\nthe dog ran fast .")
    overrides = [f"run.model={tiny_llama}", f"data.inputs={docs}", "mntp.per_device_batch_size=2000000"]
    arguments = ["run", str(QUICK), "--out", str(tmp_path / "run"), "--until", "mntp"]
    result = CliRunner().invoke(app, [*arguments, *[a for o in overrides for a in ("--set", o)]])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: mntp needs about") and "RAM" in result.output
    assert "mntp.per_device_batch_size" in result.output and "mntp.gradient_checkpointing" in result.output
    assert not (tmp_path / "run" / "data").exists() and not (tmp_path / "run" / "mntp").exists()


def test_a_pruned_mntp_shrinks_its_stage_and_every_later_one() -> None:
    from lm2vec.pipeline.estimate import estimate_plan
    from lm2vec.pipeline.plan import plan_run

    mistral = [f"run.model={MISTRAL}"]
    whole = estimate_plan(plan_run(QUICK, mistral, check_inputs=False), GPU)
    pruned = estimate_plan(plan_run(QUICK, [*mistral, "mntp.prune_layers=0.25"], check_inputs=False), GPU)
    shape, kept = source_shape(MISTRAL), source_shape(MISTRAL, None, 0.25)
    assert (shape.layers, kept.layers) == (32, 24)
    assert shape.parameters - kept.parameters == 8 * shape.linear_parameters / 32 + 8 * 2 * shape.hidden  # + norms
    assert [e.stage for e in pruned] == [e.stage for e in whole] and len(whole) >= 2
    for before, after in zip(whole, pruned, strict=True):  # SimCSE and supervised load the pruned MNTP adapter
        assert before.parameters - after.parameters == shape.parameters - kept.parameters  # MNTP's counts the head
        assert after.trainable == pytest.approx(0.75 * before.trainable)
        assert after.activations < before.activations


def test_a_mining_pass_is_counted_from_the_data_the_batches_draw(tmp_path: Path) -> None:
    """Mining encodes the drawn queries and every positive of each source holding one (one forward pass, in the
    hours); before the data exists only the queries can be counted, and the table says so."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{min(i, 8)}"}) + "\n" for i in range(10)))
    second.write_text("".join(json.dumps({"query": f"r{i}", "positive": f"s{i}"}) + "\n" for i in range(6)))
    shape = source_shape(MISTRAL)

    def supervised(**changes) -> SupervisedOptions:
        settings = {"data": [str(first), str(second)], "per_device_batch_size": 2, "max_length": 64, "max_steps": 1}
        return SupervisedOptions(mine_negatives=1, **{**settings, **changes})

    assert mining_texts(supervised(max_steps=100), devices=1) == (16 + 9 + 6, True)  # an epoch: every record
    one_batch, counted = mining_texts(supervised(), devices=1)  # 2 records of one file, and that file's positives
    assert counted and one_batch in (2 + 9, 2 + 6)
    assert mining_texts(supervised(data=[str(first), str(tmp_path / "not-built-yet")]), devices=4) == (8, False)
    # A pool of the drawn records' positives: at most one each, so the pass is known before the data exists.
    drawn_only, counted = mining_texts(supervised(mining_pool="drawn"), devices=1)
    assert counted and drawn_only in (2 + 1, 2 + 2) and drawn_only < one_batch
    assert mining_texts(supervised(mining_pool="drawn", max_steps=100), devices=1) == (16 + 9 + 6, True)
    not_built = supervised(data=[str(tmp_path / "not-built-yet")], mining_pool="drawn")
    assert mining_texts(not_built, devices=4) == (16, True)

    plain = estimate_stage("supervised", supervised(), shape, GPU)
    mined = estimate_stage("supervised", supervised(), shape, GPU, (one_batch, True))
    forward_per_token = 2 * shape.linear_parameters + 4 * shape.layers * 64 * shape.heads * shape.head_dim
    assert mined.flops - plain.flops == pytest.approx(forward_per_token * one_batch * 64)
    assert mined.total == plain.total  # the vectors stay on the CPU

    table = plan_table([plain, mined, estimate_stage("supervised", supervised(), shape, GPU, (8, False))], GPU)
    assert f"| mining pass before training (texts) | - | {one_batch} | 8 queries + their positives |" in table
    assert "+ positives' pass |" in table
