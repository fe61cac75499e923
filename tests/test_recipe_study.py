"""benchmarks/recipe_study.py: every arm's options are valid before any long run starts, and the table reads them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from lm2vec.training.contrastive import SimCSEOptions, SupervisedOptions
from lm2vec.training.mntp import MNTPConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recipe_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("recipe_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["recipe_study"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules["recipe_study"]


def test_every_arm_builds_its_training_options(study) -> None:
    for arm in study.ARMS.values():
        assert arm.baselines or arm.simcse or arm.pooling != "mean", "an arm must differ from the untrained model"
        if arm.mntp:
            MNTPConfig(model=arm.model, **arm.mntp)
        if arm.simcse:
            settings = {k: v for k, v in arm.simcse.items() if k != "data"}
            SimCSEOptions(model=arm.model, **settings)
        if arm.supervised:
            assert arm.supervised["data"].startswith("${stsb}/")  # a tuning task's training split, nothing else
            SupervisedOptions(model=arm.model, **{k: v for k, v in arm.supervised.items() if k != "data"})


def test_cost_and_table(study) -> None:
    cost = study.Cost()
    cost.add("simcse", steps=20, token_slots=61_440, wall=300.0, cpu=240.0)
    row = {
        "arm": "a",
        "scores": dict.fromkeys(study.TUNING_TASKS, 0.5),
        "average": 0.5,
        "cost": {
            "steps": cost.steps,
            "token_slots": cost.token_slots,
            "wall_seconds": cost.wall_seconds,
            "cpu_seconds": cost.cpu_seconds,
        },
        "idle_minutes": cost.idle_minutes,
    }
    assert cost.idle_minutes == 2.0  # 240 CPU seconds on two cores
    line = study.table([row]).splitlines()[-1]
    assert line == "| a | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 20 | 61,440 | 256 | 5.0 | 4.0 | 2.0 |"


def test_a_checkpoint_costs_mntp_and_its_share_of_simcse(study) -> None:
    cost = study.Cost()
    cost.add("mntp", steps=10, token_slots=10_240, wall=100.0, cpu=90.0)
    cost.add("simcse", steps=80, token_slots=80_000, wall=800.0, cpu=720.0)
    part = cost.share(20)
    assert part.parts["mntp"]["steps"] == 10 and part.parts["simcse"]["steps"] == 20
    assert part.steps == 30 and part.token_slots == 30_240
    assert part.cpu_seconds == 90.0 + 180.0 and part.wall_seconds == 100.0 + 200.0
    assert (
        study.ARMS["gemma-mntp10-crops-curve"].checkpoints[-1]
        == study.ARMS["gemma-mntp10-crops-curve"].simcse["max_steps"]
    )  # the last checkpoint is the arm's own model
    supervised = study.ARMS["gemma-mntp10-crops-supervised-curve"]
    assert supervised.last_stage == "supervised" and supervised.checkpoints[-1] == supervised.supervised["max_steps"]
    cost.add("supervised", steps=80, token_slots=8_000, wall=400.0, cpu=320.0)
    part = cost.share(20, "supervised")
    assert part.parts["simcse"]["steps"] == 80 and part.parts["supervised"]["steps"] == 20
    assert part.cpu_seconds == 90.0 + 720.0 + 80.0  # the stages before it whole


def test_a_matryoshka_prefix_is_cut_and_renormalised(study) -> None:
    import numpy as np

    from lm2vec.evaluation.specs import ModelSpec

    class Fixed:
        def embed(self, texts, instruction=None):
            return np.array([[3.0, 4.0, 12.0], [1.0, 0.0, 5.0]], dtype=np.float32)[: len(texts)]

    options = {"cache_root": None, "model": Fixed(), "fingerprint": "f", "label": "m @ 2", "dimension": 2}
    truncated = study.truncated_encoder_class()(ModelSpec("m", "x"), **options)
    np.testing.assert_allclose(truncated.embed(["a", "b"]), [[0.6, 0.8], [1.0, 0.0]], rtol=1e-6)
    assert truncated.name == "m @ 2"
    for arm in study.ARMS.values():
        assert all(d < 640 for d in arm.dimensions)  # prefixes of Gemma-3-270m's 640


def test_the_paper_arms_are_for_a_gpu_and_shrink_for_a_smoke_run(study) -> None:
    paper = {name: arm for name, arm in study.ARMS.items() if arm.gpu}
    assert set(paper) == {"gemma-paper", "smollm2-paper"}
    for arm in paper.values():
        assert (
            arm.mntp["max_steps"] == 1000 and arm.mntp["per_device_batch_size"] * arm.mntp["max_seq_length"] == 32 * 512
        )
        assert arm.simcse["max_steps"] == 1000 and arm.simcse["per_device_batch_size"] == 128
        tiny = study.smoke(arm)
        assert tiny.mntp["max_steps"] == tiny.simcse["max_steps"] == 2 and tiny.simcse["max_length"] == 32
        assert tiny.simcse["dropout"] == arm.simcse["dropout"] and tiny.model == arm.model  # only the size changes
        MNTPConfig(model=tiny.model, **tiny.mntp)
        SimCSEOptions(model=tiny.model, **tiny.simcse)


def test_the_main_recipe_is_the_studied_chain(study) -> None:
    """recipes/gemma3-en-cpu.toml trains what the study measured, so its comments' numbers are its own."""
    import tomllib

    recipe = tomllib.loads((SCRIPT.parents[1] / "recipes" / "gemma3-en-cpu.toml").read_text())
    arm = study.ARMS["gemma-mntp50-lr3e-4-crops-lr3e-4-cosent-curve"]
    assert recipe["run"]["model"] == arm.model and recipe["run"]["pooling"] == arm.pooling
    for section, settings in (("mntp", arm.mntp), ("simcse", arm.simcse), ("supervised", arm.supervised)):
        chosen = {k: v for k, v in settings.items() if k not in ("data", "mini_batch_size")}
        assert {k: recipe[section].get(k) for k in chosen} == chosen, section
