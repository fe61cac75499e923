"""`lm2vec run RECIPE --dry-run`: every GPU recipe end to end on this CPU (a shrunk random copy of its model's
architecture, the packaged Wikipedia sample, 2 steps a stage, bf16 as on a GPU), and the GPU-path bugs it found."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.modeling.config import EncoderConfig
from lm2vec.modeling.export import MIN_AGREEMENT, export_encoder
from lm2vec.modeling.loading import default_dtype, gpu_dtype_on_cpu
from lm2vec.modeling.shrink import GEMMA_TOKENS, LLAMA_TOKENS, byte_tokenizer, save_shrunk_model, shrunk_config
from lm2vec.pipeline.estimate import model_config
from lm2vec.recipe import load_recipe
from lm2vec.training.arguments import training_arguments
from lm2vec.training.mntp import MNTPConfig
from tests.tiny_models import tiny_config

ROOT = Path(__file__).resolve().parents[1]
GPU_RECIPES = sorted((ROOT / "recipes").glob("*-gpu.toml"))
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.2"


@pytest.fixture(scope="module")
def shrunk_mistral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shrunk-mistral")
    tokenizer = byte_tokenizer(LLAMA_TOKENS)
    save_shrunk_model(shrunk_config(model_config(MISTRAL), tokenizer), tokenizer, folder)
    return folder


@contextlib.contextmanager
def deadline(seconds: int = 20) -> Iterator[None]:
    """Fail the test after `seconds`, where a bug would loop forever."""

    def expire(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    except TimeoutError:
        pytest.fail(f"still running after {seconds} s", pytrace=False)  # (a traceback from inside the tokenizer
    finally:  # breaks pytest's report)
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=[path.stem for path in GPU_RECIPES])
def test_every_gpu_recipe_dry_runs_to_its_report_and_leaves_the_real_run_folder_alone(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the recipes' run folders are relative: runs/NAME
    real_dir = Path(load_recipe(recipe)["run"]["out"])
    # The baselines and the reference encoder (the eval stage's other 6 models) cost a minute a recipe here; the
    # baselines' encoding path is test_a_templated_text_...'s.
    quick_eval = ["--set", "eval.baselines=false", "--set", "eval.reference=false"]
    result = CliRunner().invoke(app, ["run", str(recipe), "--dry-run", *quick_eval])
    assert result.exit_code == 0, result.output
    dry_dir = real_dir.with_name(real_dir.name + "-dry-run")
    assert f"dry run of {recipe} in {dry_dir} (nothing is written to {real_dir})" in result.output
    assert "run.model: " in result.output and "max_steps: 1000 -> 2" in result.output
    assert not real_dir.exists()

    state = json.loads((dry_dir / "pipeline.json").read_text())
    assert all(record["status"] == "done" for record in state["stages"].values()), state
    assert list(state["stages"])[-1] == "report" and (dry_dir / "report" / "report.md").is_file()
    trained = [name for name in ("mntp", "simcse", "supervised") if name in state["stages"]]
    assert trained and all(state["stages"][name]["summary"]["steps"] == 2 for name in trained)
    # The architecture of the recipe's model, shrunk, trained and exported in bf16 as on a GPU.
    shrunk = json.loads((dry_dir / "shrunk-model" / "config.json").read_text())
    exported = json.loads((dry_dir / "model" / "config.json").read_text())
    real_type = model_config(load_recipe(recipe)["run"]["model"]).model_type
    assert shrunk["model_type"] == exported["model_type"] == real_type
    assert shrunk["num_hidden_layers"] == 2 and shrunk["hidden_size"] == 64
    assert exported["dtype"] == "bfloat16"
    assert state["stages"]["export"]["summary"]["st_cosine"] >= MIN_AGREEMENT


def test_inside_gpu_dtype_on_cpu_a_cpu_loads_and_trains_as_a_gpu_does(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    options = MNTPConfig(output_dir=str(tmp_path))
    assert default_dtype(cpu) == torch.float32 and not training_arguments(options).bf16
    with gpu_dtype_on_cpu():
        assert default_dtype(cpu) == torch.bfloat16 and training_arguments(options).bf16
    assert default_dtype(cpu) == torch.float32


def test_a_dry_run_needs_the_models_architecture_before_any_work(tmp_path: Path) -> None:
    recipe = tmp_path / "unknown-gpu.toml"
    recipe.write_text('[run]\nmodel = "someone/unknown-llm-7b"\nout = "' + str(tmp_path / "run") + '"\n')
    result = CliRunner().invoke(app, ["run", str(recipe), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.startswith("error: model 'someone/unknown-llm-7b'") and "--config-from" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run-dry-run").exists()


def test_a_dry_run_takes_an_unknown_models_architecture_from_config_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("config.json").write_text(tiny_config("qwen2").to_json_string())
    Path("korean-gpu.toml").write_text('[run]\nmodel = "someone/unknown-llm-7b"\n')
    arguments = ["run", "korean-gpu.toml", "--dry-run", "--config-from", "config.json", "--until", "data"]
    for attempt in ("starting", "done earlier"):  # a re-run replaces the shrunk model it wrote
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
        assert f"[1/4] data: {attempt}" in result.output and "config from config.json" in result.output
    shrunk = Path("runs/korean-gpu-dry-run/shrunk-model")
    config = json.loads((shrunk / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["num_hidden_layers"] == 2 and config["hidden_size"] == 64
    assert "byte-level stand-in" in json.loads((shrunk / "lm2vec_shrunk.json").read_text())["tokenizer"]
    assert not Path("runs/korean-gpu").exists()


def test_a_dry_run_refuses_the_real_run_folder(tmp_path: Path) -> None:
    recipe = GPU_RECIPES[0]
    real_dir = tmp_path / "real"
    result = CliRunner().invoke(
        app, ["run", str(recipe), "--dry-run", "--out", str(real_dir), "--set", f"run.out={real_dir}"]
    )
    assert result.exit_code == 2 and "is the recipe's run folder" in result.output
    assert not real_dir.exists()
    result = CliRunner().invoke(app, ["run", str(recipe), "--config-from", "config.json"])
    assert result.exit_code == 2 and "--config-from goes with --dry-run" in result.output


def test_a_templated_text_ending_in_a_character_of_several_tokens_is_cut_to_fit() -> None:
    """Before: with the byte tokens of one character sharing its offsets (byte fallback), cutting after the last
    kept token kept the whole text, and the echo baseline's truncation looped forever."""
    encoder = LM2Vec(None, byte_tokenizer(GEMMA_TOKENS), EncoderConfig(text_template="{text} {text}"))
    text = "свят, това е текст"
    for max_length in range(4, 40):
        encoder.config.max_length = max_length
        with deadline():
            tokenized = encoder.tokenize([text])[0]
        assert len(tokenized.input_ids) <= max_length
        assert tokenized.truncated == (max_length < 1 + 2 * len(text.encode()) + 1)


def test_an_encoder_in_bf16_passes_the_sentence_transformers_check_of_its_export(
    shrunk_mistral: Path, tmp_path: Path
) -> None:
    """Before: the check compared bf16 embeddings (LM2Vec's, and sentence-transformers' with its bf16 pooling and
    normalisation), which differ by up to 0.003 in cosine, and a GPU run failed at its export."""
    encoder = LM2Vec.from_pretrained(shrunk_mistral, dtype=torch.bfloat16, device="cpu")
    export = export_encoder(encoder, tmp_path / "model", check=True)
    assert export.st_cosine >= 0.99999
    assert encoder.model.dtype == torch.bfloat16  # the caller's encoder is left as it was
    assert json.loads((tmp_path / "model" / "config.json").read_text())["dtype"] == "bfloat16"
