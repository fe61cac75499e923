"""Weak supervised pairs from the structure of wiki articles, as E5, GTE and Contriever mine them: an article's
title -> its lead, "Title: Heading > Subheading" -> that section's own text, and a sentence -> the rest of its
paragraph (the sentence taken out, else the positive would contain the query word for word).

The records are those `lm2vec.data.formats.read_supervised_pairs` reads, with a `dataset` per kind
("wiki-title-lead" ...) so that supervised batches keep the kinds apart, and an instruction per kind. They are
built from the sections `lm2vec.data.wikitext.WikitextCleaner` parses, the same in every language.
"""

from __future__ import annotations

import random

from lm2vec.data.config import PAIR_KINDS, WikiConfig
from lm2vec.data.errors import require_file
from lm2vec.data.sentences import count_words, cut_words
from lm2vec.data.wikitext import Section, has_markup_residue

TITLE_LEAD, HEADING_SECTION, SENTENCE_PARAGRAPH = PAIR_KINDS
DATASET_PREFIX = "wiki-"
INSTRUCTIONS = {
    TITLE_LEAD: "Given the title of an encyclopedia article, retrieve its introduction",
    HEADING_SECTION: "Given an encyclopedia article's title and a section heading, retrieve the section",
    SENTENCE_PARAGRAPH: "Given a sentence, retrieve the passage it was taken from",
}


def normalised_title(title: str) -> str:
    """A title as wikis compare them, and forgivingly: underscores are spaces, case and spacing do not count."""
    return " ".join(title.replace("_", " ").split()).casefold()


def holdout_titles(config: WikiConfig) -> frozenset[str]:
    """The normalised titles of `holdout_titles` and of the lines of `holdout_file`; DataError if it is missing."""
    titles = list(config.holdout_titles)
    if config.holdout_file:
        titles += require_file(config.holdout_file).read_text(encoding="utf-8").splitlines()
    return frozenset(normalised_title(title) for title in titles if title.strip())


class PairMaker:
    """The pairs of one article (`article_pairs`) and of each of its paragraphs (`sentence_pairs`)."""

    def __init__(self, config: WikiConfig) -> None:
        self._kinds = frozenset(config.pair_kinds)
        self._max_words, self._min_words = config.pair_max_words, config.pair_min_words
        self._per_paragraph, self._seed = config.pair_sentences_per_paragraph, config.pair_seed

    def rng(self, title: str) -> random.Random:
        """The generator of one article's sentence draws: seeded by the title, so a page gives the same pairs
        whichever worker parses it and whether the run was resumed."""
        return random.Random(f"{self._seed}\0{title}")

    def article_pairs(self, title: str, sections: list[Section]) -> list[dict[str, str]]:
        """title -> lead and heading path -> section text, from the paragraphs without markup residue."""
        pairs = []
        for section in sections:
            kind = HEADING_SECTION if section.headings else TITLE_LEAD
            if kind not in self._kinds or not all(section.headings):
                continue
            query = f"{title}: {' > '.join(section.headings)}" if section.headings else title
            text = " ".join(paragraph for paragraph in section.paragraphs if not has_markup_residue(paragraph))
            if pair := self._pair(kind, query, text):
                pairs.append(pair)
        return pairs

    def sentence_pairs(self, rng: random.Random, paragraph: str, sentences: list[str]) -> list[dict[str, str]]:
        """Up to `pair_sentences_per_paragraph` of `sentences` (the paragraph's, length-filtered), drawn with `rng`,
        each -> the paragraph without it."""
        if SENTENCE_PARAGRAPH not in self._kinds or not sentences:
            return []
        drawn = sorted(rng.sample(range(len(sentences)), min(self._per_paragraph, len(sentences))))
        pairs = []
        for sentence in (sentences[index] for index in drawn):
            start = paragraph.find(sentence)
            rest = " ".join((paragraph[:start] + paragraph[start + len(sentence) :]).split())
            if pair := self._pair(SENTENCE_PARAGRAPH, sentence, rest):
                pairs.append(pair)
        return pairs

    def _pair(self, kind: str, query: str, text: str) -> dict[str, str] | None:
        positive = cut_words(text, self._max_words)
        if count_words(positive) < self._min_words:
            return None
        return {
            "query": query,
            "positive": positive,
            "dataset": DATASET_PREFIX + kind,
            "instruction": INSTRUCTIONS[kind],
        }
