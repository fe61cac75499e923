"""The data stage on scripts other than Latin and Cyrillic: Korean (Hangul, spaces between words), Hebrew (an
abjad, right to left), Chinese and Japanese (no spaces). Small hand-written MediaWiki dumps in the style of the
real wikis, through `lm2vec data wiki`."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lm2vec.data import SentenceSplitter, count_words
from lm2vec.data.cli import data_app
from lm2vec.data.sentences import count_chars
from lm2vec.data.shards import Manifest

runner = CliRunner()

# Three short articles each, of four sentences, as a wiki's stubs are: about 125 characters (27 words) of Korean,
# 75 of Chinese, 210 (35 words) of Hebrew. Only the Hebrew ones met `min_article_chars = 200` in plain characters.
KOREAN = {
    "서울특별시": "'''서울특별시'''는 [[대한민국]]의 수도이자 최대 도시이다. 한반도 중서부에 위치하며, [[한강]]이 "
    "도시의 중앙을 가로질러 흐른다. 조선 시대부터 수도였으며, 1394년 태조 이성계가 한양으로 천도하였다. "
    "현재 인구는 약 940만 명으로 추산된다.",
    "부산광역시": "'''부산광역시'''는 대한민국 동남부에 있는 항구 도시이다. 서울 다음으로 인구가 많은 대한민국 "
    "제2의 도시이다. 부산항은 세계적인 컨테이너 항구로 널리 알려져 있다. 해운대 해수욕장은 여름마다 많은 "
    "관광객이 찾는 명소이다.",
    "한글": "'''한글'''은 조선의 제4대 임금인 [[세종대왕]]이 창제한 문자이다. 1443년에 만들어져 1446년에 "
    "훈민정음이라는 이름으로 반포되었다. 자음과 모음을 조합하여 음절 단위로 모아 쓰는 것이 특징이다. 오늘날 "
    "대한민국과 북한에서 공식 문자로 쓰인다.",
}
HEBREW = {
    "ירושלים": "'''ירושלים''' היא בירתה של [[מדינת ישראל]] והעיר הגדולה ביותר בה. העיר שוכנת בהרי יהודה, בין "
    "הים התיכון לים המלח. ירושלים היא עיר קדושה ליהדות, לנצרות ולאסלאם. העיר העתיקה מוקפת חומה שנבנתה במאה "
    "ה-16 בימי סולימאן המפואר.",
    "תל אביב-יפו": "'''תל אביב-יפו''' היא עיר במחוז תל אביב שבמרכז ישראל, על חוף הים התיכון. העיר נוסדה "
    "בשנת 1909 כשכונה עברית ליד העיר יפו. כיום היא המרכז הכלכלי והתרבותי החשוב ביותר של המדינה. העיר הלבנה "
    "שלה הוכרזה כאתר מורשת עולמית.",
    "עברית": "'''עברית''' היא שפה שמית ממשפחת השפות האפרו-אסיאתיות. היא השפה הרשמית של [[מדינת ישראל]] "
    "ומדוברת בפי כתשעה מיליון בני אדם. העברית נכתבת מימין לשמאל באלפבית העברי. במאה ה-19 היא חודשה כשפה "
    "מדוברת לאחר מאות שנים.",
}

CHINESE = {
    "北京市": "'''北京市'''是[[中华人民共和国]]的首都，也是全国的政治和文化中心。北京位于华北平原的北部，背靠燕山山脉。"
    "北京有三千多年的建城史，曾是元、明、清三代的都城。故宫和长城都是世界文化遗产。",
    "长江": "'''长江'''是中国第一长河，全长约六千三百公里。它发源于青藏高原的唐古拉山脉，向东流入东海。"
    "长江流域是中国经济最发达的地区之一。三峡大坝是世界上最大的水力发电站。",
    "汉字": "'''汉字'''是记录汉语的文字，已有三千多年的历史。现代汉字分为简体字和繁体字两种。"
    "中国大陆和新加坡使用简体字，台湾和香港使用繁体字。汉字也曾传入日本、朝鲜和越南。",
}


def write_dump(path: Path, dbname: str, articles: dict[str, str]) -> Path:
    pages = "".join(
        f"<page><title>{escape(title)}</title><ns>0</ns><id>{number}</id><revision><id>{number}0</id>"
        f'<text xml:space="preserve">{escape(text)}</text></revision></page>\n'
        for number, (title, text) in enumerate(articles.items(), start=1)
    )
    path.write_text(
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="x">\n'
        f"<siteinfo><sitename>Wikipedia</sitename><dbname>{dbname}</dbname><namespaces>"
        '<namespace key="0" case="first-letter" /></namespaces></siteinfo>\n'
        f"{pages}</mediawiki>\n",
        encoding="utf-8",
    )
    return path


def build(tmp_path: Path, lang: str, articles: dict[str, str]) -> tuple[Manifest, dict[str, list[str]]]:
    dump = write_dump(tmp_path / f"{lang}wiki.xml", f"{lang}wiki", articles)
    out = tmp_path / lang
    command = [
        "wiki",
        str(dump),
        "--lang",
        lang,
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
        "--validation-fraction",
        "0",
    ]
    result = runner.invoke(data_app, command)
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(out)
    texts = {
        kind: [text for path in manifest.shard_paths(kind, "train") for text in pq.read_table(out / path)["text"]]
        for kind in ("paragraphs", "sentences")
    }
    return manifest, {kind: [str(text) for text in column] for kind, column in texts.items()}


@pytest.mark.parametrize(("lang", "articles"), [("ko", KOREAN), ("he", HEBREW), ("zh", CHINESE)])
def test_short_articles_of_every_script_are_kept_and_split_into_sentences(
    tmp_path: Path, lang: str, articles: dict[str, str]
) -> None:
    manifest, texts = build(tmp_path, lang, articles)
    assert manifest.counts.articles_kept == 3 and manifest.counts.skipped == {}
    assert len(texts["paragraphs"]) == 3
    expected = [
        sentence.replace("'''", "").replace("[[", "").replace("]]", "")
        for text in articles.values()
        for sentence in SentenceSplitter(lang).split(text)
    ]
    assert len(expected) == 12 and texts["sentences"] == expected


def test_korean_and_hebrew_sentence_boundaries() -> None:
    assert SentenceSplitter("ko").split(KOREAN["한글"])[:2] == [
        "'''한글'''은 조선의 제4대 임금인 [[세종대왕]]이 창제한 문자이다.",
        "1443년에 만들어져 1446년에 훈민정음이라는 이름으로 반포되었다.",
    ]
    assert (
        SentenceSplitter("he").split(HEBREW["ירושלים"])[-1]
        == "העיר העתיקה מוקפת חומה שנבנתה במאה ה-16 בימי סולימאן המפואר."
    )
    assert SentenceSplitter("he").split('ד"ר כהן כתב על כך בשנת 1967. האם זה נכון? כן!') == [
        'ד"ר כהן כתב על כך בשנת 1967.',
        "האם זה נכון?",
        "כן!",
    ]


@pytest.mark.parametrize(
    ("lang", "text", "expected"),
    [
        (
            "zh",
            "北京是中华人民共和国的首都。它位于华北平原的北部！我喜欢python编程。你呢？",
            ["北京是中华人民共和国的首都。", "它位于华北平原的北部！", "我喜欢python编程。", "你呢？"],
        ),
        (
            "ja",
            "東京は日本の首都である。人口は約1400万人だ。そうですか？",
            ["東京は日本の首都である。", "人口は約1400万人だ。", "そうですか？"],
        ),
    ],
)
def test_unspaced_scripts_split_after_every_full_stop(lang: str, text: str, expected: list[str]) -> None:
    assert SentenceSplitter(lang).split(text) == expected


def test_article_length_counts_a_syllable_character_as_three_letters() -> None:
    for text in ("Seoul is the capital.", "Сеул е столица.", "ירושלים היא בירת ישראל."):
        assert count_chars(text) == len(text)
    assert count_chars("서울은 수도이다.") == 3 * 7 + 2  # seven Hangul syllables, a space and a full stop
    assert count_chars("東京は首都。") == 3 * 5 + 1
    assert count_words("서울은 대한민국의 수도이다.") == 3  # Korean writes spaces between words
    assert count_words("北京是首都。") == 6  # Chinese does not: five characters and the full stop
