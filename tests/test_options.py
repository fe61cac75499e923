"""Every options dataclass validates one way (`lm2vec.options.Options`): all its failed checks in one error."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import lm2vec
from lm2vec.options import Options, OptionValueError

SOURCE = Path(lm2vec.__file__).parent

# Two values each options class refuses (for a subclass, one of its own checks and one inherited); a new options
# class must add its own here.
TWO_BAD_VALUES = {
    "TrainingOptions": {"max_steps": 0, "lora_dropout": float("nan")},
    "MNTPConfig": {"max_steps": 0, "mask_strategy": "random"},
    "ContrastiveOptions": {"learning_rate": 0.0, "pooling": "max"},
    "SimCSEOptions": {"temperature": 0.0, "positives": "pairs"},
    "SupervisedOptions": {"lora_r": 0, "mining_relative_margin": float("nan")},
    "MiningOptions": {"num_negatives": 0, "relative_margin": float("nan")},
    "EvalOptions": {"limit": 0, "batch_size": 0},
    "RunOptions": {"supervised_after": "data", "max_length": 0},
    "CorpusConfig": {"validation_fraction": float("nan"), "workers": -1},
    "WikiConfig": {"near_duplicate_threshold": 2.0, "shard_size": 0},
    "TextConfig": {"max_articles": 0, "dedup_capacity": 0},
    "ServeOptions": {"max_wait_ms": float("nan"), "api_key": " "},
    "WriteOptions": {"batch_size": 0, "exact_limit": 0},
    "ChunkingOptions": {"passage_tokens": 4, "overlap_tokens": -1},
    "MergeOptions": {"method": "soup", "density": 1.5},
    "ExportOptions": {"stage": "eval"},  # its one field
}
REQUIRED_VALUES = {"lang": "en"}  # fields without a default


@functools.cache
def options_classes() -> list[type]:
    """Every subclass of Options in lm2vec, found by importing all of lm2vec's modules."""
    for module in pkgutil.walk_packages(lm2vec.__path__, "lm2vec."):
        if not module.name.endswith("__main__"):  # `python -m lm2vec` runs the CLI
            importlib.import_module(module.name)
    found, pending = [], [Options]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass.__module__.startswith("lm2vec.") and subclass not in found:
                found.append(subclass)
                pending.append(subclass)
    return found


def test_every_options_class_is_covered() -> None:
    assert sorted(klass.__name__ for klass in options_classes()) == sorted(TWO_BAD_VALUES)


@pytest.mark.parametrize("name", sorted(TWO_BAD_VALUES))
def test_options_class_names_every_failed_check_at_once(name: str) -> None:
    (klass,) = [klass for klass in options_classes() if klass.__name__ == name]
    assert dataclasses.is_dataclass(klass)
    required = {
        field.name: REQUIRED_VALUES[field.name] for field in dataclasses.fields(klass) if field.name in REQUIRED_VALUES
    }
    klass(**required)  # the defaults pass
    bad = TWO_BAD_VALUES[name]
    with pytest.raises(OptionValueError) as raised:
        klass(**required, **bad)
    assert all(option in str(raised.value) for option in bad), str(raised.value)


def test_no_other_validation_style_is_left() -> None:
    other_styles = re.compile(r"def problems\(|\bfailed_checks\b|\bcheck_all\b")
    offenders = [
        str(path.relative_to(SOURCE))
        for path in sorted(SOURCE.rglob("*.py"))
        if other_styles.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_a_path_or_a_list_of_paths_parses_from_the_command_line() -> None:
    from lm2vec.options import parse_value

    assert parse_value("a.jsonl", str | list[str], "data") == "a.jsonl"
    assert parse_value('["a.jsonl", "b.csv"]', str | list[str], "data") == ["a.jsonl", "b.csv"]
    assert parse_value(["a.jsonl"], str | list[str], "data") == ["a.jsonl"]
    with pytest.raises(OptionValueError, match="is not a string"):
        parse_value(["a.jsonl", 3], str | list[str], "data")
