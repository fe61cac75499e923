"""Bulgarian training text from Debian's translation catalogues (`${debian_bg}`): the cleaning and deduplication
on small hand-written inputs, and the real corpus, which must hold none of the evaluation strings."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lm2vec.data import catalogues, packaged
from lm2vec.data.catalogues import catalogue_documents, clean_ui_text, eval_keys, fluent_messages, fold
from lm2vec.data.errors import DataError
from tests.test_eval import write_mo


# --- cleaning ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<b>Файлът</b> беше записан на диска успешно.", "Файлът беше записан на диска успешно."),
        ("Търсене &amp; замяна на текст в документа", "Търсене & замяна на текст в документа"),
        ("_Отваряне на последния файл отново", "Отваряне на последния файл отново"),
        ("~Запис на документа като шаблон", "Запис на документа като шаблон"),
        ("&Изтриване на всички избрани писма", "Изтриване на всички избрани писма"),
        ("файлът „%s“ не може да бъде отворен", "файлът не може да бъде отворен"),
        ("добавката „{ $name }“ беше премахната успешно", "добавката беше премахната успешно"),
        ("Готово е  на  100%% , без грешки", "Готово е на 100%, без грешки"),
        ("Изберете\nнова папка за изтеглянията си", "Изберете нова папка за изтеглянията си"),
        ("Рестартирайте Firefox, за да приложите промените.", "Рестартирайте Firefox, за да приложите промените."),
    ],
)
def test_clean_ui_text_unwraps_markup_accelerators_and_quoted_placeholders(raw: str, clean: str) -> None:
    assert clean_ui_text(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "Отваряне на файл",  # three words
        "Open the selected file now",  # no Cyrillic
        "Помощ за VLC media player",  # more Latin than Cyrillic
        "%d файла бяха изтрити успешно",  # a bare placeholder would leave a hole
        "Последна синхронизация днес в { $time }",
        "неуспешно прочитане на данните от „%s“",  # a quoted one after a preposition too
        "„%s“: неправилен указател за обект „%s“",  # more than one
        "Копиране от %1$S в %2$S на диска",
        "Папка;Файл;Документ;Изображение;",  # a keyword list
        "  -a, --all       не пропуска записите, започващи с „.“",  # an option table
        "git notes [--ref УКАЗАТЕЛ] edit [ОБЕКТ] | list",  # a command line
        "<b></b>",
        "",
    ],
)
def test_clean_ui_text_rejects_what_is_not_prose(raw: str) -> None:
    assert clean_ui_text(raw) is None


def test_documents_are_deduplicated_folded_and_never_hold_an_evaluation_string() -> None:
    exclude = eval_keys(["Изтриване на ~избраните редове сега", "Запазете промените. Затворете прозореца"])
    strings = [
        "Записът на файла беше успешен днес",
        "записът  на ФАЙЛА беше успешен днес",  # the same, folded: dropped
        "<i>Записът на файла</i> беше успешен днес",  # the same once the markup is gone
        "Изтриване на избраните редове сега",  # an evaluation string (its accelerator aside)
        "изтриване на _избраните редове сега",
        "Готово е. Изтриване на избраните редове сега.",  # holds one as a sentence: dropped
        "Запазете промените, преди да излезете от програмата.",
        "Затворете прозореца на програмата сега",
        "Първи абзац от помощта на програмата.\n\nВтори абзац от помощта на програмата.",
        "Кратко",
    ]
    documents = catalogue_documents(strings, exclude)
    assert documents == [
        "Записът на файла беше успешен днес",
        "Запазете промените, преди да излезете от програмата.",
        "Затворете прозореца на програмата сега",
        "Първи абзац от помощта на програмата.",
        "Втори абзац от помощта на програмата.",
    ]
    assert not {fold(d) for d in documents} & exclude
    assert "запазете промените" in exclude and "затворете прозореца" in exclude


# --- readers ----------------------------------------------------------------------------------------------------
FTL = """\
# A comment
-brand-short-name = Firefox
restart-message = Рестартирайте { -brand-short-name }, за да приложите
    промените в настройките.
tabs-count =
    { $count ->
        [one] Един раздел
       *[other] { $count } раздела
    }
save-button =
    .label = Запазване на всички промени сега
    .accesskey = З
