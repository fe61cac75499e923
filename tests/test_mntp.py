"""MNTP: the shifted loss, the masking, the sparse LM head, the saved adapter, resume, recipe and CLI."""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, TrainerCallback
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.data.errors import DataError
from lm2vec.data.readers import load_text_dataset
from lm2vec.modeling.bidirectional import SUPPORTED_ARCHITECTURES, set_bidirectional
from lm2vec.training.callbacks import read_log
from lm2vec.training.masking import IGNORE_INDEX, MNTPCollator, mask_token_for, mask_tokens
from lm2vec.training.mntp import (
    MNTPConfig,
    MNTPModel,
    PackedBlocks,
    build_mntp_model,
    load_causal_lm,
    pack_blocks,
    prepare_data,
    train_mntp,
)
from tests.tiny_models import VOCAB_SIZE, WORDS, tiny_config, tiny_tokenizer

MASK = "<unk>"  # the tiny word-level tokenizer has no mask token and no "_"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(0)
    documents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(200)]
    path = tmp_path_factory.mktemp("mntp-data") / "texts.txt"
    path.write_text("\n\n".join(documents))
    return path


def tiny_options(tiny_llama, text_file, output_dir, **overrides) -> MNTPConfig:
    settings = dict(
        model=str(tiny_llama),
        data=str(text_file),
        output_dir=str(output_dir),
        max_seq_length=16,
        per_device_batch_size=2,
        max_steps=6,
        learning_rate=5e-3,
        logging_steps=1,
        save_steps=3,
        mask_token=MASK,
        eval_on_start=False,
    )
    return MNTPConfig(**{**settings, **overrides})


# --- the loss --------------------------------------------------------------------------------------------------
def test_token_i_is_predicted_from_position_i_minus_1(tiny_llama) -> None:
    causal_lm, _, _ = load_causal_lm(str(tiny_llama))
    model = build_mntp_model(causal_lm, MNTPConfig(mask_token=MASK)).eval()
    mask_id = 3
    original = torch.tensor([[1, 10, 11, 12, 13, 14, 15]])
    input_ids = torch.tensor([[1, 10, mask_id, 12, mask_id, 14, 15]])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, 2], labels[0, 4] = original[0, 2], original[0, 4]
    with torch.no_grad():
        logits = causal_lm(input_ids=input_ids).logits[0]  # bidirectional, LoRA B = 0: the base model
        expected = (
            -(
                torch.log_softmax(logits[1], -1)[11] + torch.log_softmax(logits[3], -1)[13]  # outputs at 1 and 3
            )
            / 2
        )
        output = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    torch.testing.assert_close(output["loss"], expected)
    # eval stats: [correct, labelled, summed loss]
    correct = int(logits[1].argmax() == 11) + int(logits[3].argmax() == 13)
    torch.testing.assert_close(output["stats"], torch.tensor([[correct, 2.0, 2 * expected.item()]]))


