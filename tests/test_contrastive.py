"""Contrastive training (SimCSE, supervised): dropout, encode-time pooling, loss, GradCache, batching, runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

from lm2vec import LM2Vec
from lm2vec.data.formats import read_supervised_pairs, sts_supervised_pairs
from lm2vec.data.readers import load_texts
from lm2vec.recipe import build_config
from lm2vec.training.adapters import add_lora
from lm2vec.training.callbacks import LOG_NAME, PLOT_NAME
from lm2vec.training.contrastive import (
    ADAPTER_DIR,
    ContrastiveCollator,
    ContrastiveOptions,
    GroupedBatchSampler,
    SimCSEOptions,
    SupervisedOptions,
    batch_loss,
    crop_pairs,
    embed,
    mined_records,
    mini_batches,
    set_attention_dropout,
    train_simcse,
    train_supervised,
)
from lm2vec.training.losses import contrastive_loss, cosent, info_nce
from lm2vec.training.results import claim_training_folder

SENTENCES = [
    "the cat sat on the mat .",
    "a dog ran fast",
    "music",
    "the big red car is on the road in the city",
    "a man plays guitar",
    "the woman plays piano and the child sat",
    "a small blue house",
    "the river is big",
]


def tiny_encoder(
    folder, dropout: float = 0.0, lora: bool = True, seed: int = 0, lora_dropout: float = 0.0, **kwargs
) -> LM2Vec:
    encoder = LM2Vec.from_pretrained(folder, device="cpu", max_length=64, **kwargs)
    set_attention_dropout(encoder.model, dropout)
    if lora:
        torch.manual_seed(seed)
        encoder.model = add_lora(encoder.model, ContrastiveOptions(lora_r=4, lora_alpha=8, lora_dropout=lora_dropout))
        for name, parameter in encoder.model.named_parameters():
            if "lora_B" in name:  # non-zero, so the adapter changes the output and every LoRA weight has a gradient
                torch.nn.init.normal_(parameter, std=0.2)
    return encoder


def embeddings_of(encoder: LM2Vec, inputs, train: bool) -> torch.Tensor:
    encoder.model.train(train)
    features = encoder.collate(encoder.tokenize(inputs))
    return embed(encoder, encoder.model, features)


def test_dropout_makes_train_passes_differ_and_eval_passes_identical(tiny_llama) -> None:
    encoder = tiny_encoder(tiny_llama, dropout=0.3, lora=False)
    assert encoder.model.config.attention_dropout == 0.3
    with torch.no_grad():
        first, second = embeddings_of(encoder, SENTENCES, True), embeddings_of(encoder, SENTENCES, True)
        assert (first - second).abs().max() > 1e-3
        first, second = embeddings_of(encoder, SENTENCES, False), embeddings_of(encoder, SENTENCES, False)
        assert torch.equal(first, second)


def test_dropout_zero_by_default_and_missing_attribute_refused(tiny_llama) -> None:
    encoder = tiny_encoder(tiny_llama, dropout=0.0, lora=False)
    with torch.no_grad():
        assert torch.equal(embeddings_of(encoder, SENTENCES, True), embeddings_of(encoder, SENTENCES, True))
    with pytest.raises(ValueError, match="attention_dropout"):
        set_attention_dropout(_NoDropout(), 0.3)


class _NoDropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {})()
        self.layer = torch.nn.Linear(2, 2)


@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last_token"])
def test_training_embedding_equals_encode_whatever_else_is_in_the_batch(tiny_llama, pooling) -> None:
    """The bug the official trainer has (pooling over padding) cannot happen: train mode, dropout off, any batch
    and any sub-batching give a sentence exactly its encode() embedding, instructions excluded as at encode."""
    encoder = tiny_encoder(tiny_llama, pooling=pooling)
    record = {"query": "a man plays guitar", "positive": "music", "instruction": "retrieve similar text"}
    expected_query = encoder.encode([("retrieve similar text", "a man plays guitar")], convert_to="torch")[0]
    expected = encoder.encode(SENTENCES, convert_to="torch")
    others = [
        {"query": s, "positive": s[::-1], "negatives": ["the the the the the the the the the"]} for s in SENTENCES
    ]
    collator = ContrastiveCollator(encoder, num_hard_negatives=1)
    encoder.model.train()
    with torch.no_grad():
        for batch, size in (([record, *others], 0), ([*others[:3], record], 3), ([record], 0)):
            features = collator(batch)
            parts = mini_batches(features, size)
            rows = torch.zeros(features["input_ids"].shape[0], 32)
            for index, part in parts:
                rows[index] = embed(encoder, encoder.model, part)
            position = batch.index(record)
            torch.testing.assert_close(rows[position], expected_query, atol=1e-5, rtol=1e-5)
        simcse = ContrastiveCollator(encoder)(SENTENCES[::-1])
        rows = embed(encoder, encoder.model, simcse)
        torch.testing.assert_close(rows[: len(SENTENCES)], expected.flip(0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rows[len(SENTENCES) :], expected.flip(0), atol=1e-5, rtol=1e-5)


def test_collator_puts_instructions_on_queries_or_both_sides(tiny_llama) -> None:
    encoder = tiny_encoder(tiny_llama, lora=False)
    records = [
        {
            "query": "a cat",
            "positive": "the cat",
            "negatives": ["a car", "a road"],
            "instruction": "find",
            "dataset": "x",
        },
        {"query": "a dog", "positive": "the dog", "negatives": [], "instruction": "find", "dataset": "sym"},
    ]
    features = ContrastiveCollator(encoder, num_hard_negatives=1, symmetric_datasets=("sym",))(records)
    assert int(features["n_queries"]) == 2
    # rows: 2 queries, 2 positives, 1 hard negative (the second record has none)
    assert features["input_ids"].shape[0] == 5
    instruction_tokens = (features["attention_mask"].bool() & ~features["pool_mask"]).sum(1).tolist()
    # "find : " is two tokens plus BOS
    assert instruction_tokens == [3, 3, 0, 3, 0]


def test_info_nce_matches_the_formula() -> None:
    torch.manual_seed(0)
    queries, documents = torch.randn(4, 8), torch.randn(6, 8)
    scores = F.cosine_similarity(queries[:, None], documents[None], dim=-1) / 0.05
    expected = -torch.log_softmax(scores, dim=1)[torch.arange(4), torch.arange(4)].mean()
    torch.testing.assert_close(contrastive_loss(queries, documents, 0.05), expected)
    torch.testing.assert_close(info_nce(queries, documents, torch.arange(4), 0.05), expected)


def test_matryoshka_loss_is_the_sum_over_renormalised_prefixes() -> None:
    torch.manual_seed(0)
    queries, documents = torch.randn(3, 8), torch.randn(5, 8)

    def by_hand(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        cosines = (q @ d.T) / (q.norm(dim=1, keepdim=True) * d.norm(dim=1)[None])
        logits = cosines / 0.05
        return (torch.logsumexp(logits, dim=1) - logits[torch.arange(3), torch.arange(3)]).mean()

    expected = by_hand(queries, documents) + by_hand(queries[:, :2], documents[:, :2])
    expected = expected + by_hand(queries[:, :4], documents[:, :4])
    got = contrastive_loss(queries, documents, 0.05, matryoshka_dims=[4, 2, 4])
    torch.testing.assert_close(got, expected)
    assert not torch.isclose(got, by_hand(queries, documents))


def test_cosent_by_hand() -> None:
    # pair 0: cosine 1 (same direction), pair 1: cosine 0 (orthogonal), pair 2: cosine -1
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    documents = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    scores = torch.tensor([1.0, 4.0, 0.0])  # so pair 1 should be closest, then 0, then 2: pair 1 is out of order
    # pairs (i above j): (1, 0): exp((1 - 0) / t); (1, 2): exp((-1 - 0) / t); (0, 2): exp((-1 - 1) / t)
    expected = math.log(1 + math.exp(20) + math.exp(-20) + math.exp(-40))
    assert float(cosent(queries, documents, scores, 0.05)) == pytest.approx(expected, rel=1e-6)
    # in the right order the loss is near zero; equal scores are never compared
    assert float(cosent(queries, documents, torch.tensor([5.0, 3.0, 1.0]), 0.05)) < 1e-8
    assert float(cosent(queries, documents, torch.tensor([2.0, 2.0, 2.0]), 0.05)) == 0.0


def test_masked_info_nce_trains_the_marked_queries_against_every_document() -> None:
    torch.manual_seed(0)
    queries, documents = torch.randn(4, 8), torch.randn(6, 8)
    mask = torch.tensor([True, False, True, False])
    scores = F.cosine_similarity(queries[:, None], documents[None], dim=-1) / 0.05
    expected = -torch.log_softmax(scores, dim=1)[[0, 2], [0, 2]].mean()
    torch.testing.assert_close(contrastive_loss(queries, documents, 0.05, query_mask=mask), expected)
    none = contrastive_loss(queries.requires_grad_(), documents, 0.05, query_mask=torch.zeros(4, dtype=torch.bool))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_scored_pairs_train_with_cosent_and_only_the_good_ones_as_positives(tiny_llama, tmp_path) -> None:
    scored = [(SENTENCES[i], SENTENCES[(i + 1) % 8], float(i % 6)) for i in range(8)]
    (tmp_path / "sts.tsv").write_text("".join(f"{a}\t{b}\t{score}\n" for a, b, score in scored))
    records = sts_supervised_pairs(tmp_path / "sts.tsv", min_score=4.0, instruction="similar", scored=True)
    assert [(r["query"], r["positive"], r["score"]) for r in records] == scored
    encoder = tiny_encoder(tiny_llama)
    features = ContrastiveCollator(encoder, min_positive_score=4.0)(records)
    assert features["positive_queries"].tolist() == [score >= 4 for *_, score in scored]
    options = SupervisedOptions(cosent_weight=0.5)
    encoder.model.eval()
    with torch.no_grad():
        got = batch_loss(encoder, encoder.model, features, options)
        rows = embed(encoder, encoder.model, features)
    queries, documents = rows[:8], rows[8:]
    expected = contrastive_loss(queries, documents, query_mask=features["positive_queries"])
    expected = expected + 0.5 * cosent(queries, documents, torch.tensor([s for *_, s in scored]))
    torch.testing.assert_close(got, expected)
    # without the weight the scores are not read: only the good pairs, each a positive
    assert len(sts_supervised_pairs(tmp_path / "sts.tsv", min_score=4.0, instruction="similar")) == 2
    run = SupervisedOptions(
        model=str(tiny_llama),
        data=str(tmp_path / "sts.tsv"),
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_batch_size=4,
        warmup_steps=0,
        max_length=32,
        export=False,
        cosent_weight=1.0,
    )
    assert train_supervised(run).global_step == 2  # 8 scored pairs: two batches of 4
    with pytest.raises(ValueError, match="cosent_weight must be >= 0, got -1"):
        SupervisedOptions(cosent_weight=-1)


def _lora_gradients(encoder: LM2Vec) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in encoder.model.named_parameters() if p.requires_grad}


def _loss_and_gradients(encoder, features, options) -> tuple[float, dict[str, torch.Tensor]]:
    encoder.model.zero_grad(set_to_none=True)
    encoder.model.train()
    loss = batch_loss(encoder, encoder.model, features, options)
    loss.backward()
    return float(loss.detach()), _lora_gradients(encoder)


def test_cached_loss_gives_the_plain_gradients(tiny_llama) -> None:
    encoder = tiny_encoder(tiny_llama)
    records = [
        {"query": s, "positive": s[::-1] or "a", "negatives": [SENTENCES[i - 1]]} for i, s in enumerate(SENTENCES)
    ]
    features = ContrastiveCollator(encoder, num_hard_negatives=1)(records)
    plain_loss, plain = _loss_and_gradients(encoder, features, ContrastiveOptions())
    cached_loss, cached = _loss_and_gradients(encoder, features, ContrastiveOptions(mini_batch_size=5, cached=True))
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain.keys() == cached.keys() and len(plain) > 0
    for name in plain:
        assert plain[name].abs().max() > 0, name
        torch.testing.assert_close(cached[name], plain[name], atol=1e-6, rtol=1e-4)


def test_cached_loss_replays_the_dropout_masks(tiny_llama) -> None:
    """With attention and LoRA dropout on, the re-run of each sub-batch sees the masks of its first pass (saved
    random state)."""
    encoder = tiny_encoder(tiny_llama, dropout=0.3, lora_dropout=0.1)
    features = ContrastiveCollator(encoder)(SENTENCES)
    torch.manual_seed(7)
    plain_loss, plain = _loss_and_gradients(encoder, features, ContrastiveOptions(mini_batch_size=4))
    torch.manual_seed(7)
    cached_loss, cached = _loss_and_gradients(encoder, features, ContrastiveOptions(mini_batch_size=4, cached=True))
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], atol=1e-6, rtol=1e-4)


def test_grouped_batch_sampler_draws_each_global_batch_from_one_dataset() -> None:
    groups = [range(0, 10), range(10, 17), range(17, 20)]
    sampler = GroupedBatchSampler(groups, batch_size=2, world_size=2, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 * (2 + 1)  # 10 // 4 + 7 // 4 global batches; 3 rows fill none
    for step in range(0, len(batches), 2):
        rows = batches[step] + batches[step + 1]
        assert len(rows) == 4 and len(set(rows)) == 4
        assert len({next(g for g, r in enumerate(groups) if i in r) for i in rows}) == 1
    assert batches == list(sampler)  # same epoch, same order
    sampler.set_epoch(1)
    assert batches != list(sampler)
    # The records the first k global batches hold: what mining needs for a run of k steps.
    assert sampler.records_drawn(2) == sorted(batches[0] + batches[1] + batches[2] + batches[3])
    assert sampler.records_drawn(3) == sampler.records_drawn(99) == list(range(20))  # a whole epoch: every record
    with pytest.raises(ValueError, match="global batch"):
        GroupedBatchSampler([range(3)], batch_size=4)


def test_readers(tmp_path) -> None:
    (tmp_path / "s.txt").write_text("one sentence\n\n two \n")
    (tmp_path / "s.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    assert load_texts(tmp_path / "s.txt", "sentences") == ["one sentence", "two"]
    assert load_texts(tmp_path / "s.jsonl", "sentences") == ["a", "b"]
    (tmp_path / "p.jsonl").write_text('{"query": "q", "positive": "p", "negatives": "n", "dataset": "d"}\n')
    assert read_supervised_pairs(tmp_path / "p.jsonl")[0] == {
        "query": "q",
        "positive": "p",
        "negatives": ["n"],
        "instruction": "",
        "dataset": "d",
        "symmetric": False,
    }
    (tmp_path / "bad.jsonl").write_text('{"query": "q"}\n')
    with pytest.raises(ValueError, match="positive"):
        read_supervised_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="cached"):
        ContrastiveOptions(cached=True)


def test_the_training_packages_export_each_function_under_its_own_name() -> None:
    """`lm2vec.training.contrastive` once re-exported the readers' functions as load_*: one reader, two names."""
    from lm2vec.training import contrastive, mntp

    for package in (contrastive, mntp):
        for name in package.__all__:
            exported = getattr(package, name)
            assert getattr(exported, "__name__", name) == name, f"{package.__name__}.{name} is {exported.__name__}"


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_simcse_run_exports_resumes_and_loads_everywhere(tiny_llama, tmp_path, capfd) -> None:
    from tests.test_export import save_random_lora

    mntp = tmp_path / "mntp"
    save_random_lora(tiny_llama, mntp, seed=1)
    (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES * 4) + "\n")
    run = tmp_path / "run"
    recipe = {"simcse": {"model": str(tiny_llama), "adapters": [str(mntp)], "data": str(tmp_path / "sentences.txt")}}
    overrides = [
        "output_dir=" + str(run),
        "max_steps=3",
        "per_device_batch_size=8",
        "save_steps=2",
        "logging_steps=1",
        "learning_rate=1e-3",
        "max_length=32",
        "mini_batch_size=6",
    ]
    options = build_config(SimCSEOptions, "simcse", recipe, overrides)
    assert options.dropout == 0.3 and options.temperature == 0.05
    capfd.readouterr()
    encoder_dir = train_simcse(options).encoder_dir
    console = "".join(capfd.readouterr())  # not a terminal: no progress bar, no printed Trainer log dicts
    assert "\r" not in console and "'loss'" not in console and "it/s" not in console

    assert (run / ADAPTER_DIR / "adapter_config.json").is_file()
    assert (run / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert (run / PLOT_NAME).is_file()
    assert list(run.rglob("events.out.tfevents*"))
    losses = [r["loss"] for r in map(json.loads, (run / LOG_NAME).read_text().splitlines()) if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))

    trained = LM2Vec.from_pretrained(encoder_dir, device="cpu")
    expected = trained.encode(SENTENCES)
    assert json.loads((encoder_dir / "config.json").read_text()).get("attention_dropout", 0.0) == 0.0
    stacked = LM2Vec.from_pretrained(tiny_llama, adapters=[mntp, run / ADAPTER_DIR], device="cpu")
    assert _cosine(stacked.encode(SENTENCES), expected).min() > 0.9999
    merged_mntp_only = LM2Vec.from_pretrained(tiny_llama, adapters=[mntp], device="cpu")
    assert _cosine(merged_mntp_only.encode(SENTENCES), expected).min() < 0.9999  # training changed the weights
    plain = SentenceTransformer(str(encoder_dir), device="cpu")
    assert _cosine(plain.encode(SENTENCES), expected).min() > 0.9999

    with pytest.raises(FileExistsError):
        train_simcse(options)
    options.max_steps = 4
    train_simcse(options, resume=True)
    steps = [r["step"] for r in map(json.loads, (run / LOG_NAME).read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3, 4]  # continued from checkpoint-3, the last one saved


def test_supervised_run(tiny_llama, tmp_path) -> None:
    records = []
    for i, s in enumerate(SENTENCES * 2):
        records.append(
            {
                "query": s,
                "positive": s + " .",
                "negatives": [SENTENCES[i % 8 - 1]],
                "instruction": "retrieve similar text",
                "dataset": "a" if i % 2 else "b",
            }
        )
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    options = SupervisedOptions(
        model=str(tiny_llama),
        data=str(tmp_path / "pairs.jsonl"),
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_batch_size=4,
        warmup_steps=0,
        max_length=32,
        mini_batch_size=4,
        cached=True,
        symmetric_datasets=["a"],
        save_steps=10,
        matryoshka_dims=[16, 8],
    )
    encoder_dir = train_supervised(options).encoder_dir
    trained = LM2Vec.from_pretrained(encoder_dir, device="cpu")
    assert trained.encode(("retrieve similar text", "a cat")).shape == (32,)
    assert trained.config.matryoshka_dims == [8, 16]  # recorded in the export: encode(dimensions=8) accepts it
    assert trained.encode("a cat", dimensions=8).shape == (8,)
    options.matryoshka_dims, options.output_dir = [64], str(tmp_path / "refused")
    with pytest.raises(ValueError, match=r"matryoshka_dims \[64\] are larger than the model's 32"):
        train_supervised(options)
    assert json.loads((tmp_path / "run" / "contrastive_options.json").read_text())["symmetric_datasets"] == ["a"]


def test_sentence_similarity_pairs_train_without_export(tiny_llama, tmp_path) -> None:
    scored = [(SENTENCES[i], SENTENCES[(i + 1) % 8], 4.0 + (i % 2)) for i in range(8)] + [("a cat", "the road", 1.0)]
    (tmp_path / "sts.tsv").write_text("".join(f"{a}\t{b}\t{score}\n" for a, b, score in scored))
    records = sts_supervised_pairs(tmp_path / "sts.tsv", min_score=4.0, instruction="find similar")
    assert [(r["query"], r["positive"]) for r in records] == [(a, b) for a, b, _ in scored[:8]]
    assert all(r["symmetric"] and r["instruction"] == "find similar" for r in records)
    collated = ContrastiveCollator(tiny_encoder(tiny_llama))(records[:2])
    assert bool(collated["pool_mask"][:, 1].any()) is False  # every row starts with the instruction: not pooled
    with pytest.raises(ValueError, match="no pair is scored 5.5"):
        sts_supervised_pairs(tmp_path / "sts.tsv", min_score=5.5, instruction="x")

    options = SupervisedOptions(
        model=str(tiny_llama),
        data=str(tmp_path / "sts.tsv"),
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_batch_size=4,
        warmup_steps=0,
        max_length=32,
        export=False,
    )
    result = train_supervised(options)
    assert result.encoder_dir is None and not (tmp_path / "run" / "encoder").exists()
    assert (result.adapter_dir / "adapter_config.json").is_file() and result.global_step == 1


def test_crop_pairs_are_spans_of_their_paragraph_in_the_ratio() -> None:
    paragraphs = [" ".join(f"w{p}_{i}" for i in range(40)) for p in range(30)] + ["too short to crop"]
    pairs = crop_pairs(paragraphs, [0.25, 0.5], seed=3)
    assert len(pairs) == 30  # the short paragraph is skipped
    assert pairs == crop_pairs(paragraphs, [0.25, 0.5], seed=3)  # drawn once per seed: resumes see the same pairs
    assert pairs != crop_pairs(paragraphs, [0.25, 0.5], seed=4)
    for number, pair in enumerate(pairs):
        words = paragraphs[number].split()
        for side in (pair["query"], pair["positive"]):
            span = side.split()
            assert 10 <= len(span) <= 20
            start = words.index(span[0])
            assert words[start : start + len(span)] == span  # a contiguous span, whole words
    assert any(pair["query"] != pair["positive"] for pair in pairs)
    with pytest.raises(ValueError, match="words"):
        crop_pairs(["two words"], [0.1, 0.5])


def test_asymmetric_crops_are_a_short_query_and_a_long_positive() -> None:
    paragraphs = [" ".join(f"w{p}_{i}" for i in range(40)) for p in range(30)]
    pairs = crop_pairs(paragraphs, [0.1, 0.2], seed=3, positive_ratio=[0.75, 1.0])
    for number, pair in enumerate(pairs):
        words = paragraphs[number].split()
        query, positive = pair["query"].split(), pair["positive"].split()
        assert 4 <= len(query) <= 8 and 30 <= len(positive) <= 40
        for span in (query, positive):
            start = words.index(span[0])
            assert words[start : start + len(span)] == span
    assert crop_pairs(paragraphs, [0.1, 0.2], seed=3, positive_ratio=[0.1, 0.2]) == crop_pairs(
        paragraphs, [0.1, 0.2], seed=3
    )  # the default positive ratio is the query's
    with pytest.raises(ValueError, match="positive_crop_ratio"):
        SimCSEOptions(positive_crop_ratio=[0.5])


def test_simcse_crops_train_on_paragraph_pairs(tiny_llama, tmp_path) -> None:
    with pytest.raises(ValueError, match="positives must be one of"):
        SimCSEOptions(positives="views")
    with pytest.raises(ValueError, match="crop_ratio"):
        SimCSEOptions(crop_ratio=[0.6, 0.2])
    paragraphs = [" ".join(SENTENCES[i : i + 3]) for i in range(len(SENTENCES) - 2)] * 3
    (tmp_path / "paragraphs.txt").write_text("\n\n".join(paragraphs) + "\n")  # paragraphs: blank-line blocks
    options = SimCSEOptions(
        model=str(tiny_llama),
        data=str(tmp_path / "paragraphs.txt"),
        output_dir=str(tmp_path / "run"),
        positives="crops",
        max_steps=2,
        per_device_batch_size=4,
        max_length=32,
        export=False,
    )
    result = train_simcse(options)
    assert result.global_step == 2 and (result.adapter_dir / "adapter_config.json").is_file()
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / LOG_NAME).read_text().splitlines()) if "loss" in r]
    assert losses and all(np.isfinite(losses))


