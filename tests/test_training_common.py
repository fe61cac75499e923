"""Recipes and the shared training callbacks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from lm2vec.training.callbacks import plot_losses, read_log
from lm2vec.training.recipe import RecipeError, build_config, load_recipe


@dataclass
class StageConfig:
    model: str = "pkg:smollm2"
    learning_rate: float = 5e-5
    max_steps: int = 100
    gradient_checkpointing: bool = False
    adapters: list[str] = field(default_factory=list)
    output_dir: str | None = None


def test_section_then_overrides(tmp_path) -> None:
    (tmp_path / "r.toml").write_text("[mntp]\nmax_steps = 20\nlearning_rate = 1e-4\n[simcse]\nmax_steps = 7\n")
    recipe = load_recipe(tmp_path / "r.toml")
    config = build_config(
        StageConfig,
        "mntp",
        recipe,
        ["learning_rate=3e-4", "gradient_checkpointing=true", "simcse.max_steps=1", "adapters=a,b", "output_dir=none"],
    )
    assert config == StageConfig(
        learning_rate=3e-4, max_steps=20, gradient_checkpointing=True, adapters=["a", "b"], output_dir=None
    )
    assert build_config(StageConfig, "simcse", recipe, ["simcse.max_steps=1"]).max_steps == 1


def test_mistakes_are_named(tmp_path) -> None:
    with pytest.raises(RecipeError, match="has no option max_stpes"):
        build_config(StageConfig, "mntp", {"mntp": {"max_stpes": 3}})
    with pytest.raises(RecipeError, match="max_steps='ten' is not an integer"):
        build_config(StageConfig, "mntp", None, ["max_steps=ten"])
    with pytest.raises(RecipeError, match="not of the form key=value"):
        build_config(StageConfig, "mntp", None, ["max_steps"])
    (tmp_path / "bad.toml").write_text("[mntp\n")
    with pytest.raises(RecipeError, match="bad.toml"):
        load_recipe(tmp_path / "bad.toml")


def test_loss_plot_from_log(tmp_path) -> None:
    assert plot_losses(tmp_path) is None
    lines = [{"step": s, "loss": 5.0 / s} for s in range(1, 6)] + [{"step": 5, "eval_loss": 1.5}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert len(read_log(tmp_path)) == 6
    png = plot_losses(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