# The MoE Qwens build slowly (tens of seconds) and share their LM head code with Qwen2/3.
@pytest.mark.parametrize("architecture", sorted(set(SUPPORTED_ARCHITECTURES) - {"qwen2_moe", "qwen3_moe"}))
def test_sparse_head_equals_dense_head_and_the_causal_lm(architecture: str) -> None:
    overrides = {"granite": {"logits_scaling": 4.0}, "gemma3_text": {"final_logit_softcapping": 5.0}}
    torch.manual_seed(0)
    causal_lm = AutoModelForCausalLM.from_config(
        tiny_config(architecture, **overrides.get(architecture, {})),
        attn_implementation=SUPPORTED_ARCHITECTURES[architecture][0],
    ).eval()
    set_bidirectional(causal_lm)
    backbone = getattr(causal_lm, causal_lm.base_model_prefix)
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(4, VOCAB_SIZE, (3, 12), generator=generator)
    masked, labels = mask_tokens(
        input_ids,
        mask_token_id=3,
        special_ids=[0, 1, 2, 3],
        vocab_size=VOCAB_SIZE,
        mask_prob=0.3,
        strategy="bert",
        generator=generator,
    )
    losses = {}
    with torch.no_grad():
        reference = causal_lm(input_ids=masked).logits.float()
        for sparse in (True, False):
            model = MNTPModel(backbone, causal_lm.get_output_embeddings(), causal_lm.config, sparse).eval()
            torch.testing.assert_close(model(input_ids=masked)["logits"].float(), reference, rtol=1e-5, atol=1e-5)
            losses[sparse] = model(input_ids=masked, labels=labels)["loss"]
    expected = F.cross_entropy(reference[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(losses[True], expected, rtol=1e-5, atol=1e-5)


# --- masking ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["bert", "all"])
def test_masking_rates_specials_and_determinism(strategy: str) -> None:
    collator = MNTPCollator(mask_token_id=3, special_ids=(0, 1, 2, 3), vocab_size=VOCAB_SIZE, strategy=strategy)
    rows = torch.randint(4, VOCAB_SIZE, (64, 256), generator=torch.Generator().manual_seed(0))
    rows[:, 0], rows[:, 100], rows[:, 200] = 1, 2, 0  # BOS, EOS, padding: never masked
    features = [{"input_ids": row.tolist(), "mask_seed": 1000 + i} for i, row in enumerate(rows)]
    batch = collator(features)
    masked = batch["labels"] != IGNORE_INDEX
    assert batch["labels"][masked].eq(rows[masked]).all()  # labels: the original tokens, at their own position
    assert not masked[:, [0, 100, 200]].any()
    assert batch["input_ids"][~masked].eq(rows[~masked]).all()  # unmasked tokens are untouched
    assert abs(masked.float().mean().item() - 0.2 * 253 / 256) < 0.01
    as_mask = batch["input_ids"][masked] == 3
    kept = batch["input_ids"][masked] == rows[masked]
    if strategy == "all":
        assert as_mask.all()
    else:
        assert abs(as_mask.float().mean().item() - 0.8) < 0.02
        assert abs(kept.float().mean().item() - 0.1) < 0.02  # (random draws of the same token add ~0.1%)
    again = collator(features)
    assert torch.equal(again["input_ids"], batch["input_ids"]) and torch.equal(again["labels"], batch["labels"])
    other = collator([{**f, "mask_seed": f["mask_seed"] + 1} for f in features])
    assert not torch.equal(other["labels"], batch["labels"])


def test_mask_token_choice(tiny_llama) -> None:
    tokenizer = tiny_tokenizer()
    assert mask_token_for(tokenizer, "<unk>") == ("<unk>", 3)
    assert mask_token_for(tokenizer, "cat")[0] == "cat"
    with pytest.raises(ValueError, match="not a token"):
        mask_token_for(tokenizer)  # no mask token, and "_" is not in the tiny vocabulary
    tokenizer.add_special_tokens({"mask_token": "<mask>"})
    assert mask_token_for(tokenizer) == ("<mask>", tokenizer.mask_token_id)


# --- data ------------------------------------------------------------------------------------------------------
def test_packing_and_sources(tmp_path, text_file) -> None:
    tokenizer = tiny_tokenizer()
    texts = load_text_dataset(str(text_file))
    documents = list(texts["text"])
    blocks = pack_blocks(texts, tokenizer, 16)
    assert len(blocks) > 10 and all(len(ids) == 16 for ids in blocks["input_ids"])
    stream = [i for ids in tokenizer(documents)["input_ids"] for i in [*ids, tokenizer.eos_token_id]]
    assert blocks["input_ids"][0] == stream[:16] and blocks["input_ids"][1] == stream[16:32]

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in documents[:5]))
    assert load_text_dataset(str(tmp_path / "a.jsonl"), text_field="body")["text"] == documents[:5]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in documents[:5]))
    texts.select(range(7)).to_parquet(folder / "b.parquet")
    assert len(load_text_dataset(str(folder))) == 12  # a folder: every supported file in it
    assert load_text_dataset(str(folder), split="validation") is None
    with pytest.raises(DataError, match="missing.txt: not found"):
        load_text_dataset(str(tmp_path / "missing.txt"))

    options = MNTPConfig(data=str(text_file), max_seq_length=16, validation_fraction=0.1, max_eval_blocks=3)
    train, evaluation = prepare_data(options, tokenizer)
    assert len(evaluation) == 3 and len(train) == len(blocks) - round(len(blocks) * 0.1)

    dataset = PackedBlocks(blocks, length=3 * len(blocks) + 5, seed=7)
    passes = [sorted(dataset.block_index(j) for j in range(p * len(blocks), (p + 1) * len(blocks))) for p in (0, 1)]
    assert passes[0] == passes[1] == list(range(len(blocks)))  # every pass sees every block once
    assert [dataset.block_index(j) for j in range(5)] != [dataset.block_index(len(blocks) + j) for j in range(5)]


