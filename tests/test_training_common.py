"""Recipes and the shared training callbacks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lm2vec.artifacts import ForeignFolderError
from lm2vec.recipe import RecipeError, build_config, load_recipe
from lm2vec.training.callbacks import plot_losses, read_log
from lm2vec.training.checkpoints import resume_checkpoint
from lm2vec.training.options import TrainingOptions
from tests.test_artifacts import dead_pid


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


def test_a_failed_loss_plot_leaves_no_temporary_file(tmp_path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    def disk_full(self, fname, **kwargs) -> None:
        Path(fname).write_bytes(b"\x89PNG, half of it")
        raise OSError(28, "No space left on device")

    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space left"):
        plot_losses(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["log.jsonl"]


def test_resume_skips_an_incomplete_checkpoint(tmp_path, caplog) -> None:
    """A kill during a save used to leave checkpoint-N without trainer_state.json, and every resume failed on it."""
    options = TrainingOptions(output_dir=str(tmp_path / "run"))
    assert resume_checkpoint(options, resume=True) is None  # a new folder becomes lm2vec's
    run = tmp_path / "run"
    for step, files in (
        (2, ("trainer_state.json", "adapter_model.safetensors")),
        (4, ("adapter_model.safetensors",)),
        (6, ()),
    ):
        (run / f"checkpoint-{step}").mkdir()
        for name in files:
            content = json.dumps({"global_step": step}) if name == "trainer_state.json" else "weights"
            (run / f"checkpoint-{step}" / name).write_text(content)
    (run / ".checkpoint-8.partial-staging" / "checkpoint-8").mkdir(parents=True)  # a save killed before its rename
    (run / f".checkpoint-10.partial-{dead_pid()}").write_text("a file, not a folder")  # removed too, not an error
    with caplog.at_level("WARNING"):
        assert resume_checkpoint(options, resume=True) == str(run / "checkpoint-2")
    assert "checkpoint-4 is incomplete" in caplog.text and "checkpoint-6 is incomplete" in caplog.text
    assert sorted(path.name for path in run.iterdir()) == ["checkpoint-2", "lm2vec_training.json"]
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        resume_checkpoint(options, resume=False)


def test_a_training_folder_of_the_users_is_refused(tmp_path) -> None:
    (tmp_path / "results.csv").write_text("mine")
    with pytest.raises(ForeignFolderError, match="not empty and was not made by lm2vec"):
        resume_checkpoint(TrainingOptions(output_dir=str(tmp_path)), resume=True)
    assert [path.name for path in tmp_path.iterdir()] == ["results.csv"]


def test_every_bad_value_of_a_section_is_named_at_once() -> None:
    from lm2vec.training.mntp import MNTPConfig

    section = {
        "mntp": {
            "learning_rate": -1.0,
            "max_steps": 6.5,
            "per_device_batch_size": 0,
            "mask_prob": 2.0,
            "gradient_checkpointing": "yes please",
        }
    }
    with pytest.raises(RecipeError) as raised:
        build_config(MNTPConfig, "mntp", section, ["lora_target_modules=[q_proj", "save_steps=-5"])
    for problem in (
        "max_steps=6.5 is not an integer",
        "gradient_checkpointing='yes please' is not a boolean",
        "lora_target_modules='[q_proj' is not a JSON list",
        "learning_rate must be positive, got -1.0",
        "per_device_batch_size must be at least 1, got 0",
        "mask_prob must be between 0 and 1, got 2.0",
        "save_steps must be at least 1, got -5",
    ):
        assert problem in str(raised.value)
    assert build_config(MNTPConfig, "mntp", None, ['lora_target_modules=["q_proj", "v_proj"]']).lora_target_modules == [
        "q_proj",
        "v_proj",
    ]


def test_every_stage_trains_with_one_convention() -> None:
    """train_mntp, train_simcse and train_supervised: (options, resume=False, callbacks=()) -> TrainingResult."""
    import inspect

    from lm2vec.training.contrastive import train_simcse, train_supervised
    from lm2vec.training.mntp import train_mntp

    for train in (train_mntp, train_simcse, train_supervised):
        signature = inspect.signature(train)
        assert list(signature.parameters) == ["options", "resume", "callbacks"], train.__name__
        assert signature.parameters["resume"].default is False and signature.parameters["callbacks"].default == ()
        assert signature.return_annotation == "TrainingResult", train.__name__


def test_both_trainers_are_one_stage_trainer() -> None:
    """MNTP's and the contrastive Trainer get atomic checkpoints and the one progress bar from one base class, in
    the order that lets the checkpoint mixin wrap the Trainer's saves."""
    from transformers import Trainer

    from lm2vec.training.checkpoints import AtomicCheckpoints
    from lm2vec.training.contrastive import ContrastiveTrainer
    from lm2vec.training.mntp import MNTPTrainer
    from lm2vec.training.trainer import OneProgressBar, ShardedFrozenWeights, StageTrainer

    assert MNTPTrainer.__bases__ == ContrastiveTrainer.__bases__ == (StageTrainer,)
    assert StageTrainer.__mro__[1:5] == (AtomicCheckpoints, OneProgressBar, ShardedFrozenWeights, Trainer)
