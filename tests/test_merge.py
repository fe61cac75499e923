"""Weighted adapter merging: exact linear merges, TIES/DARE, checks before loading, the embedding cache's key and
the `[merge]` recipe stage, on a tiny random model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.evaluation.embedding_cache import spec_fingerprint
from lm2vec.evaluation.errors import EvalConfigError
from lm2vec.evaluation.report import run_specs
from lm2vec.evaluation.specs import ModelSpec
from lm2vec.modeling.loading import AdapterMergeError, merge_adapters
from lm2vec.pipeline.plan import plan_run
from lm2vec.pipeline.run import run_recipe
from lm2vec.recipe import RecipeError
from tests.test_export import save_random_lora
from tests.test_pipeline import inputs_folder, tiny_overrides

TEXTS = ["a red car", "the dog ran fast", "a man plays guitar"]

MERGE_RECIPE = """
[run]
pooling = "mean"

[data]
inputs = ["docs.txt"]
lang = "en"

[mntp]

[simcse]

[merge]
stage = "simcse"
weights = [1.0, 0.5]

[export]
stage = "merge"

[eval]
baselines = false
reference = false
"""


@pytest.fixture(scope="module")
def adapters(tiny_llama, tmp_path_factory) -> tuple[Path, Path]:
    """Two LoRA adapters with non-zero deltas on the tiny model's backbone."""
    folder = tmp_path_factory.mktemp("merge-adapters")
    save_random_lora(tiny_llama, folder / "first", seed=1)
    save_random_lora(tiny_llama, folder / "second", seed=2)
    return folder / "first", folder / "second"


def query_weight(model) -> torch.Tensor:
    return model.layers[0].self_attn.q_proj.weight.detach().clone()


def merged_query_weight(base: Path, adapters, weights=None, method: str = "linear") -> torch.Tensor:
    return query_weight(merge_adapters(AutoModel.from_pretrained(base), adapters, weights, method))


def embeddings(base: Path, adapters, **options) -> np.ndarray:
    return LM2Vec.from_pretrained(base, adapters=adapters, device="cpu", **options).encode(TEXTS)


def test_weights_scale_each_adapters_delta_exactly(tiny_llama, adapters) -> None:
    first, second = adapters
    original = query_weight(AutoModel.from_pretrained(tiny_llama))
    first_delta = merged_query_weight(tiny_llama, [first]) - original
    second_delta = merged_query_weight(tiny_llama, [second]) - original
    half = merged_query_weight(tiny_llama, [first, second], [1, 0.5])
    torch.testing.assert_close(half, original + first_delta + 0.5 * second_delta, rtol=0, atol=1e-5)
    # Strictly between the first adapter alone and the plain chain, where the second adapter changes the weight.
    plain = original + first_delta + second_delta
    moved = second_delta.abs() > 1e-3
    low, high = torch.minimum(original + first_delta, plain), torch.maximum(original + first_delta, plain)
    assert moved.any() and bool(((half > low) & (half < high))[moved].all())


def test_weights_one_and_zero_give_the_first_adapter_and_ones_the_plain_chain(tiny_llama, adapters) -> None:
    first, second = adapters
    chain = embeddings(tiny_llama, [first, second])
    np.testing.assert_allclose(
        embeddings(tiny_llama, [first, second], adapter_weights=[1, 0]), embeddings(tiny_llama, [first]), atol=1e-5
    )
    np.testing.assert_allclose(embeddings(tiny_llama, [first, second], adapter_weights=[1.0, 1.0]), chain, atol=1e-5)
    assert not np.allclose(embeddings(tiny_llama, [first, second], adapter_weights=[1, 0.5]), chain, atol=1e-3)


def test_ties_and_dare_merge_the_deltas_reproducibly(tiny_llama, adapters) -> None:
    linear = merged_query_weight(tiny_llama, adapters, [1, 1])
    for method in ("ties", "dare_ties", "dare_linear"):
        merged = merged_query_weight(tiny_llama, adapters, [1, 1], method)
        assert torch.equal(merged, merged_query_weight(tiny_llama, adapters, [1, 1], method))  # DARE is seeded
        assert not torch.allclose(merged, linear)


@pytest.mark.parametrize("weights", [[1.0], [1.0, 0.5, 0.5], [1.0, math.nan], [1.0, "half"]])
def test_weights_that_do_not_fit_are_refused_before_loading(adapters, tmp_path, weights) -> None:
    missing = tmp_path / "no-model"  # loading anything would fail on it with another error
    with pytest.raises(AdapterMergeError, match="adapter weight"):
        LM2Vec.from_pretrained(missing, adapters=list(adapters), adapter_weights=weights)
    with pytest.raises(AdapterMergeError, match="merge method 'soup'"):
        LM2Vec.from_pretrained(missing, adapters=list(adapters), merge_method="soup")
    with pytest.raises(AdapterMergeError, match="not to linear"):
        LM2Vec.from_pretrained(missing, adapters=list(adapters), merge_density=0.5)


