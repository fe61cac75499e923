"""lm2vec mine: hard negatives never include the positive, its near-duplicates or anything scored close to it."""

from __future__ import annotations

import io
import json
import logging
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.training.mining import MiningOptions, fold, mine_hard_negatives, select_negatives

CORPUS = [
    "a man plays guitar",
    "A  MAN plays guitar",  # the positive, cased and spaced differently
    "the cat sat on the mat .",
    "a dog ran fast",
    "the big red car is on the road",
    "piano music",
    "a small blue house",
    "the river is big",
    "the child plays piano",
]


def test_select_negatives_skips_excluded_and_everything_within_the_margins() -> None:
    scores = np.array([[0.9, 0.95, 0.88, 0.8, 0.7, 0.5]])
    options = MiningOptions(num_negatives=2, relative_margin=0.05)  # limit: 0.9 * 0.95 = 0.855
    assert select_negatives(scores, np.array([0.9]), [{0}], options) == [[3, 4]]
    options = MiningOptions(num_negatives=5, margin=0.15, relative_margin=0.0)  # limit: 0.75
    assert select_negatives(scores, np.array([0.9]), [{0}], options) == [[4, 5]]  # fewer than asked
    with pytest.raises(ValueError, match="relative_margin"):
        MiningOptions(relative_margin=1.0)


def test_lm2vec_mine_adds_negatives_that_are_not_the_positive(tiny_llama, tmp_path) -> None:
    pairs = [
        {"query": "who plays guitar", "positive": "a man plays guitar", "instruction": "find the answer"},
        {"query": "a dog ran", "positive": "a dog ran fast", "negatives": ["the river is big"]},
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    command = [
        "mine",
        "-m",
        str(tiny_llama),
        "-p",
        str(tmp_path / "pairs.jsonl"),
        "-o",
        str(tmp_path / "mined.jsonl"),
        "--corpus",
        str(tmp_path / "corpus.txt"),
        "--num-negatives",
        "3",
        "--relative-margin",
        "0.02",
    ]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    mined = [json.loads(line) for line in (tmp_path / "mined.jsonl").read_text().splitlines()]
    assert mined[1]["negatives"][0] == "the river is big"  # the pair's own negative stays first
    assert mined[1]["negatives"].count("the river is big") == 1
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    for pair, record in zip(pairs, mined, strict=True):
        new = record["negatives"][len(pair.get("negatives", [])) :]
        assert len(new) == 3
        assert all(fold(n) not in (fold(pair["positive"]), fold(pair["query"])) for n in new)
        query = (pair["instruction"], pair["query"]) if "instruction" in pair else pair["query"]
        q, positive = encoder.encode([query], normalize=True)[0], encoder.encode(pair["positive"], normalize=True)
        limit = (q @ positive) * 0.98
        assert all(q @ encoder.encode(n, normalize=True) <= limit + 1e-6 for n in new)
        assert record["query"] == pair["query"] and record["positive"] == pair["positive"]

    again = CliRunner().invoke(app, command)
    assert again.exit_code == 2 and "exists" in again.output
    missing = CliRunner().invoke(
        app, ["mine", "-m", "no-such-model", "-p", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "x.jsonl")]
    )
    assert missing.exit_code == 2 and "none.jsonl is not a file" in missing.output


def test_positives_in_the_corpus_are_encoded_once_and_score_as_if_encoded_alone(tiny_llama) -> None:
    from lm2vec.training.mining import mine_hard_negatives

    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    records = [
        {"query": "who plays guitar", "positive": CORPUS[0], "negatives": [], "instruction": "find it"},
        {"query": "a dog", "positive": CORPUS[3], "negatives": [], "instruction": ""},
        {"query": "blue", "positive": "a blue house by the river", "negatives": [], "instruction": ""},  # not in it
    ]
    encoded: list[str] = []
    original = encoder.encode

    def counting(texts, **kwargs):
        encoded.extend(texts)
        return original(texts, **kwargs)

    encoder.encode = counting
    options = MiningOptions(num_negatives=2, relative_margin=0.0)
    mined = mine_hard_negatives(encoder, records, CORPUS, options)
    assert len(encoded) == len(records) + len(CORPUS) + 1  # queries, the corpus, the one positive not in it
    # The same negatives as scoring each positive from a pass of its own: the limit is the positive's own score.
    for record, result in zip(records, mined, strict=True):
        query = (record["instruction"], record["query"]) if record["instruction"] else record["query"]
        q = original([query], normalize=True)[0]
        limit = q @ original(record["positive"], normalize=True)
        scores = {text: q @ original(text, normalize=True) for text in CORPUS}
        allowed = [t for t in sorted(CORPUS, key=scores.get, reverse=True) if fold(t) != fold(record["positive"])]
        allowed = [t for t in allowed if scores[t] <= limit + 1e-6 and fold(t) != fold(record["query"])]
        assert result["negatives"] == allowed[:2]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stderr", [io.StringIO, Terminal])
def test_mining_shows_its_encoding_bar_on_a_terminal_only(tiny_llama, stderr, monkeypatch, caplog) -> None:
    """Mining a dump's pairs takes long enough to want a bar, but a log file or CI gets no carriage-return redraws
    (a pipeline stage sets logging to INFO, which `encode()` alone would take as a reason to draw)."""
    monkeypatch.setattr(sys, "stderr", stderr())
    caplog.set_level(logging.INFO, logger="lm2vec")
    records = [{"query": "a dog ran", "positive": "a dog ran fast", "instruction": "", "negatives": []}]
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    mine_hard_negatives(encoder, records, CORPUS, MiningOptions(num_negatives=1, batch_size=2))
    assert ("Encoding" in sys.stderr.getvalue()) == (stderr is Terminal)
