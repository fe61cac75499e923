"""save_pretrained: LM2Vec, plain transformers and sentence-transformers load the folder as the same encoder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from lm2vec import EncoderConfig, LM2Vec
from lm2vec.modeling.card import base_metadata, front_matter, model_card
from tests.tiny_models import save_tiny_model

TEXTS = ["the cat sat on the mat .", "a dog ran fast", "music", "the big red car is on the road in the city"]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last_token", "first_token"])
def test_export_loads_identically_everywhere(tiny_llama, tmp_path, pooling: str) -> None:
    original = LM2Vec.from_pretrained(tiny_llama, pooling=pooling, max_length=64, device="cpu")
    expected = original.encode(TEXTS)
    original.save_pretrained(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["is_causal"] is False
    assert config["use_bidirectional_attention"] is True
    assert json.loads((tmp_path / "lm2vec_config.json").read_text())["pooling"] == pooling

    reloaded = LM2Vec.from_pretrained(tmp_path, device="cpu")
    assert reloaded.config == original.config
    assert cosine(reloaded.encode(TEXTS), expected).min() >= 0.9999

    sentence_transformer = SentenceTransformer(str(tmp_path), device="cpu")
    assert cosine(sentence_transformer.encode(TEXTS), expected).min() >= 0.9999


def test_plain_transformers_is_bidirectional_without_custom_code(tiny_llama, tmp_path) -> None:
    original = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    expected = original.encode(TEXTS)
    original.save_pretrained(tmp_path)
    model, tokenizer = AutoModel.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    assert cosine(mean, expected).min() >= 0.9999


def test_exported_gemma3_keeps_its_sliding_window_with_the_bidirectional_flag(tmp_path) -> None:
    """vLLM and TEI read use_bidirectional_attention; for Gemma-3 transformers also rewrites the sliding window
    from it on load, so an input longer than the window must give the same embedding after the round trip."""
    folder = save_tiny_model("gemma3_text", tmp_path / "base", sliding_window=4, layer_types=["sliding_attention"] * 2)
    original = LM2Vec.from_pretrained(folder, device="cpu")
    long_text = [TEXTS[-1] + " and " + TEXTS[0]]
    expected = original.encode(long_text)
    original.save_pretrained(tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["use_bidirectional_attention"] is True
    reloaded = LM2Vec.from_pretrained(tmp_path / "export", device="cpu")
    assert reloaded.model.config.sliding_window == original.model.config.sliding_window
    assert cosine(reloaded.encode(long_text), expected).min() >= 0.9999


def test_causal_baseline_exports_as_causal(tiny_llama, tmp_path) -> None:
    LM2Vec.from_pretrained(tiny_llama, bidirectional=False, device="cpu").save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["is_causal"] is True
    assert json.loads((tmp_path / "config.json").read_text())["use_bidirectional_attention"] is False
    assert LM2Vec.from_pretrained(tmp_path, device="cpu").config.bidirectional is False


def save_random_lora(base_folder, adapter_folder, seed: int) -> None:
    """A LoRA adapter on the backbone with non-zero B, so merging it really changes the weights."""
    torch.manual_seed(seed)
    backbone = AutoModel.from_pretrained(base_folder)
    peft_model = get_peft_model(backbone, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    peft_model.save_pretrained(adapter_folder)


def test_adapters_are_merged_in_order(tiny_llama, tmp_path) -> None:
    first, second = tmp_path / "mntp", tmp_path / "simcse"
    save_random_lora(tiny_llama, first, seed=1)
    base = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    after_first = LM2Vec.from_pretrained(tiny_llama, adapters=[first], device="cpu")
    save_random_lora_on_merged = tmp_path / "merged"
    after_first.save_pretrained(save_random_lora_on_merged)
    save_random_lora(save_random_lora_on_merged, second, seed=2)

    both = LM2Vec.from_pretrained(tiny_llama, adapters=[first, second], device="cpu")
    step_by_step = LM2Vec.from_pretrained(save_random_lora_on_merged, adapters=[second], device="cpu")
    assert cosine(base.encode(TEXTS), after_first.encode(TEXTS)).min() < 0.999
    np.testing.assert_allclose(both.encode(TEXTS), step_by_step.encode(TEXTS), atol=1e-5, rtol=1e-4)
    assert not any("lora" in name for name, _ in both.model.named_parameters())


def test_missing_adapter_folder_is_a_clear_error(tiny_llama, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder"):
        LM2Vec.from_pretrained(tiny_llama, adapters=[tmp_path], device="cpu")


@pytest.mark.parametrize("pooling", ["mean", "last_token"])
def test_plain_sentence_transformers_applies_the_trained_query_instruction(tiny_llama, tmp_path, pooling) -> None:
    original = LM2Vec.from_pretrained(tiny_llama, pooling=pooling, max_length=64, device="cpu")
    original.config.query_instruction = "retrieve similar text"
    with_instruction = original.encode(TEXTS, prompt="retrieve similar text")
    without = original.encode(TEXTS)
    assert cosine(with_instruction, without).min() < 0.999  # else the test could not tell them apart
    original.save_pretrained(tmp_path)

    sentence_transformer = SentenceTransformer(str(tmp_path), device="cpu")
    assert cosine(sentence_transformer.encode(TEXTS), with_instruction).min() >= 0.9999
    assert cosine(sentence_transformer.encode(TEXTS, prompt_name="query"), with_instruction).min() >= 0.9999
    assert cosine(sentence_transformer.encode_query(TEXTS), with_instruction).min() >= 0.9999
    assert cosine(sentence_transformer.encode_document(TEXTS), without).min() >= 0.9999


def test_export_without_instruction_has_no_default_prompt(tiny_llama, tmp_path) -> None:
    LM2Vec.from_pretrained(tiny_llama, device="cpu").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == {} and saved["default_prompt_name"] is None


def test_export_writes_a_model_card_with_the_base_models_license(tiny_llama, tmp_path) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# A base model\n")
    encoder = LM2Vec.from_pretrained(base, device="cpu")
    encoder.config.query_instruction = "retrieve similar text"
    encoder.config.matryoshka_dims = [8, 16]
    encoder.save_pretrained(tmp_path / "export")

    card = (tmp_path / "export" / "README.md").read_text()
    metadata = front_matter(card)
    assert metadata["license"] == "apache-2.0" and metadata["language"] == ["en"]
    assert metadata["library_name"] == "sentence-transformers"
    assert metadata["pipeline_tag"] == "sentence-similarity"
    assert "lm2vec" in metadata["tags"]
    assert "`retrieve similar text`" in card and "cut to 8, 16, 32 dimensions" in card
    for usage in ("SentenceTransformer(", "AutoModel.from_pretrained(", "LM2Vec.from_pretrained(", "lm2vec serve"):
        assert usage in card


def test_a_re_exported_encoder_keeps_its_hub_base_model(tmp_path) -> None:
    folder = tmp_path / "models--someone--tiny-base" / "snapshots" / "abc"
    save_tiny_model("llama", folder)
    LM2Vec.from_pretrained(folder, device="cpu").save_pretrained(tmp_path / "first")
    LM2Vec.from_pretrained(tmp_path / "first", device="cpu").save_pretrained(tmp_path / "second")
    for export in ("first", "second"):
        assert front_matter((tmp_path / export / "README.md").read_text())["base_model"] == "someone/tiny-base"


def test_export_encoder_merges_configures_and_checks_sentence_transformers(tiny_llama, tmp_path) -> None:
    from lm2vec.modeling.export import ExportCheckError, export_encoder

    config = EncoderConfig(pooling="weighted_mean", query_instruction="Find the sentence")
    export = export_encoder(tiny_llama, tmp_path / "model", config=config, device="cpu", check=True, check_device="cpu")
    assert export.folder == tmp_path / "model" and export.st_cosine >= 0.999 and export.st_query_cosine is not None
    assert LM2Vec.from_pretrained(tmp_path / "model", device="cpu").config == config
    assert export_encoder(LM2Vec.from_pretrained(tiny_llama, device="cpu"), tmp_path / "plain").st_cosine is None
    with pytest.raises(ValueError, match="apply to a source"):
        export_encoder(LM2Vec.from_pretrained(tiny_llama, device="cpu"), tmp_path / "x", pooling="mean")
    with pytest.raises(ExportCheckError, match="disagrees"):
        from lm2vec.modeling import export as export_module

        export_module.check_export(tmp_path / "model", -np.ones((3, 1)), np.ones((3, 1)), "cpu")


def test_a_packaged_models_export_names_its_origin_and_licence(smollm2, tmp_path) -> None:
    """`pkg:` aliases know the hub model their weights came from; its licence (Gemma's terms too) travels with
    every export and re-export."""
    smollm2.save_pretrained(tmp_path / "first")
    LM2Vec.from_pretrained(tmp_path / "first", device="cpu").save_pretrained(tmp_path / "second")
    for export in ("first", "second"):
        card = (tmp_path / export / "README.md").read_text()
        assert front_matter(card)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert front_matter(card)["license"] == "apache-2.0" and "## Licence" in card

    gemma = base_metadata("pkg:gemma3-270m")
    assert gemma == {
        "base_model": "google/gemma-3-270m",
        "license": "gemma",
        "license_link": "https://ai.google.dev/gemma/terms",
    }
    card = model_card(smollm2.config, smollm2.get_sentence_embedding_dimension(), gemma)
    assert "subject to its licence, `gemma` (https://ai.google.dev/gemma/terms)" in card
    assert front_matter(card)["license_link"] == "https://ai.google.dev/gemma/terms"


def test_a_recipe_and_training_alone_export_the_same_config(tiny_llama, tmp_path) -> None:
    """The same options through a recipe's export stage and `lm2vec train supervised` without a recipe (its
    encoder/) give the same lm2vec_config.json and config_sentence_transformers.json: pooling, max_length, the
    instruction most supervised queries carried (recorded when training read them, not read again by the export),
    the Matryoshka sizes."""
    from typer.testing import CliRunner

    from lm2vec.cli import app
    from lm2vec.pipeline.run import run_recipe
    from tests.test_pipeline import inputs_folder

    inputs = inputs_folder(tmp_path / "inputs")
    pairs = [line.split("\t")[:2] for line in (inputs / "sts.tsv").read_text().splitlines()[:12]]
    data = tmp_path / "pairs.jsonl"

    def write_pairs(instruction: str) -> None:
        records = [
            {"query": query, "positive": positive, "instruction": instruction if number % 3 else ""}
            for number, (query, positive) in enumerate(pairs)
        ]
        data.write_text("".join(json.dumps(record) + "\n" for record in records))

    write_pairs("find the same sentence")
    supervised = {
        "data": str(data),
        "pooling": "weighted_mean",
        "max_length": 32,
        "matryoshka_dims": [8, 16],
        "per_device_batch_size": 4,
        "max_steps": 1,
        "warmup_steps": 0,
    }
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'[run]\nmodel = "{tiny_llama}"\npooling = "weighted_mean"\nmax_length = 32\n'
        f'[mntp]\ndata = "{inputs / "docs.txt"}"\nmax_seq_length = 16\nper_device_batch_size = 2\nmax_steps = 1\n'
        'mask_token = "<unk>"\neval_on_start = false\n'
        "[supervised]\n"
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in supervised.items() if key != "pooling")
    )
    run_dir = tmp_path / "run"
    run_recipe(recipe, out=run_dir, until="supervised", echo=lambda line: None)

    alone = tmp_path / "alone"
    arguments = [
        "train",
        "supervised",
        "--out",
        str(alone),
        "--set",
        f"model={tiny_llama}",
        "--set",
        f"adapters={run_dir / 'mntp' / 'adapter'}",
    ]
    for key, value in supervised.items():
        arguments += ["--set", f"{key}={json.dumps(value) if isinstance(value, list) else value}"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    write_pairs("an instruction no query was trained with")  # the export stage reads what training recorded
    run_recipe(recipe, out=run_dir, until="export", echo=lambda line: None)

    for name in ("lm2vec_config.json", "config_sentence_transformers.json"):
        through_recipe = json.loads((run_dir / "model" / name).read_text())
        assert json.loads((alone / "encoder" / name).read_text()) == through_recipe, name
    config = json.loads((run_dir / "model" / "lm2vec_config.json").read_text())
    assert (config["pooling"], config["max_length"], config["matryoshka_dims"]) == ("weighted_mean", 32, [8, 16])
    assert config["query_instruction"] == "find the same sentence"
