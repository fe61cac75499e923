"""lm2vec.data building blocks on hand-written input: sentence splitting, wikitext cleaning, dedup, config."""

from __future__ import annotations

import pytest

from lm2vec.data import SentenceSplitter, UnknownLanguageError, WikiConfig, count_words, validate_language
from lm2vec.data.dedup import NearDuplicateKeys, SeenFilter, exact_key, lsh_bands
from lm2vec.data.dump import detect_compression, detect_encoding
from lm2vec.data.languages import language_profile
from lm2vec.data.pipeline import in_validation
from lm2vec.data.wikitext import WikitextCleaner, has_markup_residue, is_disambiguation

BULGARIAN_CASES = [
    # Abbreviations inside a sentence: "г.", "т.е.", "напр.", "т.нар.", titles, "ок." before a number.
    ("Роден е през 1850 г. в Габрово. Там учи.", ["Роден е през 1850 г. в Габрово.", "Там учи."]),
    ("Това е т.е. пример, напр. тук. Това е т. е. друг.", ["Това е т.е. пример, напр. тук.", "Това е т. е. друг."]),
    ("Това е т.нар. Златен век. Той трае дълго.", ["Това е т.нар. Златен век.", "Той трае дълго."]),
    ("Проф. Иванов и доц. Петров дойдоха. Акад. Попов не.", ["Проф. Иванов и доц. Петров дойдоха.", "Акад. Попов не."]),
    ("Живее на ул. Раковски в гр. София. Там умира.", ["Живее на ул. Раковски в гр. София.", "Там умира."]),
    ("Населението е ок. 5000 души. Площта е 30 кв. км.", ["Населението е ок. 5000 души.", "Площта е 30 кв. км."]),
    ("Той каза: „Ще дойда.“ И дойде.", ["Той каза: „Ще дойда.“", "И дойде."]),
    ("Ст.н.с. Петров и акад. Попов. Край на текста.", ["Ст.н.с. Петров и акад. Попов.", "Край на текста."]),
    ("Какво? Нищо! Добре.", ["Какво?", "Нищо!", "Добре."]),
    # Latin script inside Bulgarian text.
    ("Компанията Microsoft Corp. е в САЩ. Windows е неин продукт.", None),
]
ENGLISH_CASES = [
    ("Mr. Brown met Ms. Green at 10 a.m. They talked.", ["Mr. Brown met Ms. Green at 10 a.m.", "They talked."]),
    (
        "See Fig. 3 for details. The U.K. and the U.S. agreed.",
        ["See Fig. 3 for details.", "The U.K. and the U.S. agreed."],
    ),
    ("It was e.g. good. Dr. Smith agreed, i.e. he nodded.", ["It was e.g. good.", "Dr. Smith agreed, i.e. he nodded."]),
    ("He moved to D.C. in 1990. iPhone sales grew.", ["He moved to D.C. in 1990.", "iPhone sales grew."]),
    ('"Stop!" he said. She did.', ['"Stop!" he said.', "She did."]),
]


@pytest.mark.parametrize(("text", "expected"), BULGARIAN_CASES)
def test_bulgarian_sentences(text: str, expected: list[str] | None) -> None:
    sentences = SentenceSplitter("bg").split(text)
    if expected is None:  # mixed script: only the true boundary
        assert len(sentences) == 2 and sentences[1].startswith("Windows")
    else:
        assert sentences == expected


@pytest.mark.parametrize(("text", "expected"), ENGLISH_CASES)
def test_english_sentences(text: str, expected: list[str]) -> None:
    assert SentenceSplitter("en").split(text) == expected


def test_splitting_keeps_every_word() -> None:
    text = "Първо изречение, т.е. начало. Второ изречение с ул. „Шипка“ № 5! Трето? Да."
    assert " ".join(SentenceSplitter("bg").split(text)).split() == text.split()


def test_count_words_counts_unspaced_scripts_by_character() -> None:
    assert count_words("Това е кратко изречение.") == 4
    assert count_words("東京は日本の首都です。") >= 10


