"""Training text from software translation catalogues: gettext `.mo` files and Mozilla language packs (Fluent
`.ftl`, `.properties` and `.dtd` inside an `.xpi` zip).

A translated UI string is real, edited prose of the language, but it comes wrapped in syntax: printf and Fluent
placeholders, keyboard accelerators, XML markup, entities. `clean_ui_text` unwraps what it can and rejects what is
mostly syntax; `catalogue_documents` keeps each surviving string once (compared case- and whitespace-folded) and
leaves out every string that an evaluation set also holds, so no test string is ever trained on.
"""

from __future__ import annotations

import gettext
import html
import re
import zipfile
from collections.abc import Iterable, Iterator, Set
from pathlib import Path

from lm2vec.data.errors import DataError

VERSION = 1  # of the cleaning: a corpus built from catalogues is cached under a name that includes it
CYRILLIC = re.compile(r"[\u0400-\u04ff]")
LETTER = re.compile(r"[^\W\d_]")
# Format placeholders: printf (`%s`, `%1$S`, `%'d`, `%(name)s`, `%-10lu`), Qt/KDE `%1`, brace styles (`{0}`,
# `{name}`, Fluent `{ $count }`), shell-like `$VAR`/`${VAR}`, `@NAME@` substitutions, Mozilla plural `#1`.
PLACEHOLDER = re.compile(
    r"%(?:\(\w+\)|\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t|I64)?[diouxXeEfgGcsSpn]"
    r"|%\d+|\{[^{}]*\}|\$\{?\w+\}?|@\w+@|#\d+|%%"
)
TAG = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>")
ACCELERATOR = re.compile(r"(?<![\w&])[_&~](?=\w)|~")
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_PH = PLACEHOLDER.pattern.replace("|%%", "")
# One placeholder quoted or in brackets between a noun and more words ("файлът „%s“ не може да бъде отворен") goes
# with its quotes, and what is left still reads as a sentence ("файлът не може да бъде отворен"). Anywhere else it
# would leave a hole ("прочитане от „%s“"): strings with such placeholders are rejected.
ENCLOSED_PLACEHOLDER = re.compile(rf"\s*(?:[„\"'`«‘“](?:{_PH})[“\"'»’”]|\((?:{_PH})\)|\[(?:{_PH})\])")
FUNCTION_WORDS = frozenset(
    "в във на от за с със към до по при чрез като между над под пред след без у през и или а но че да не е са"
    " in on of for with to by from and or the a an".split()
)


def _drop_enclosed_placeholder(text: str) -> str:
    matches = list(ENCLOSED_PLACEHOLDER.finditer(text))
    if len(matches) != 1:
        return text
    match = matches[0]
    before, after = text[: match.start()].split(), text[match.end() :].lstrip()
    if not before or not LETTER.match(before[-1][-1]) or before[-1].casefold() in FUNCTION_WORDS:
        return text
    if not after or not LETTER.match(after[0]):
        return text
    return text[: match.start()] + " " + after


def fold(text: str) -> str:
    """The comparison key of a string: case folded, whitespace collapsed, accelerator marks and closing
    punctuation removed."""
    return " ".join(ACCELERATOR.sub("", text).casefold().split()).rstrip(" .,:;!?…")


def _tidy(text: str) -> str:
    text = " ".join(text.split())
    return re.sub(r"\s+([,.;:!?…)\]»“])", r"\1", text)


def clean_ui_text(text: str, min_words: int = 4) -> str | None:
    """One catalogue string as plain prose, or None where it is not prose: markup tags removed (their text kept),
    entities decoded, accelerators removed, one quoted placeholder between words removed with its quotes. Strings
    with any other placeholder, fewer than `min_words` words, fewer Cyrillic letters than Latin ones, or shaped
    like a list (`a;b;c`), a path, a command line or an option table are rejected."""
    text = html.unescape(TAG.sub("", text.replace("\\n", "\n")))
    text = _drop_enclosed_placeholder(text).replace("%%", "%")
    if PLACEHOLDER.search(text) or re.search(r"\w;\w|;\s*$|^\s*-|\s{3,}\S|\t|[<>|\\=]|\w/\w+/", text):
        return None
    text = _tidy(ACCELERATOR.sub("", text))
    letters = LETTER.findall(text)
    cyrillic = sum(1 for c in letters if CYRILLIC.match(c))
    if not cyrillic or cyrillic < len(letters) - cyrillic:
        return None
    if sum(1 for word in text.split() if LETTER.search(word)) < min_words:
        return None
    return text


def eval_keys(strings: Iterable[str]) -> set[str]:
    """The folded forms of evaluation strings, each whole, cleaned (as `clean_ui_text` would, where it keeps the
    string) and split into its sentences."""
    keys = set()
    for text in strings:
        text = " ".join(TAG.sub("", text).split())
        cleaned = clean_ui_text(text, min_words=1) or text
        keys.update((fold(text), fold(cleaned)))
        keys.update(fold(sentence) for sentence in SENTENCE_END.split(cleaned))
    keys.discard("")
    return keys


