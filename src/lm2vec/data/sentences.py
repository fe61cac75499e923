"""Sentence splitting that is right for the language.

sentencex (Wikimedia's segmenter, ~300 languages through fallback chains, Rust core) finds the
candidate boundaries. Its abbreviation lists miss some cases (Bulgarian "т.е." and "т.нар.",
English "Ms."), so two corrections undo a boundary:
- the next piece starts with a lower-case word (cased scripts), which a real sentence does not;
- the piece ends with one of the language's non-final abbreviations (titles, "e.g.", "т.е.").
"""

from __future__ import annotations

import itertools
import re

import sentencex

from lm2vec.data.languages import language_profile, validate_language

_KANA_AND_HAN = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_THAI = "\u0e00-\u0e7f"
_HANGUL_SYLLABLES = "\uac00-\ud7af"
# Scripts written without spaces: every character counts as a word for the length filters.
_WORD = re.compile(rf"[{_KANA_AND_HAN}{_THAI}]|[^\s{_KANA_AND_HAN}{_THAI}]+")
# A kana, Han or Hangul character writes a whole syllable, which alphabets (Latin, Cyrillic, Hebrew) spell with
# about three letters: so much text counts as so many characters whatever the script.
_SYLLABLE_CHAR = re.compile(rf"[{_KANA_AND_HAN}{_HANGUL_SYLLABLES}]")
SYLLABLE_CHAR_WEIGHT = 3
_OPENING_PUNCTUATION = "\"'„“«‘‚([{—–-"


_UNSPACED_CHAR = re.compile(rf"[{_KANA_AND_HAN}{_THAI}]")


def count_words(text: str) -> int:
    """Whitespace-separated tokens, with each CJK or Thai character counted as one word."""
    # str.split and the regex's \s agree on what whitespace is; split is much faster where every word is spaced.
    return len(_WORD.findall(text)) if _UNSPACED_CHAR.search(text) else len(text.split())


def cut_words(text: str, max_words: int) -> str:
    """`text` up to the end of its `max_words`-th word (as `count_words` counts them), its spacing kept."""
    last = next(itertools.islice(_WORD.finditer(text), max_words - 1, None), None)
    return text if last is None else text[: last.end()]


def count_chars(text: str) -> int:
    """Characters, with each Chinese, Japanese or Korean character counted as `SYLLABLE_CHAR_WEIGHT`."""
    return len(text) + (SYLLABLE_CHAR_WEIGHT - 1) * len(_SYLLABLE_CHAR.findall(text))


class SentenceSplitter:
    """Splits paragraphs into sentences for one language; `split` is safe to call from many processes."""

    def __init__(self, lang: str) -> None:
        self.lang = validate_language(lang)
        self._non_final = language_profile(self.lang).non_final_abbreviations

    def split(self, text: str) -> list[str]:
        """Sentences of `text`, stripped, in order; their concatenation loses only whitespace."""
        # Each sentence is a list of pieces, joined once at the end, and a join looks at the previous piece
        # only: growing a string or scanning the sentence so far made long unsplit paragraphs quadratic.
        sentences: list[list[str]] = []
        for piece in sentencex.segment(self.lang, text):
            if not piece.strip():
                continue
            if sentences and self._continues(sentences[-1][-1], piece):
                sentences[-1].append(piece)
            else:
                sentences.append([piece])
        return ["".join(pieces).strip() for pieces in sentences]

    def _continues(self, previous_piece: str, piece: str) -> bool:
        # The whole first word, so that "iPhone" still starts a sentence; in an unspaced script its first character,
        # so that a Latin word later in the sentence ("我喜欢python") does not make it look lower-case.
        first_word = _WORD.match(piece.split(maxsplit=1)[0].lstrip(_OPENING_PUNCTUATION))
        if first_word is not None and first_word.group().islower():
            return True
        return previous_piece.rsplit(maxsplit=1)[-1].lower() in self._non_final
