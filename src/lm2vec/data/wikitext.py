"""Wikitext to plain-text paragraphs with mwparserfromhell.

The page is parsed into a tree once and rendered by walking it: templates, references, tables,
galleries, maths, comments, files, categories and interlanguage links are dropped; internal links
become their visible text, external links their label; HTML tags keep their visible content. Section
titles are not text but end the paragraph and start a `Section` (weak pairs use them), and boilerplate
sections (References, External links ...) are dropped whole. List items become paragraphs of their own,
so that the word-count filter removes link lists while keeping long items.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import mwparserfromhell
from mwparserfromhell.nodes import Comment, ExternalLink, Heading, HTMLEntity, Tag, Template, Text, Wikilink
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
        for node in mwparserfromhell.parse(wikitext, skip_style_tags=True).nodes:
            if isinstance(node, Heading):
                if skip_level and node.level > skip_level:
                    continue
                title = node.title.strip_code().strip()
                boilerplate = self._drop_sections and title.lower() in self._profile.boilerplate_sections
                skip_level = node.level if boilerplate else 0
                sections[-1].paragraphs.extend(_paragraphs(pieces))
                pieces = []
                path = [(level, name) for level, name in path if level < node.level] + [(node.level, _tidy(title))]
                sections.append(Section(tuple(name for _, name in path), []))
            elif not skip_level:
                self._render(node, pieces)
        sections[-1].paragraphs.extend(_paragraphs(pieces))
        return [section for section in sections if section.paragraphs]

    def _render_all(self, nodes: Iterable[object], pieces: list[str]) -> None:
        for node in nodes:
            self._render(node, pieces)

    def _render(self, node: object, pieces: list[str]) -> None:
        if isinstance(node, Text):
            pieces.append(node.value)
        elif isinstance(node, Wikilink):
            self._render_link(node, pieces)
        elif isinstance(node, Tag):
            self._render_tag(node, pieces)
        elif isinstance(node, HTMLEntity):
            pieces.append(node.normalize())
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                self._render_all(node.title.nodes, pieces)
        elif isinstance(node, Heading):  # a heading nested inside a tag
            pieces.append("\n\n")
        # Templates, template arguments, comments and anything else render as nothing.
        elif not isinstance(node, Template | Comment):
            pass

    def _render_link(self, link: Wikilink, pieces: list[str]) -> None:
        target = str(link.title).strip()
        prefix = _LINK_PREFIX.match(target)
        if prefix and not target.startswith(":"):  # a leading colon makes [[:Category:X]] an ordinary link
            namespace = prefix.group(1)
            if namespace.lower() in self._dropped_namespaces:
                return
            if link.text is None and _LANGUAGE_PREFIX.fullmatch(namespace):
                return  # [[de:Foo]]: an interlanguage link, not part of the text
        label: Wikicode = link.text if link.text is not None else link.title
        self._render_all(label.nodes, pieces)

    def _render_tag(self, tag: Tag, pieces: list[str]) -> None:
        name = str(tag.tag).strip().lower()
        if name in _DROPPED_TAGS:
            return
        if name in _LIST_ITEM_TAGS:
            pieces.append("\n\n")
        elif name in _BREAK_TAGS:
            pieces.append("\n")
        if tag.contents is not None and not tag.self_closing:
            self._render_all(tag.contents.nodes, pieces)


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