def test_model_specs_carry_the_weights_and_the_cache_key_changes_with_them(tiny_llama, adapters) -> None:
    chain = "+".join(map(str, adapters))
    spec = ModelSpec.parse(f"half={tiny_llama},adapters={chain},adapter_weights=1+0.5")
    assert spec.adapter_weights == (1.0, 0.5) and ModelSpec.parse(spec.describe()) == spec
    entry = {"name": "half", "source": str(tiny_llama), "adapters": list(map(str, adapters))}
    assert ModelSpec.from_dict({**entry, "adapter_weights": [1, 0.5]}) == spec

    def key(**merge) -> str:
        return spec_fingerprint(ModelSpec.from_dict({**entry, **merge}))

    assert key(adapter_weights=[1, 0.5]) != key(adapter_weights=[1, 0.25]) != key()
    assert key(adapter_weights=[1, 1]) == key()  # the plain chain: its cached embeddings stay valid
    assert key(adapter_weights=[1, 1], merge_method="ties") != key()
    with pytest.raises(EvalConfigError, match="model 'half': 1 adapter weight"):
        ModelSpec.parse(f"half={tiny_llama},adapters={chain},adapter_weights=1")
    # The command line says so in one line, before any model loads.
    result = CliRunner().invoke(app, ["eval", "run", "-m", f"half={tiny_llama},adapters={chain},adapter_weights=1"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output


@pytest.fixture(scope="module")
def merge_recipe(tiny_llama, tmp_path_factory) -> tuple[Path, list[str]]:
    folder = inputs_folder(tmp_path_factory.mktemp("merge-inputs"))
    (folder / "merge.toml").write_text(MERGE_RECIPE)
    return folder / "merge.toml", tiny_overrides(tiny_llama, folder)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("merge.weights=[1.0]", r"\[merge\] 1 adapter weight\(s\) for 2 adapter\(s\).*chain of simcse: mntp, simcse"),
        ("merge.stage=distill", r"\[merge\] stage 'distill' is not a training stage"),
        ("merge.stage=supervised", r"\[merge\] stage 'supervised': the recipe has no \[supervised\] section"),
        ("merge.method=soup", r"\[merge\] method must be one of linear, ties, dare_ties, dare_linear, got 'soup'"),
        ("export.stage=eval", r"\[export\] stage must be one of mntp, simcse, supervised, merge \(or empty\)"),
    ],
)
def test_a_merge_section_is_checked_when_the_run_is_planned(merge_recipe, tmp_path, override, message) -> None:
    recipe, overrides = merge_recipe
    with pytest.raises(RecipeError, match=message):
        plan_run(recipe, [*overrides, override], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_recipe_with_merge_evaluates_and_exports_the_merged_model(tiny_llama, merge_recipe, tmp_path) -> None:
    recipe, overrides = merge_recipe
    run_dir = tmp_path / "run"
    plan = plan_run(recipe, overrides, run_dir)
    assert plan.stages == ["data", "mntp", "simcse", "merge", "export", "eval", "report"]
    run_recipe(recipe, overrides, run_dir, echo=lambda line: None)

    name = "merged: mntp 1, simcse 0.5"
    manifest = json.loads((run_dir / "stages.json").read_text())
    chain = ["mntp/adapter", "simcse/adapter"]
    assert manifest["stages"][-1] == {
        "name": name,
        "adapters": chain,
        "adapter_weights": [1.0, 0.5],
        "merge_method": "linear",
        "merge_density": None,
    }
    assert run_specs(run_dir, baselines=False)[-1].adapter_weights == (1.0, 0.5)  # `lm2vec report RUN` reads it
    assert name in json.loads((run_dir / "eval" / "results.json").read_text())["models"]
    record = json.loads((run_dir / "merge" / "merge.json").read_text())
    assert record["chain"] == ["mntp", "simcse"] and record["adapter_weights"] == [1.0, 0.5]

    exported = LM2Vec.from_pretrained(run_dir / "model", device="cpu").encode(TEXTS)
    expected = embeddings(tiny_llama, [run_dir / path for path in chain], adapter_weights=[1, 0.5])
    np.testing.assert_allclose(exported, expected, atol=1e-5)