# --- training --------------------------------------------------------------------------------------------------
class BatchRecorder(TrainerCallback):
    """Hashes of every training batch (masked ids and labels) by step, and the model's training losses."""

    def __init__(self):
        self.batches: dict[int, str] = {}
        self.step = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.register_forward_pre_hook(self._record, with_kwargs=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1

    def _record(self, module, args, kwargs):
        if module.training:
            data = kwargs["input_ids"].numpy().tobytes() + kwargs["labels"].numpy().tobytes()
            self.batches[self.step] = hashlib.sha1(data).hexdigest()


class Interrupt(TrainerCallback):
    def __init__(self, step: int):
        self.at = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("killed")


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def test_train_save_and_load_through_lm2vec(tiny_llama, text_file, tmp_path) -> None:
    options = tiny_options(tiny_llama, text_file, tmp_path / "run", eval_steps=3, eval_on_start=True, merge=True)
    result = train_mntp(options)
    trainer = result.trainer
    assert result.global_step == 6 and 0 <= result.metrics["eval_accuracy"] <= 1
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log if "eval_accuracy" in r] == [0, 3, 6]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert all("tokens_per_second" in r for r in log if "loss" in r and r["step"] > 1)
    assert (tmp_path / "run" / "loss.png").is_file() and list((tmp_path / "run").glob("**/events.out.tfevents*"))
    assert json.loads((tmp_path / "run" / "mntp_config.json").read_text())["mask_token_used"] == MASK
    assert (tmp_path / "run" / "checkpoint-3" / "adapter_model.safetensors").is_file()

    model = trainer.model.eval()
    assert any(v.abs().sum() > 0 for k, v in lora_weights(model).items() if "lora_B" in k)
    encoder = LM2Vec.from_pretrained(tiny_llama, adapters=[result.adapter_dir], device="cpu")
    merged = LM2Vec.from_pretrained(result.encoder_dir, device="cpu")
    batch = encoder.collate(encoder.tokenize(["the cat sat on the mat", "a dog ran fast in the city"]))
    with torch.no_grad():
        trained = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        for loaded in (encoder, merged):
            hidden = loaded.forward(batch)["token_embeddings"]
            torch.testing.assert_close(hidden, trained.last_hidden_state, rtol=1e-4, atol=1e-5)
        base = LM2Vec.from_pretrained(tiny_llama, device="cpu").forward(batch)["token_embeddings"]
    assert not torch.allclose(base, trained.last_hidden_state, atol=1e-4)

    with pytest.raises(FileExistsError, match="--resume"):
        train_mntp(options)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_progress_bar_with_tokens_per_second_on_a_terminal(tiny_llama, text_file, tmp_path, monkeypatch) -> None:
    """The stage's one bar (StageProgress) shows tokens/s; no other callback draws or looks for a bar."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    trainer = train_mntp(tiny_options(tiny_llama, text_file, tmp_path / "run", max_steps=2)).trainer
    callbacks = sorted(type(callback).__name__ for callback in trainer.callback_handler.callbacks)
    assert callbacks == [
        "DefaultFlowCallback",
        "JsonlLogCallback",
        "LossPlotCallback",
        "ResumableTensorBoard",
        "StageProgress",
    ]
    assert "run: 100%" in terminal.getvalue() and "tokens/s=" in terminal.getvalue()


def test_resume_after_kill_continues_exactly(tiny_llama, text_file, tmp_path) -> None:
    straight, killed = BatchRecorder(), BatchRecorder()
    options = tiny_options(tiny_llama, text_file, tmp_path / "straight", max_steps=8, save_steps=2)
    trainer = train_mntp(options, callbacks=[straight]).trainer
    expected_weights = lora_weights(trainer.model)

    options = tiny_options(tiny_llama, text_file, tmp_path / "killed", max_steps=8, save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train_mntp(options, callbacks=[killed, Interrupt(step=5)])  # step 5 logged, checkpoint-4 the latest
    assert [r["step"] for r in read_log(tmp_path / "killed")] == [1, 2, 3, 4, 5]
    resumed = BatchRecorder()
    result = train_mntp(options, resume=True, callbacks=[resumed])
    trainer = result.trainer

    assert result.global_step == 8
    assert sorted(resumed.batches) == [5, 6, 7, 8]  # nothing lost, nothing repeated
    assert {**{s: killed.batches[s] for s in (1, 2, 3, 4)}, **resumed.batches} == straight.batches
    losses = {
        name: [(r["step"], r["loss"]) for r in read_log(tmp_path / name) if "loss" in r]
        for name in ("straight", "killed")
    }
    assert [s for s, _ in losses["killed"]] == list(range(1, 9))  # the killed run's step 5 was dropped
    # TensorBoard too: one folder for both attempts, and the resumed writer purges the killed run's step 5.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "killed" / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, 9))
    for (_, a), (_, b) in zip(losses["killed"], losses["straight"], strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    for name, weight in lora_weights(trainer.model).items():
        torch.testing.assert_close(weight, expected_weights[name], rtol=1e-4, atol=1e-6)


def test_recipe_and_cli(tiny_llama, text_file, tmp_path) -> None:
    """`lm2vec train mntp --recipe R` is `lm2vec run R --only mntp`: RUN/mntp, recorded in RUN/pipeline.json."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'[mntp]\nmodel = "{tiny_llama}"\ndata = "{text_file}"\nmax_seq_length = 16\nper_device_batch_size = 2\n'
        f'max_steps = 50\nmask_token = "{MASK}"\nmask_strategy = "all"\neval_on_start = false\n'
    )
    runner = CliRunner()
    out = tmp_path / "cli-run"
    arguments = ["train", "mntp", "--recipe", str(recipe), "--set", "max_steps=2", "--out", str(out)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "step 2" in result.output and (out / "mntp" / "adapter" / "adapter_config.json").is_file()
    saved = json.loads((out / "mntp" / "mntp_config.json").read_text())
    assert saved["max_steps"] == 2 and saved["mask_strategy"] == "all" and saved["lora_r"] == 16
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    assert stages["mntp"]["status"] == "done" and stages["mntp"]["summary"]["steps"] == 2
    assert stages["export"]["status"] == "pending"  # --only: nothing but the stage

    result = runner.invoke(app, [*arguments[:4], "--set", "mask_prob=oops"])
    assert result.exit_code == 2 and "not a number" in result.output
    result = runner.invoke(app, arguments)  # done: skipped
    assert result.exit_code == 0 and "done earlier" in result.output and "step 2" in result.output
    result = runner.invoke(app, [*arguments[:4], "--set", "mntp.max_steps=3", "--out", str(out)])
    assert result.exit_code == 2 and "--redo mntp" in result.output
    result = runner.invoke(app, [*arguments[:4], "--set", "mntp.max_steps=3", "--out", str(out), "--redo"])
    assert result.exit_code == 0 and "step 3" in result.output


def test_cli_without_a_recipe(tiny_llama, text_file, tmp_path) -> None:
    """Without --recipe the options come from --set alone (section.key=value, or key=value for short)."""
    out = tmp_path / "alone"
    arguments = ["train", "mntp", "--set", f"mntp.model={tiny_llama}", "--set", f"data={text_file}", "--out", str(out)]
    arguments += ["--set", "max_seq_length=16", "--set", "max_steps=2", "--set", f"mask_token={MASK}"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "step 2" in result.output and (out / "adapter" / "adapter_config.json").is_file()
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2 and "--resume" in result.output
    result = CliRunner().invoke(app, [*arguments, "--set", "simcse.max_steps=2"])
    assert result.exit_code == 2 and "only mntp.KEY=VALUE applies" in result.output