def test_language_codes() -> None:
    assert validate_language("BG") == "bg"
    assert validate_language("zh-min-nan") == "zh-min-nan"
    assert validate_language("ceb") == "ceb"
    with pytest.raises(UnknownLanguageError, match="Did you mean 'bg'"):
        validate_language("bulgarian")
    with pytest.raises(UnknownLanguageError, match="'xx'"):
        WikiConfig(lang="xx")


WIKITEXT = """{{Infobox country|name=Testland|capital=[[Capital City]]}}
'''Testland''' ({{lang-bg|Тестландия}}; {{IPA|ˈtɛst}}) is a [[country]] in [[Europe|southern Europe]].<ref name="a">
{{cite web|url=http://x.org|title=Source}}</ref> It has a <b>long</b> history&nbsp;&amp; culture.<!-- hidden comment -->
[[File:Flag.svg|thumb|The [[flag]] of Testland]]

== History ==
The country was founded in 1900.<ref>Smith, J. (2004). ''A Book''. Publisher.</ref>
See [http://example.org the official site] or http://bare.example.org for more.
{| class="wikitable"
|-
! Year !! Population
|-
| 1900 || 1000
|}
* A short list item
* [[Another item]]

=== Economy ===
Its economy relies on farming and [[wikt:tourism|tourism]] in the summer months.

== References ==
{{reflist}}
* Smith, J. A long citation line that is not prose and must not survive the cleaning step at all.

== External links ==
* [http://example.org Official website]
[[Category:Countries]]
[[de:Testland]]
[[bg:Тестландия]]
"""


@pytest.fixture
def english_cleaner() -> WikitextCleaner:
    return WikitextCleaner(language_profile("en"), {6: "File", 14: "Category"}, drop_boilerplate_sections=True)


def test_wikitext_becomes_plain_paragraphs(english_cleaner: WikitextCleaner) -> None:
    paragraphs = english_cleaner.paragraphs(WIKITEXT)
    assert paragraphs[0] == ("Testland is a country in southern Europe. It has a long history & culture.")
    assert "The country was founded in 1900. See the official site or for more." in paragraphs
    assert "Its economy relies on farming and tourism in the summer months." in paragraphs
    assert "A short list item" in paragraphs and "Another item" in paragraphs  # list items: own paragraphs
    text = "\n".join(paragraphs)
    for gone in (
        "Infobox",
        "cite",
        "Source",
        "flag",
        "Flag.svg",
        "Population",
        "1000",
        "Smith",
        "Official website",
        "Countries",
        "de:",
        "Тестландия",
        "History",
        "hidden",
        "http",
        "'''",
        "{{",
        "[[",
    ):
        assert gone not in text, gone


def test_boilerplate_sections_can_be_kept() -> None:
    cleaner = WikitextCleaner(language_profile("en"), {}, drop_boilerplate_sections=False)
    assert any("long citation line" in paragraph for paragraph in cleaner.paragraphs(WIKITEXT))


def test_localised_namespaces_are_dropped() -> None:
    cleaner = WikitextCleaner(language_profile("bg"), {6: "Файл", 14: "Категория"}, drop_boilerplate_sections=True)
    text = (
        "Текст за [[София|столицата]].[[Файл:Sofia.jpg|мини|Надпис]]\n[[Категория:Градове]]\n== Източници ==\nизточник"
    )
    assert cleaner.paragraphs(text) == ["Текст за столицата."]


def test_disambiguation_pages() -> None:
    english, bulgarian = language_profile("en"), language_profile("bg")
    assert is_disambiguation("Mercury", "'''Mercury''' may refer to:\n{{Disambiguation}}", english)
    assert is_disambiguation("Mercury", "{{disambig|geo}}", english)
    assert is_disambiguation("Aberdeen (disambiguation)", "text", english)
    assert is_disambiguation("Меркурий", "{{Пояснение}}", bulgarian)
    assert not is_disambiguation("Mercury", "{{Infobox planet}} A planet.", english)