def catalogue_documents(strings: Iterable[str], exclude: Set[str] = frozenset(), min_words: int = 4) -> list[str]:
    """Clean strings (see `clean_ui_text`; a string with blank lines is taken paragraph by paragraph), each kept
    once in first-seen order; a string is left out when, before or after cleaning, it or any of its sentences folds
    to a key in `exclude` (see `eval_keys`)."""
    seen: set[str] = set()
    documents = []
    for raw in strings:
        for paragraph in re.split(r"\n\s*\n", raw):
            text = clean_ui_text(paragraph, min_words)
            if text is None:
                continue
            key = fold(text)
            if key in seen or fold(TAG.sub("", paragraph)) in exclude:
                continue
            if key in exclude or any(fold(sentence) in exclude for sentence in SENTENCE_END.split(text)):
                continue
            seen.add(key)
            documents.append(text)
    return documents


# --- readers -----------------------------------------------------------------------------------------------------
def mo_translations(path: Path) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of a compiled gettext catalogue, the header and untranslated entries skipped; of plural
    entries the first form."""
    try:
        with path.open("rb") as handle:
            catalog = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable .mo catalogue ({error})") from None
    for key, value in catalog.items():
        if isinstance(key, tuple):
            if key[1] != 0:
                continue
            key = key[0]
        msgid = key.split("\x04")[-1]
        if msgid and isinstance(value, str) and value and value != msgid:
            yield msgid, value


FLUENT_ENTRY = re.compile(r"^(-?[A-Za-z][\w-]*)\s*=\s*(.*)$")
FLUENT_ATTRIBUTE = re.compile(r"^\s+\.([\w-]+)\s*=\s*(.*)$")


def fluent_messages(text: str) -> Iterator[tuple[str, str]]:
    """(id, text) of each message, term and attribute of a Fluent file; multi-line values are joined with spaces,
    values with select expressions (`{ $n -> ... }`) are skipped. Term ids keep their leading `-`."""
    entry, parts = None, []

    def flush() -> Iterator[tuple[str, str]]:
        value = " ".join(part for part in parts if part)
        if entry and value and "->" not in value:
            yield entry, value

    current = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            if not line.strip() and current is not None:
                continue
            yield from flush()
            entry, parts, current = None, [], None
            continue
        if match := FLUENT_ENTRY.match(line):
            yield from flush()
            entry, parts, current = match.group(1), [match.group(2).strip()], match.group(1)
        elif (match := FLUENT_ATTRIBUTE.match(line)) and current is not None:
            yield from flush()
            entry, parts = f"{current}.{match.group(1)}", [match.group(2).strip()]
        elif line[:1].isspace() and entry is not None:
            parts.append(line.strip())
    yield from flush()


def fluent_terms(messages: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Plain-text Fluent terms (`-brand-short-name = Firefox`), keyed without the `-`."""
    return {key[1:]: value for key, value in messages if key.startswith("-") and "." not in key and "{" not in value}


def properties_values(text: str) -> Iterator[str]:
    """Values of a Java-style `.properties` file (`key = value`); Mozilla's `;`-separated plural forms split."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        value = line.split("=", 1)[1].strip()
        value = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value)
        yield from (part for part in value.split(";") if part.strip())


DTD_ENTITY = re.compile(r"<!ENTITY\s+[\w.-]+\s+(\"[^\"]*\"|'[^']*')\s*>", re.S)


def dtd_values(text: str) -> Iterator[str]:
    """Entity values of a Mozilla `.dtd` file."""
    for match in DTD_ENTITY.finditer(text):
        yield match.group(1)[1:-1]


def resolve_terms(text: str, terms: dict[str, str]) -> str:
    """Fluent term references (`{ -brand-short-name }`) replaced by the terms' text where `terms` knows them."""
    return re.sub(r"\{\s*-([\w-]+)\s*\}", lambda match: terms.get(match.group(1), match.group(0)), text)


def xpi_strings(path: Path) -> list[str]:
    """All translated strings of a Mozilla language pack (.xpi), its Fluent terms (the product names) resolved."""
    strings, messages = [], []
    try:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if not name.endswith((".ftl", ".properties", ".dtd")):
                    continue
                text = archive.read(name).decode("utf-8", errors="replace")
                if name.endswith(".ftl"):
                    found = list(fluent_messages(text))
                    messages += found
                    strings += [value for key, value in found if not key.startswith("-")]
                elif name.endswith(".properties"):
                    strings += properties_values(text)
                else:
                    strings += dtd_values(text)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable language pack ({error})") from None
    terms = fluent_terms(messages)
    return [resolve_terms(text, terms) for text in strings]
