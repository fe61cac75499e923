"""Wikitext to plain-text paragraphs with mwparserfromhell.

The page is tokenized once (mwparserfromhell's C tokenizer) and rendered by walking the tree that its tokens
spell out: templates, references, tables,
galleries, maths, comments, files, categories and interlanguage links are dropped; internal links
become their visible text, external links their label; HTML tags keep their visible content. Section
titles are not text but end the paragraph and start a `Section` (weak pairs use them), and boilerplate
sections (References, External links ...) are dropped whole. List items become paragraphs of their own,
so that the word-count filter removes link lists while keeping long items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mwparserfromhell import parser
from mwparserfromhell.nodes import Heading
from mwparserfromhell.parser import Builder, ParserError
from mwparserfromhell.parser import tokens as _tokens
from mwparserfromhell.parser.tokenizer import Tokenizer
from mwparserfromhell.parser.tokens import Token
from mwparserfromhell.wikicode import Wikicode

from lm2vec.data.languages import LanguageProfile

# Tags whose content is not running prose.
_DROPPED_TAGS = frozenset(
    {
        "ref",
        "references",
        "table",
        "gallery",
        "math",
        "chem",
        "ce",
        "timeline",
        "imagemap",
        "score",
        "syntaxhighlight",
        "source",
        "graph",
        "mapframe",
        "maplink",
        "templatestyles",
        "inputbox",
        "categorytree",
        "hiero",
        "templatedata",
        "indicator",
        "noinclude",
        "code",
        "pre",
        "div",
    }
)
_BREAK_TAGS = frozenset({"br", "hr", "p"})
_LIST_ITEM_TAGS = frozenset({"li", "dt", "dd"})
_CANONICAL_DROPPED_NAMESPACES = frozenset({"file", "image", "media", "category"})
_LINK_PREFIX = re.compile(r"^:?\s*([^\W\d_][\w \-]*?)\s*:")
# "de", "zh-min-nan": the prefix of an interlanguage link.
_LANGUAGE_PREFIX = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*")

# The page is rendered from the tokenizer's flat token list (C code) without building mwparserfromhell's tree of
# node objects, which took most of the time of a page; the few nodes that need more than their text (headings,
# HTML entities, link targets that are not plain text) are built on their own. A token list spells out a tree:
# each opening token below is matched by one of its closing tokens.
_OPENING_TOKENS = frozenset(
    {
        _tokens.TemplateOpen,
        _tokens.ArgumentOpen,
        _tokens.WikilinkOpen,
        _tokens.ExternalLinkOpen,
        _tokens.HTMLEntityStart,
        _tokens.HeadingStart,
        _tokens.CommentStart,
        _tokens.TagOpenOpen,
    }
)
_CLOSING_TOKENS = frozenset(
    {
        _tokens.TemplateClose,
        _tokens.ArgumentClose,
        _tokens.WikilinkClose,
        _tokens.ExternalLinkClose,
        _tokens.HTMLEntityEnd,
        _tokens.HeadingEnd,
        _tokens.CommentEnd,
        _tokens.TagCloseSelfclose,
        _tokens.TagCloseClose,
    }
)
# Templates, template arguments and comments render as nothing.
_INVISIBLE_NODES = frozenset({_tokens.TemplateOpen, _tokens.ArgumentOpen, _tokens.CommentStart})
_TAG_NAME_ENDS = (_tokens.TagAttrStart, _tokens.TagCloseOpen, _tokens.TagCloseSelfclose)
_Tokenizer = parser.CTokenizer if parser.use_c else Tokenizer

_DISAMBIGUATION_TEMPLATE = re.compile(r"\{\{\s*([^{}|]+?)\s*[|}]")
_BOLD_ITALIC = re.compile(r"'{2,}")
_BEHAVIOUR_SWITCH = re.compile(r"__[A-ZА-Я_]+__")
_BARE_URL = re.compile(r"\b(?:https?|ftp)://\S+")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]")
_BRACKET_PUNCTUATION = re.compile(r"\(\s*[,;:]\s*")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?)\]»“])")
_SPACES = re.compile(r"[ \t\u00a0\u200b]+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# Residue of markup the parser could not pair up (a broken template, a stray table row).
_MARKUP_RESIDUE = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|^\s*\|-|<[a-z/][^>]*>", re.MULTILINE)


def is_disambiguation(title: str, wikitext: str, profile: LanguageProfile) -> bool:
    """A disambiguation page by its title suffix or by a disambiguation template anywhere on the page."""
    if title.lower().endswith(profile.disambiguation_title_suffixes):
        return True
    return any(
        name.lower().replace("_", " ") in profile.disambiguation_templates
        for name in _DISAMBIGUATION_TEMPLATE.findall(wikitext)
    )


@dataclass(frozen=True)
class Section:
    """A part of a page: its heading path (the headings above it, outermost first; empty for the lead) and its own
    paragraphs, without those of its subsections."""

    headings: tuple[str, ...]
    paragraphs: list[str]


class WikitextCleaner:
    """Renders a page's wikitext as paragraphs of plain text for one wiki."""

    def __init__(self, profile: LanguageProfile, namespaces: dict[int, str], drop_boilerplate_sections: bool):
        self._profile = profile
        self._drop_sections = drop_boilerplate_sections
        # File (6) and Category (14) under the wiki's own names, plus the canonical English ones.
        local = {namespaces.get(6, ""), namespaces.get(-2, ""), namespaces.get(14, "")} - {""}
        self._dropped_namespaces = _CANONICAL_DROPPED_NAMESPACES | {name.lower() for name in local}
        self._tokenizer = _Tokenizer()

    def paragraphs(self, wikitext: str) -> list[str]:
        """Plain-text paragraphs of the page, in order, with whitespace normalised."""
        return [paragraph for section in self.sections(wikitext) for paragraph in section.paragraphs]

    def sections(self, wikitext: str) -> list[Section]:
        """The page's sections in order, the lead first (no headings), each with its own paragraphs; a heading
        ends the paragraph before it, so these are the very paragraphs of `paragraphs`."""
        sections = [Section((), [])]
        pieces: list[str] = []
        path: list[tuple[int, str]] = []  # (level, title) of the headings above the current section
        skip_level = 0  # level of the boilerplate heading being skipped, 0 when not skipping
        tokens = self._tokenizer.tokenize(wikitext, 0, True)
        ends = _node_ends(tokens)
        index = 0
        while index < len(tokens):
            end = ends[index]
            if type(tokens[index]) is _tokens.HeadingStart:
                heading: Heading = _build(tokens, index, end).nodes[0]
                level = heading.level
                if skip_level and level > skip_level:
                    index = end
                    continue
                title = heading.title.strip_code().strip()
                boilerplate = self._drop_sections and title.lower() in self._profile.boilerplate_sections
                skip_level = level if boilerplate else 0
                sections[-1].paragraphs.extend(_paragraphs(pieces))
                pieces = []
                path = [(above, name) for above, name in path if above < level] + [(level, _tidy(title))]
                sections.append(Section(tuple(name for _, name in path), []))
            elif not skip_level:
                self._render(tokens, ends, index, end, pieces)
            index = end
        sections[-1].paragraphs.extend(_paragraphs(pieces))
        return [section for section in sections if section.paragraphs]

    def _render(self, tokens: list[Token], ends: list[int], start: int, stop: int, pieces: list[str]) -> None:
        """Appends the visible text of the nodes that tokens[start:stop] spell out."""
        index = start
        while index < stop:
            token = tokens[index]
            kind = type(token)
            end = ends[index]
            if kind is _tokens.Text:
                pieces.append(token["text"])
            elif kind is _tokens.WikilinkOpen:
                self._render_link(tokens, ends, index, end, pieces)
            elif kind is _tokens.TagOpenOpen:
                self._render_tag(tokens, ends, index, end, pieces)
            elif kind is _tokens.HTMLEntityStart:
                pieces.append(_build(tokens, index, end).nodes[0].normalize())
            elif kind is _tokens.ExternalLinkOpen:
                separator = _last(tokens, ends, index + 1, end - 1, _tokens.ExternalLinkSeparator)
                if separator is not None:  # the link's label; a bare URL renders as nothing
                    self._render(tokens, ends, separator + 1, end - 1, pieces)
            elif kind is _tokens.HeadingStart:  # a heading nested inside a tag
                pieces.append("\n\n")
            elif kind not in _INVISIBLE_NODES:
                raise ParserError(f"unexpected {kind.__name__} token")
            index = end

    def _render_link(self, tokens: list[Token], ends: list[int], start: int, end: int, pieces: list[str]) -> None:
        # As the tree builder does: a second separator makes the part between the two the title.
        separators = _top_level(tokens, ends, start + 1, end - 1, _tokens.WikilinkSeparator)
        title_start = separators[-2] + 1 if len(separators) > 1 else start + 1
        title_end = separators[-1] if separators else end - 1
        target = _source(tokens, title_start, title_end).strip()
        prefix = _LINK_PREFIX.match(target)
        if prefix and not target.startswith(":"):  # a leading colon makes [[:Category:X]] an ordinary link
            namespace = prefix.group(1)
            if namespace.lower() in self._dropped_namespaces:
                return
            if not separators and _LANGUAGE_PREFIX.fullmatch(namespace):
                return  # [[de:Foo]]: an interlanguage link, not part of the text
        if separators:
            self._render(tokens, ends, separators[-1] + 1, end - 1, pieces)
        else:
            self._render(tokens, ends, title_start, title_end, pieces)

    def _render_tag(self, tokens: list[Token], ends: list[int], start: int, end: int, pieces: list[str]) -> None:
        name_end = _first(tokens, ends, start + 1, end - 1, _TAG_NAME_ENDS)
        name = _source(tokens, start + 1, name_end).strip().lower()
        if name in _DROPPED_TAGS:
            return
        if name in _LIST_ITEM_TAGS:
            pieces.append("\n\n")
        elif name in _BREAK_TAGS:
            pieces.append("\n")
        if type(tokens[end - 1]) is _tokens.TagCloseSelfclose:
            return
        contents_start = _first(tokens, ends, name_end, end - 1, _tokens.TagCloseOpen)
        contents_end = _first(tokens, ends, contents_start, end - 1, _tokens.TagOpenClose)
        if contents_end < end - 1:  # a closing tag, hence contents
            self._render(tokens, ends, contents_start + 1, contents_end, pieces)


