"""Options of a corpus build. Each field is one CLI option (`--max-articles` for `max_articles`) and one
key of a recipe's `[data]` TOML table, so `WikiConfig(**recipe["data"])` fills it."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lm2vec.data.languages import validate_language
from lm2vec.options import Options

# Fields that change how a run goes, not what it writes: a resumed run may change them. dedup_capacity only sizes the
# first Bloom filters, which grow past it at the same false-positive bound (lm2vec.data.dedup).
RUN_ONLY_FIELDS = frozenset({"workers", "max_articles", "progress", "dedup_capacity"})

# Options naming a file are compared by what the file holds (a manifest's "files"), not by its path: a resumed run may
# find the file moved, and the parts of one dump are built on machines that keep it in different places.
FILE_FIELDS = ("holdout_file", "index")

# The weak pair kinds of a dump (lm2vec.data.pairs): title -> lead, heading path -> section, sentence -> paragraph.
PAIR_KINDS = ("title-lead", "heading-section", "sentence-paragraph")
_PART = re.compile(r"(?P<number>[1-9]\d*)/(?P<count>[1-9]\d*)")


def file_identity(path: str | os.PathLike) -> str:
    """The SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def changed_options(
    old: dict[str, Any],
    new: dict[str, Any],
    old_files: dict[str, str],
    new_files: dict[str, str],
    ignored: frozenset[str] = frozenset(),
) -> list[str]:
    """The options that differ between two runs' option records (and their manifests' "files"), sorted; an option
    naming a file by the file's content where both runs recorded it (manifests before 2026-12-07 did not: by path)."""
    changed = []
    for key in sorted((old.keys() | new.keys()) - ignored):
        if key in old_files and key in new_files:
            differs = old_files[key] != new_files[key]
        else:
            differs = old.get(key) != new.get(key)
        if differs:
            changed.append(key)
    return changed


def parse_part(part: str) -> tuple[int, int] | None:
    """Part K of N of a multistream dump from "K/N" ("3/8" -> (3, 8)); None unless 1 <= K <= N."""
    match = _PART.fullmatch(part.replace(" ", ""))
    if match is None or int(match["number"]) > int(match["count"]):
        return None
    return int(match["number"]), int(match["count"])


@dataclass(frozen=True)
class CorpusConfig(Options):
    """Options shared by every input kind; articles are the input's documents."""

    lang: str = field(
        metadata={"help": "language code of the text (bg, en, he, ko ...): sentence splitting and word counts"},
    )
    max_articles: int | None = field(default=None, metadata={"help": "stop after this many kept articles (quick runs)"})
    workers: int = field(default=0, metadata={"help": "processes that parse and split; 0 means one per core"})
    validation_fraction: float = field(
        default=0.01,
        metadata={"help": "share of articles, chosen by a hash of the title, in validation"},
    )
    min_article_chars: int = field(
        default=200,
        metadata={
            "help": "articles with fewer characters of clean text are skipped as too short; a Chinese, Japanese or "
            "Korean character counts as 3, as it writes a whole syllable"
        },
    )
    min_paragraph_words: int = field(default=10, metadata={"help": "paragraphs with fewer words are dropped"})
    min_sentence_words: int = field(default=5, metadata={"help": "sentences with fewer words are dropped"})
    max_sentence_words: int = field(default=64, metadata={"help": "sentences with more words are dropped"})
    near_duplicate_threshold: float = field(
        default=0.8,
        metadata={"help": "MinHash Jaccard similarity; 0 turns near-duplicate removal off"},
    )
    dedup_capacity: int = field(
        default=100_000,
        metadata={"help": "distinct paragraphs the first Bloom filters hold (~34 bytes each); they grow past it"},
    )
    shard_size: int = field(
        default=200_000,
        metadata={"help": "rows in a shard before all shards are closed (a resumable checkpoint)"},
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar (MB/s, pages)"})

    def __post_init__(self) -> None:
        # An unknown language is its own error, with a hint; the checks read the normalised code.
        object.__setattr__(self, "lang", validate_language(self.lang))
        super().__post_init__()

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (
                0 <= self.validation_fraction < 1,
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}.",
            ),
            (
                0 <= self.near_duplicate_threshold <= 1,
                f"near_duplicate_threshold must be in [0, 1], got {self.near_duplicate_threshold}.",
            ),
            (
                self.min_sentence_words <= self.max_sentence_words,
                "min_sentence_words is larger than max_sentence_words.",
            ),
            (
                self.max_articles is None or self.max_articles >= 1,
                f"max_articles must be positive, got {self.max_articles}.",
            ),
            (self.shard_size >= 1, f"shard_size must be positive, got {self.shard_size}."),
            (self.dedup_capacity >= 1, f"dedup_capacity must be positive, got {self.dedup_capacity}."),
            (self.workers >= 0, f"workers must not be negative, got {self.workers}."),
        ]

    @property
    def writes_pairs(self) -> bool:
        """Whether the build also writes weak supervised pairs (a dump's: `WikiConfig.pair_kinds`)."""
        return False

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def output_fields(self) -> dict[str, Any]:
        """The options that shape the output; a resumed run must match them."""
        return {name: value for name, value in asdict(self).items() if name not in RUN_ONLY_FIELDS}

    def file_identities(self) -> dict[str, str]:
        """`file_identity` of each file an option names, by option."""
        named = {name: getattr(self, name, "") for name in FILE_FIELDS}
        return {name: file_identity(path) for name, path in named.items() if path}

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in fields(cls)]