def test_markup_residue_is_detected() -> None:
    assert has_markup_residue("broken {{template")
    assert has_markup_residue("a <span style=x> tag")
    assert not has_markup_residue("Plain text, with (brackets) and 3 < 4.")


def test_normalised_hash_catches_trivial_copies() -> None:
    assert exact_key("The cat, sat. 1999") == exact_key("the CAT sat 2001")
    assert exact_key("The cat sat.") != exact_key("The dog sat.")


def test_near_duplicates_share_a_band_and_different_texts_do_not() -> None:
    keys = NearDuplicateKeys(threshold=0.8)
    base = (
        "Kowale is a village in the administrative district of Gmina Kłodzko, within Kłodzko County, Lower "
        "Silesian Voivodeship, in south-western Poland, lying about ten kilometres east of the town."
    )
    variant = base.replace("Kowale", "Kowalewo")
    other = "Anarchism is a political philosophy that advocates self-governed societies based on voluntary bodies."
    assert set(keys.keys(base)) & set(keys.keys(variant))
    assert not set(keys.keys(base)) & set(keys.keys(other))
    assert keys.keys("too short") == []


def test_seen_filter() -> None:
    seen = SeenFilter(capacity=10_000)
    assert not seen.check_and_add([1, 2])
    assert seen.check_and_add([2, 3])
    assert not seen.check_and_add([4])


def test_seen_filter_grows_past_its_capacity_and_keeps_its_false_positive_rate() -> None:
    """A filter sized for 1,000 keys given 30 times as many: one Bloom filter of that size would call most new keys
    seen; the growing one stays near its 1e-4 rate and takes memory in proportion to the keys."""
    seen = SeenFilter(capacity=1000)
    keys = [(number * 0x9E3779B97F4A7C15) % 2**63 for number in range(30_000)]
    called_seen = sum(seen.check_and_add([key]) for key in keys)
    assert called_seen <= 10  # 3 expected at 1e-4
    assert all(seen.check_and_add([key]) for key in keys)  # nothing forgotten
    empty = SeenFilter(capacity=1000)
    empty.check_and_add([1])
    assert 0 < empty.size_in_bytes < seen.size_in_bytes <= 30 * 8 * empty.size_in_bytes


def test_lsh_bands_are_datasketchs() -> None:
    from datasketch import MinHashLSH

    for num_perm in (64, 128, 256):
        for threshold in (0.3, 0.5, 0.7, 0.8, 0.9):
            lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
            assert lsh_bands(threshold, num_perm) == (lsh.b, lsh.r)


def test_split_is_deterministic_and_close_to_the_fraction() -> None:
    titles = [f"Article {number}" for number in range(20_000)]
    chosen = [title for title in titles if in_validation(title, 0.05)]
    assert chosen == [title for title in titles if in_validation(title, 0.05)]
    assert 0.04 < len(chosen) / len(titles) < 0.06


def test_format_detection() -> None:
    assert detect_compression(b"BZh9") == "bz2" and detect_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert detect_compression(b"<med") == "none"
    assert detect_encoding(b"\xff\xfe<\x00") == "utf-16-le" and detect_encoding(b"<\x00m\x00") == "utf-16-le"
    assert detect_encoding(b"\x00<\x00m") == "utf-16-be" and detect_encoding(b"<med") == "utf-8"


def test_splitting_is_linear_in_the_length_of_an_unsplit_paragraph() -> None:
    """Sentences that start in lower case are joined to the one before: a long paragraph of them used to take
    quadratic time (1/2/4 MB: 0.8/2.3/8.9 s). The minimum of a few timings, against noise from other processes."""
    import time

    splitter = SentenceSplitter("en")
    unit = "the cat sat on the mat. and then it ran away. "

    def seconds(repeats: int) -> float:
        text = unit * repeats
        started = time.perf_counter()
        assert splitter.split(text) == [text.strip()]
        return time.perf_counter() - started

    small = min(seconds(4_000) for _ in range(5))  # about 0.2 MB
    large = min(seconds(64_000) for _ in range(2))  # about 3 MB: linear is 16x the time, quadratic 256x
    assert large < 64 * small, (small, large)
