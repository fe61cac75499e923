"""Layer pruning: the top decoder layers dropped, the first ones kept as they were, exports that reload pruned,
adapters trained pruned that load pruned, and values that cannot work refused before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, AutoModel
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.modeling import loading
from lm2vec.modeling.pruning import ADAPTER_RECORD, PRUNED_FROM, PruneError, kept_layers
from lm2vec.options import OptionValueError
from lm2vec.stages.export import ExportOptions
from lm2vec.training.contrastive import SimCSEOptions, train_simcse
from lm2vec.training.mntp.model import load_causal_lm
from tests.tiny_models import save_tiny_model

SENTENCES = ["the cat sat on the mat .", "a dog ran fast", "the big red car is on the road", "a man plays guitar"]


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory) -> dict[str, Path]:
    """Tiny four-layer models: Llama-like, and Gemma-3 with per-layer attention types (sliding, then full)."""
    root = tmp_path_factory.mktemp("four-layers")
    return {
        "llama": save_tiny_model("llama", root / "llama", num_hidden_layers=4),
        "gemma3_text": save_tiny_model(
            "gemma3_text", root / "gemma3", num_hidden_layers=4, sliding_window_pattern=2, sliding_window=4
        ),
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_kept_layers_round_to_the_nearest_layer() -> None:
    assert [kept_layers(30, share) for share in (0, 0.2, 0.3, 0.4)] == [30, 24, 21, 18]
    assert [kept_layers(18, share) for share in (0.2, 0.3, 0.4)] == [14, 13, 11]


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_pruning_keeps_exactly_the_first_layers_and_their_weights(four_layers, model_type: str) -> None:
    source = four_layers[model_type]
    full = LM2Vec.from_pretrained(source, device="cpu")
    pruned = LM2Vec.from_pretrained(source, device="cpu", prune_layers=0.5)

    assert len(pruned.model.layers) == pruned.model.config.num_hidden_layers == 2
    assert getattr(pruned.model.config, PRUNED_FROM) == 4
    kept = {name: value for name, value in full.model.state_dict().items() if not name.startswith("layers.")}
    kept |= {
        name: value for name, value in full.model.state_dict().items() if name.startswith(("layers.0.", "layers.1."))
    }
    pruned_state = pruned.model.state_dict()
    assert set(pruned_state) == set(kept)
    assert all(torch.equal(pruned_state[name], kept[name]) for name in kept)
    if model_type == "gemma3_text":
        assert (
            pruned.model.config.layer_types
            == full.model.config.layer_types[:2]
            == [
                "sliding_attention",
                "full_attention",
            ]
        )


def test_pruning_fits_the_per_layer_config_of_qwen2(tmp_path) -> None:
    source = save_tiny_model("qwen2", tmp_path / "qwen2", num_hidden_layers=4, max_window_layers=3)
    model, _ = loading.load_backbone(source, prune_layers=0.5)
    assert (model.config.num_hidden_layers, model.config.max_window_layers, len(model.config.layer_types)) == (2, 2, 2)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_a_pruned_export_reloads_pruned_in_transformers_and_sentence_transformers(
    four_layers, model_type: str, tmp_path
) -> None:
    pruned = LM2Vec.from_pretrained(four_layers[model_type], device="cpu", prune_layers=0.25)
    expected = pruned.encode(SENTENCES)
    pruned.save_pretrained(tmp_path / "model")

    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (config["num_hidden_layers"], config[PRUNED_FROM]) == (3, 4)
    assert len(config.get("layer_types", [None] * 3)) == 3
    assert len(AutoModel.from_pretrained(tmp_path / "model").layers) == 3
    reloaded = LM2Vec.from_pretrained(tmp_path / "model", device="cpu")
    assert _cosine(reloaded.encode(SENTENCES), expected).min() > 0.9999
    plain = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert len(plain[0].auto_model.layers) == 3
    assert _cosine(plain.encode(SENTENCES), expected).min() > 0.9999


def test_mntp_loads_the_pruned_causal_lm_with_its_head(four_layers) -> None:
    causal_lm, _, _ = load_causal_lm(str(four_layers["llama"]), prune_layers=0.5)
    assert len(causal_lm.model.layers) == causal_lm.config.num_hidden_layers == 2
    logits = causal_lm(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    assert logits.shape == (1, 4, causal_lm.config.vocab_size) and bool(torch.isfinite(logits).all())


def test_an_adapter_trained_pruned_reloads_pruned_and_refuses_more_layers(four_layers, tmp_path) -> None:
    source = four_layers["llama"]
    (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES * 4) + "\n")
    options = SimCSEOptions(
        model=str(source),
        data=str(tmp_path / "sentences.txt"),
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_batch_size=8,
        learning_rate=1e-3,
        max_length=32,
        lora_r=4,
        prune_layers=0.5,
    )
    result = train_simcse(options)
    record = json.loads((result.adapter_dir / ADAPTER_RECORD).read_text())
    assert record == {"num_hidden_layers": 2, PRUNED_FROM: 4}
    assert AutoConfig.from_pretrained(result.encoder_dir).num_hidden_layers == 2

    expected = LM2Vec.from_pretrained(result.encoder_dir, device="cpu").encode(SENTENCES)
    followed = LM2Vec.from_pretrained(source, adapters=[result.adapter_dir], device="cpu")  # no prune_layers given
    assert len(followed.model.layers) == 2
    assert _cosine(followed.encode(SENTENCES), expected).min() > 0.9999
    same = LM2Vec.from_pretrained(source, adapters=[result.adapter_dir], device="cpu", prune_layers=0.5)
    assert _cosine(same.encode(SENTENCES), expected).min() > 0.9999
    with pytest.raises(PruneError, match="trained on the first 2"):
        LM2Vec.from_pretrained(source, adapters=[result.adapter_dir], device="cpu", prune_layers=0.25)
    with pytest.raises(PruneError, match="trained on 2 decoder layers, but"):
        LM2Vec.from_pretrained(
            save_tiny_model("llama", tmp_path / "one-layer", num_hidden_layers=1), adapters=[result.adapter_dir]
        )


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5, float("nan"), True])
def test_shares_outside_zero_to_one_are_refused_by_every_entry(tiny_llama, share, monkeypatch) -> None:
    monkeypatch.setattr(loading.AutoModel, "from_pretrained", _no_weights)
    with pytest.raises(PruneError, match="prune_layers must be a share of the layers in"):
        LM2Vec.from_pretrained(tiny_llama, prune_layers=share)
    with pytest.raises(OptionValueError, match="prune_layers must be"):
        SimCSEOptions(prune_layers=share)
    with pytest.raises(OptionValueError, match="prune_layers must be"):
        ExportOptions(prune_layers=share)


def test_a_share_that_leaves_no_layer_is_refused_before_the_weights_load(tiny_llama, monkeypatch) -> None:
    monkeypatch.setattr(loading.AutoModel, "from_pretrained", _no_weights)
    with pytest.raises(PruneError, match="would drop all 2 decoder layers"):
        LM2Vec.from_pretrained(tiny_llama, prune_layers=0.75)


def test_convert_prune_layers_on_the_command_line(four_layers, tmp_path) -> None:
    runner = CliRunner()
    refused = runner.invoke(app, ["convert", str(four_layers["llama"]), str(tmp_path / "bad"), "--prune-layers", "1"])
    assert refused.exit_code == 2, refused.output
    assert refused.output.strip().splitlines() == [
        "error: prune_layers must be a share of the layers in [0, 1), got 1.0."
    ]
    assert not (tmp_path / "bad").exists()

    done = runner.invoke(app, ["convert", str(four_layers["llama"]), str(tmp_path / "model"), "--prune-layers", "0.5"])
    assert done.exit_code == 0, done.output
    assert AutoConfig.from_pretrained(tmp_path / "model").num_hidden_layers == 2


def _no_weights(*args, **kwargs):
    raise AssertionError("the weights were loaded before the value was refused")