@dataclass(frozen=True)
class WikiConfig(CorpusConfig):
    """Options for a MediaWiki dump, and for the weak supervised pairs mined from its articles' structure."""

    drop_boilerplate_sections: bool = field(
        default=True,
        metadata={"help": "drop References, External links, See also ... with their content"},
    )
    pair_kinds: list[str] = field(
        default_factory=lambda: list(PAIR_KINDS),
        metadata={
            "help": "weak pairs written to pairs/*.jsonl (supervised records): title-lead (the title -> the text "
            "before the first heading), heading-section ('Title: Heading > Subheading' -> that section's own text), "
            "sentence-paragraph (a sentence -> the rest of its paragraph); [] writes none"
        },
    )
    pair_max_words: int = field(
        default=256,
        metadata={"help": "a pair's positive (lead, section) is cut after this many words"},
    )
    pair_min_words: int = field(
        default=10,
        metadata={"help": "pairs whose positive has fewer words are skipped as too short to say anything"},
    )
    pair_sentences_per_paragraph: int = field(
        default=1,
        metadata={"help": "sentence-paragraph pairs drawn from each paragraph (with `pair_seed`)"},
    )
    pair_seed: int = field(default=0, metadata={"help": "seed of the sentences drawn for sentence-paragraph pairs"})
    holdout_titles: list[str] = field(
        default_factory=list,
        metadata={"help": "articles that give no pairs (evaluation articles); their text still goes into the corpus"},
    )
    holdout_file: str = field(
        default="",
        metadata={"help": "a file of more such titles, one a line (blank lines are ignored)"},
    )

    index: str = field(
        default="",
        metadata={"help": "the multistream dump's index (*-multistream-index.txt.bz2), to read only a --part of it"},
    )
    part: str = field(
        default="",
        metadata={
            "help": "K/N: build part K of N of a multistream dump (with --index), about 1/N of its pages, each page "
            "in exactly one part, so N machines or processes share the dump"
        },
    )

    @property
    def writes_pairs(self) -> bool:
        return bool(self.pair_kinds)

    def checks(self) -> list[tuple[bool, str]]:
        unknown = sorted(set(self.pair_kinds) - set(PAIR_KINDS))
        return [
            *super().checks(),
            (not unknown, f"pair_kinds has unknown kinds {unknown}; known: {', '.join(PAIR_KINDS)}."),
            (self.pair_max_words >= 1, f"pair_max_words must be positive, got {self.pair_max_words}."),
            (self.pair_min_words >= 1, f"pair_min_words must be positive, got {self.pair_min_words}."),
            (
                self.pair_min_words <= self.pair_max_words,
                "pair_min_words is larger than pair_max_words.",
            ),
            (
                self.pair_sentences_per_paragraph >= 1,
                f"pair_sentences_per_paragraph must be positive, got {self.pair_sentences_per_paragraph}.",
            ),
            (
                not self.part or parse_part(self.part) is not None,
                f"part must be K/N with 1 <= K <= N (e.g. 3/8), got {self.part!r}.",
            ),
            (not self.part or bool(self.index), "part needs index, the dump's *-multistream-index.txt.bz2."),
        ]


@dataclass(frozen=True)
class TextConfig(CorpusConfig):
    """Options for plain text: .txt (documents separated by blank lines), .jsonl or a HF dataset."""

    text_field: str = field(default="text", metadata={"help": "the .jsonl field or dataset column holding the text"})
    hf_split: str = field(default="train", metadata={"help": "split read when the input is a Hugging Face dataset"})