def _node_ends(tokens: list[Token]) -> list[int]:
    """For each token, the index just past the node it starts: the token after its closing token for an opening
    one, the next token otherwise."""
    ends = list(range(1, len(tokens) + 1))
    open_nodes: list[int] = []
    for index, token in enumerate(tokens):
        kind = type(token)
        if kind is _tokens.Text:
            continue
        if kind in _OPENING_TOKENS:
            open_nodes.append(index)
        elif kind in _CLOSING_TOKENS:
            ends[open_nodes.pop()] = index + 1
    return ends


def _top_level(tokens: list[Token], ends: list[int], start: int, stop: int, kind: type) -> list[int]:
    """Indexes of the `kind` tokens in tokens[start:stop] that are not inside a nested node."""
    found = []
    index = start
    while index < stop:
        if type(tokens[index]) is kind:
            found.append(index)
        index = ends[index]
    return found


def _last(tokens: list[Token], ends: list[int], start: int, stop: int, kind: type) -> int | None:
    found = _top_level(tokens, ends, start, stop, kind)
    return found[-1] if found else None


def _first(tokens: list[Token], ends: list[int], start: int, stop: int, kinds: type | tuple[type, ...]) -> int:
    """Index of the first top-level token of `kinds` in tokens[start:stop], else `stop`."""
    index = start
    while index < stop and not isinstance(tokens[index], kinds):
        index = ends[index]
    return index