def test_supervised_mines_its_negatives_with_the_starting_encoder_once(tiny_llama, tmp_path, monkeypatch) -> None:
    from lm2vec.training import mining
    from lm2vec.training.mining import MiningOptions, mine_hard_negatives

    with pytest.raises(ValueError, match="mine_negatives"):
        SupervisedOptions(mine_negatives=-1)
    records = [
        {"query": s, "positive": s + " .", "negatives": [], "instruction": "", "dataset": "d"} for s in SENTENCES
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    options = SupervisedOptions(
        model=str(tiny_llama),
        data=str(tmp_path / "pairs.jsonl"),
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_batch_size=4,
        warmup_steps=0,
        max_length=32,
        mine_negatives=2,
        num_hard_negatives=2,
        export=False,
    )
    mined_queries = []
    real_mine = mining.mine_hard_negatives
    monkeypatch.setattr(
        mining, "mine_hard_negatives", lambda e, r, *a: mined_queries.append(len(r)) or real_mine(e, r, *a)
    )
    train_supervised(options)
    # One step of 4 draws 4 of the 8 pairs: only those are mined, each among every pair's positive, so each gets the
    # negatives that mining all 8 gives it.
    drawn = GroupedBatchSampler([range(len(records))], 4, seed=options.seed).records_drawn(1)
    assert len(drawn) == 4 and mined_queries == [4]
    mined = read_supervised_pairs(tmp_path / "run" / "mined.jsonl")
    starting = LM2Vec.from_pretrained(tiny_llama, device="cpu", max_length=32)
    expected = mine_hard_negatives(
        starting,
        read_supervised_pairs(tmp_path / "pairs.jsonl"),
        [r["positive"] for r in records],
        MiningOptions(num_negatives=2),
    )
    assert [r["query"] for r in mined] == [records[i]["query"] for i in drawn]
    assert [r["negatives"] for r in mined] == [expected[i]["negatives"] for i in drawn]
    assert any(r["negatives"] for r in mined)
    for record in mined:  # never the pair's own positive
        assert record["positive"] not in record["negatives"] and len(record["negatives"]) <= 2
    # A resumed run reads the negatives it mined instead of mining again with a different model.
    (tmp_path / "run" / "mined.jsonl").write_text(
        "".join(json.dumps({**r, "negatives": ["x y"]}) + "\n" for r in mined)
    )
    train_supervised(options, resume=True)
    assert mined_queries == [4]
    assert all(r["negatives"] == ["x y"] for r in read_supervised_pairs(tmp_path / "run" / "mined.jsonl"))
    # More steps draw every pair: those the file lacks are mined, with the starting encoder again.
    options.max_steps = 2
    train_supervised(options, resume=True)
    assert mined_queries == [4, 8]
    assert [r["negatives"] for r in read_supervised_pairs(tmp_path / "run" / "mined.jsonl")] == [
        r["negatives"] for r in expected
    ]


def test_a_drawn_pool_mines_among_the_drawn_pairs_positives_only(tiny_llama, tmp_path) -> None:
    """`mining_pool = "drawn"`: the negatives come from the positives of the pairs the batches hold, a pass over
    fewer texts; a mined file from other mining settings is mined again, not reused."""
    from lm2vec.training.mining import MiningOptions, mine_hard_negatives

    with pytest.raises(ValueError, match="mining_pool"):
        SupervisedOptions(mining_pool="all")
    records = [
        {"query": s, "positive": s + " .", "negatives": [], "instruction": "", "dataset": "d"} for s in SENTENCES
    ]
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu", max_length=32)
    options = SupervisedOptions(output_dir=str(tmp_path / "run"), mine_negatives=2, mining_pool="drawn")
    claim_training_folder(options)
    drawn = [0, 2, 3, 5, 6]
    mined = mined_records(encoder, records, options, drawn=drawn)
    own = [records[i] for i in drawn]
    expected = mine_hard_negatives(encoder, own, [r["positive"] for r in own], MiningOptions(num_negatives=2))
    assert [r["negatives"] for r in (mined[i] for i in drawn)] == [r["negatives"] for r in expected]
    drawn_positives = {r["positive"] for r in own}
    assert any(mined[i]["negatives"] for i in drawn)
    assert all(set(mined[i]["negatives"]) <= drawn_positives - {mined[i]["positive"]} for i in drawn)
    assert all(mined[i] is records[i] for i in range(len(records)) if i not in drawn)
    # The same settings reuse the file; other settings (here the pool) mine again.
    written = tmp_path / "run" / "mined.jsonl"
    written.write_text("".join(json.dumps({**r, "negatives": ["x y"]}) + "\n" for r in read_supervised_pairs(written)))
    assert all(mined_records(encoder, records, options, drawn=drawn)[i]["negatives"] == ["x y"] for i in drawn)
    options.mining_pool = "source"
    every = mine_hard_negatives(encoder, own, [r["positive"] for r in records], MiningOptions(num_negatives=2))
    again = mined_records(encoder, records, options, drawn=drawn)
    assert [again[i]["negatives"] for i in drawn] == [r["negatives"] for r in every]
