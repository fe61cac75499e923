"""Language codes and the few per-language facts the pipeline needs.

Any Wikipedia language works: codes are checked against ISO 639 (pycountry) plus Wikipedia's own
non-ISO codes. Languages without a profile below get the generic one, which holds the English
names that most wikis also accept (e.g. the `{{disambig}}` template).
"""

from __future__ import annotations

from dataclasses import dataclass

import pycountry

from lm2vec.data.errors import UnknownLanguageError

# Wikipedia editions whose codes are not ISO 639 codes.
WIKIPEDIA_ONLY_CODES = frozenset(
    {
        "simple",
        "als",
        "bat-smg",
        "be-tarask",
        "be-x-old",
        "cbk-zam",
        "fiu-vro",
        "map-bms",
        "nds-nl",
        "roa-rup",
        "roa-tara",
        "zh-classical",
        "zh-min-nan",
        "zh-yue",
    }
)


@dataclass(frozen=True)
class LanguageProfile:
    """What differs between wikis: disambiguation markers, boilerplate sections, abbreviations."""

    disambiguation_templates: frozenset[str]
    disambiguation_title_suffixes: tuple[str, ...]
    # Sections made of references and link lists, not prose; dropped with their content.
    boilerplate_sections: frozenset[str]
    # Abbreviations that precede a word and so never end a sentence ("Dr. Smith", "т.нар. Златен век").
    non_final_abbreviations: frozenset[str]


_ENGLISH = LanguageProfile(
    disambiguation_templates=frozenset(
        {
            "disambiguation",
            "disambig",
            "dab",
            "disamb",
            "hndis",
            "geodis",
            "set index article",
            "surname",
            "given name",
            "disambiguation cleanup",
            "shipindex",
            "mountainindex",
            "roadindex",
        }
    ),
    disambiguation_title_suffixes=("(disambiguation)",),
    boilerplate_sections=frozenset(
        {
            "references",
            "external links",
            "see also",
            "further reading",
            "notes",
            "bibliography",
            "sources",
            "footnotes",
            "citations",
            "notes and references",
        }
    ),
    non_final_abbreviations=frozenset(
        {
            "mr.",
            "mrs.",
            "ms.",
            "dr.",
            "prof.",
            "st.",
            "mt.",
            "fig.",
            "figs.",
            "no.",
            "nos.",
            "vol.",
            "vs.",
            "e.g.",
            "i.e.",
            "cf.",
            "approx.",
            "ca.",
            "c.",
            "gen.",
            "col.",
            "lt.",
            "sgt.",
            "capt.",
            "rev.",
            "hon.",
            "sen.",
            "rep.",
            "gov.",
            "pres.",
        }
    ),
)

_PROFILES: dict[str, LanguageProfile] = {
    "en": _ENGLISH,
    "simple": _ENGLISH,
    "bg": LanguageProfile(
        disambiguation_templates=_ENGLISH.disambiguation_templates | {"пояснение", "многозначност"},
        disambiguation_title_suffixes=("(пояснение)", "(disambiguation)"),
        boilerplate_sections=frozenset(
            {
                "източници",
                "външни препратки",
                "вижте също",
                "бележки",
                "литература",
                "библиография",
                "използвана литература",
                "допълнителна литература",
            }
        ),
        # "г." (година), "в." (век), "лв.", "др." are left out on purpose: they often do end a sentence.
        non_final_abbreviations=frozenset(
            {
                "т.е.",
                "т.нар.",
                "напр.",
                "вж.",
                "проф.",
                "доц.",
                "акад.",
                "ок.",
                "ул.",
                "бул.",
                "гр.",
                "с.",
                "св.",
                "ген.",
                "полк.",
                "кап.",
                "ст.н.с.",
                "н.с.",
                "чл.",
                "ал.",
                "т.",
                "стр.",
                "кв.",
                "пл.",
                "р.",
                "о.",
                "им.",
                "вкл.",
                "г-н",
                "г-жа",
                "д-р",
            }
        ),
    ),
}


def validate_language(code: str) -> str:
    """Return `code` normalised (lower case) or raise UnknownLanguageError with a hint."""
    normalised = code.strip().lower().replace("_", "-")
    if normalised in WIKIPEDIA_ONLY_CODES:
        return normalised
    if len(normalised) == 2 and pycountry.languages.get(alpha_2=normalised) is not None:
        return normalised
    if len(normalised) == 3 and pycountry.languages.get(alpha_3=normalised) is not None:
        return normalised
    hint = ""
    try:
        match = pycountry.languages.lookup(code.strip())
        hint = f" Did you mean '{getattr(match, 'alpha_2', match.alpha_3)}' ({match.name})?"
    except LookupError:
        pass
    raise UnknownLanguageError(
        f"Unknown language code {code!r}: expected a Wikipedia or ISO 639 code such as 'bg', 'en', 'he'.{hint}"
    )


def language_profile(code: str) -> LanguageProfile:
    """The profile for a validated code, or the generic (English-named) one."""
    return _PROFILES.get(code, _ENGLISH)