def _source(tokens: list[Token], start: int, stop: int) -> str:
    """The wikitext that tokens[start:stop] were read from, as the tree would print it."""
    part = tokens[start:stop]
    if all(type(token) is _tokens.Text for token in part):
        return "".join(token["text"] for token in part)
    return str(Builder().build(part))


def _build(tokens: list[Token], start: int, stop: int) -> Wikicode:
    """mwparserfromhell's tree of tokens[start:stop], for the few nodes that need more than their text."""
    return Builder().build(tokens[start:stop])


def _paragraphs(pieces: list[str]) -> list[str]:
    return [paragraph for block in _PARAGRAPH_BREAK.split("".join(pieces)) if (paragraph := _tidy(block))]


def has_markup_residue(text: str) -> bool:
    """True if wiki or HTML markup survived cleaning, which marks the paragraph as unusable."""
    return _MARKUP_RESIDUE.search(text) is not None


def _tidy(block: str) -> str:
    text = _BEHAVIOUR_SWITCH.sub("", _BOLD_ITALIC.sub("", block))
    text = _BARE_URL.sub("", text)
    text = " ".join(line.strip() for line in text.splitlines())
    text = _SPACES.sub(" ", _BRACKET_PUNCTUATION.sub("(", _EMPTY_BRACKETS.sub("", text)))
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text).strip()