"""


def test_fluent_messages_join_lines_keep_attributes_and_skip_selectors() -> None:
    messages = dict(fluent_messages(FTL))
    assert messages["-brand-short-name"] == "Firefox"
    restart = "Рестартирайте { -brand-short-name }, за да приложите промените в настройките."
    assert messages["restart-message"] == restart
    assert messages["save-button.label"] == "Запазване на всички промени сега"
    assert "tabs-count" not in messages


def test_xpi_and_mo_strings(tmp_path: Path) -> None:
    pack = tmp_path / "langpack-bg.xpi"
    with zipfile.ZipFile(pack, "w") as archive:
        archive.writestr("localization/bg/browser/app.ftl", FTL)
        archive.writestr("chrome/bg/locale/bg/a.properties", "# c\nkey = Първа форма на текста;Втора форма\n")
        archive.writestr("chrome/bg/locale/bg/b.dtd", '<!ENTITY x.label "Текст от старите файлове">\n')
        archive.writestr("manifest.json", "{}")
    strings = catalogues.xpi_strings(pack)
    assert "Рестартирайте Firefox, за да приложите промените в настройките." in strings
    assert {"Първа форма на текста", "Втора форма", "Текст от старите файлове"} <= set(strings)
    assert "Firefox" not in strings  # terms name things; they are not text of their own
    mo = write_mo(tmp_path / "git.mo", {"ctx\x04Open the file": "Отваряне на файла", "Same": "Same"})
    assert list(catalogues.mo_translations(mo)) == [("Open the file", "Отваряне на файла")]


# --- the corpus -------------------------------------------------------------------------------------------------
def test_translations_text_builds_once_without_evaluation_strings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LM2VEC_CACHE", str(tmp_path / "cache"))
    write_mo(tmp_path / "libreoffice" / "sw.mo", {"Delete the selected rows now": "Изтриване на избраните редове сега"})
    sources = write_mo(tmp_path / "app.mo", {
        "a": "Изтриване на избраните редове сега",
        "b": "Записът на файла беше успешен днес",
        "c": "записът на файла беше успешен днес",
        "d": "Отваряне",
    })  # fmt: skip
    calls = []

    def files(package: str, wanted: list[str]) -> list[Path]:
        calls.append(package)
        return [sources for _ in wanted]

    monkeypatch.setattr(packaged, "TRANSLATIONS", (("app-l10n-{lang}", "usr/share/locale/{lang}/app.mo"),))
    monkeypatch.setattr(packaged, "debian_files", files)
    monkeypatch.setattr(packaged, "libreoffice_messages", lambda lang: tmp_path / "libreoffice")
    corpus = packaged.expand_path("${debian_bg}")
    assert corpus.read_text(encoding="utf-8") == "Записът на файла беше успешен днес\n"
    assert calls == ["app-l10n-bg"] and corpus.parent == tmp_path / "cache" / "eval-data"
    assert packaged.translations_text("bg") == corpus and calls == ["app-l10n-bg"]  # cached
    assert [p.name for p in corpus.parent.iterdir()] == [corpus.name]  # no temporary file left


def test_the_real_debian_bg_corpus() -> None:
    """Builds `${debian_bg}` from Debian's packages (about 35 MB of downloads, less where some are installed)."""
    from lm2vec.evaluation.datasets import mo_prefix_triplets
    from lm2vec.evaluation.readers import read_mo_pairs

    try:
        corpus = packaged.translations_text("bg")
        libreoffice = packaged.libreoffice_messages("bg")
    except DataError as error:
        pytest.skip(f"Debian's translation packages could not be fetched: {error}")
    documents = corpus.read_text(encoding="utf-8").strip().split("\n\n")
    keys = [fold(document) for document in documents]
    assert len(set(keys)) == len(keys) >= 10_000
    assert sum(len(document.split()) for document in documents) >= 100_000
    assert all(catalogues.CYRILLIC.search(document) and "\n" not in document for document in documents)
    anchors, similar, dissimilar = mo_prefix_triplets(libreoffice)
    evaluation = [text for pair in read_mo_pairs(libreoffice) for text in pair] + anchors + similar + dissimilar
    assert len(evaluation) > 1000
    assert not set(keys) & {fold(text) for text in evaluation}
