"""Bulgarian training text from Debian's translation catalogues (`${debian_bg}`): the cleaning and deduplication
on small hand-written inputs, and the real corpus, which must hold none of the evaluation strings."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
def test_translations_text_is_built_once_per_package_versions_without_evaluation_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LM2VEC_CACHE", str(tmp_path / "cache"))
    write_mo(tmp_path / "libreoffice" / "sw.mo", {"Delete the selected rows now": "Изтриване на избраните редове сега"})
    sources = write_mo(
        tmp_path / "app.mo",
        {
            "a": "Изтриване на избраните редове сега",
            "b": "Записът на файла беше успешен днес",
            "c": "записът на файла беше успешен днес",
            "d": "Отваряне",
        },
    )
    libreoffice = {"package": "libreoffice-l10n-bg", "version": "4:7.4.7-1", "deb_sha256": "c0ffee"}

    def files(package: str, wanted: list[str], version: str | None = None) -> tuple[list[Path], dict]:
        return [sources for _ in wanted], {"package": package, "version": version or "1.0", "deb_sha256": "f00d"}

    builds = []
    evaluation_strings = packaged.evaluation_strings
    monkeypatch.setattr(packaged, "TRANSLATIONS", (("app-l10n-{lang}", "usr/share/locale/{lang}/app.mo"),))
    monkeypatch.setattr(packaged, "debian_files", files)
    monkeypatch.setattr(
        packaged, "debian_package", lambda package, wanted, version: (tmp_path / "libreoffice", libreoffice)
    )
    monkeypatch.setattr(
        packaged, "evaluation_strings", lambda folder: builds.append(folder) or evaluation_strings(folder)
    )
    corpus = packaged.expand_path("${debian_bg}")
    assert corpus.read_text(encoding="utf-8") == "Записът на файла беше успешен днес\n"
    assert builds == [tmp_path / "libreoffice"] and corpus.parent == tmp_path / "cache" / "eval-data"
    assert packaged.translations_text("bg") == corpus and len(builds) == 1  # cached
    origin = {"kind": "debian", "packages": [libreoffice, files("app-l10n-bg", [])[1]]}
    assert packaged.input_origin(corpus) == origin
    assert sorted(p.name for p in corpus.parent.iterdir()) == [
        corpus.name,
        f"{corpus.name}.origin.json",
    ]  # no temporary
    pinned = packaged.expand_path("${debian_bg}", pins={"app-l10n-bg": "0.9"})  # another version, another text
    assert pinned != corpus and len(builds) == 2
    assert packaged.input_origin(pinned)["packages"][1]["version"] == "0.9"


def test_the_real_debian_bg_corpus() -> None:
    """Builds `${debian_bg}` from Debian's packages (about 35 MB of downloads, less where some are installed)."""
    from lm2vec.data.formats import read_mo_pairs
    from lm2vec.evaluation.datasets import mo_prefix_triplets

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


# --- versions: recorded, pinned -----------------------------------------------------------------------------------
FAKE_APT_GET = """#!/bin/sh
# apt-get download NAME[=VERSION], from the test's archive: NAME.current names the version served unpinned.
echo "$*" >> "{archive}/calls"
request=$2; name=${{request%%=*}}; version=${{request#*=}}
[ "$version" = "$request" ] && version=$(cat "{archive}/$name.current")
deb="{archive}/${{name}}_$version.deb"
[ -f "$deb" ] || {{ echo "E: Version '$version' for '$name' was not found" >&2; exit 100; }}
cp "$deb" .
"""


class FakeArchive:
    """A Debian archive of the test's own, served by an `apt-get` script first on PATH; the real dpkg-deb builds
    and unpacks its packages."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        (folder / "bin").mkdir()
        apt_get = folder / "bin" / "apt-get"
        apt_get.write_text(FAKE_APT_GET.format(archive=folder))
        apt_get.chmod(0o755)

    def publish(self, package: str, version: str, files: dict[str, str], current: bool = True) -> str:
        """Build PACKAGE_VERSION.deb holding `files` (path inside the package: text); its SHA-256."""
        root = self.folder / f"{package}-{version}"
        for path, text in {**files, f"usr/share/doc/{package}/copyright": "test\n"}.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text, encoding="utf-8")
        (root / "DEBIAN").mkdir()
        (root / "DEBIAN" / "control").write_text(
            f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
        )
        deb = self.folder / f"{package}_{version}.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True
        )
        if current:
            (self.folder / f"{package}.current").write_text(version)
        return hashlib.sha256(deb.read_bytes()).hexdigest()

    @property
    def calls(self) -> list[str]:
        calls = self.folder / "calls"
        return calls.read_text().splitlines() if calls.is_file() else []


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeArchive:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb builds the test's packages")
    archive = FakeArchive(tmp_path / "archive")
    monkeypatch.setenv("PATH", f"{archive.folder / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LM2VEC_CACHE", str(tmp_path / "cache"))
    return archive


def test_a_fetched_package_is_recorded_and_a_pin_fetches_its_version(archive: FakeArchive) -> None:
    wanted = ["usr/share/lm2vec-test/text"]
    old = archive.publish("lm2vec-test-l10n", "1:1.0-1", {wanted[0]: "old"}, current=False)
    new = archive.publish("lm2vec-test-l10n", "1:2.0-1", {wanted[0]: "new"})

    paths, record = packaged.debian_files("lm2vec-test-l10n", wanted)
    assert paths[0].read_text() == "new"
    assert record == {"package": "lm2vec-test-l10n", "version": "1:2.0-1", "deb_sha256": new}
    entry = paths[0].parents[3]
    assert json.loads((entry / packaged.DEBIAN_RECORD).read_text()) == record  # the cache entry keeps it

    paths, record = packaged.debian_files("lm2vec-test-l10n", wanted, version="1:1.0-1")
    assert paths[0].read_text() == "old" and record["version"] == "1:1.0-1" and record["deb_sha256"] == old
    assert packaged.debian_files("lm2vec-test-l10n", wanted, version="1:1.0-1")[1] == record
    assert packaged.debian_files("lm2vec-test-l10n", wanted)[1] == record  # unpinned: what the cache holds
    assert archive.calls == ["download lm2vec-test-l10n", "download lm2vec-test-l10n=1:1.0-1"]

    with pytest.raises(DataError, match=r"`apt-get download lm2vec-test-l10n=1:3.0-1` failed \(E: Version") as error:
        packaged.debian_files("lm2vec-test-l10n", wanted, version="1:3.0-1")
    assert "do not serve this pinned version" in str(error.value)
    assert paths[0].read_text() == "old"  # the cache entry is untouched


def test_installed_files_are_recorded_by_their_hashes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copyright_file = "usr/share/common-licenses/GPL-3"  # base-files: on every Debian system
    if not (Path("/") / copyright_file).is_file():
        pytest.skip("not a Debian system")
    paths, record = packaged.debian_files("base-files", [copyright_file])
    assert paths == [Path("/") / copyright_file] and record["installed"] is True
    assert record["files"] == {copyright_file: hashlib.sha256(paths[0].read_bytes()).hexdigest()}


@pytest.mark.parametrize(
    ("value", "pins"),
    [
        ({"thunderbird-l10n-bg": "1:140.12.0esr-1~deb12u1"}, {"thunderbird-l10n-bg": "1:140.12.0esr-1~deb12u1"}),
        ("fortunes-bg=1.4, libglib2.0-data=2.74.6-2", {"fortunes-bg": "1.4", "libglib2.0-data": "2.74.6-2"}),
        ("", {}),  # --set data.pins= : what the apt sources serve now
    ],
)
def test_pins_from_a_recipe_table_or_the_command_line(value: object, pins: dict[str, str]) -> None:
    assert packaged.debian_pins(value) == pins


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fortunes-bg:1.4", "write package=version"),
        (["fortunes-bg"], "must be a table"),
        ({"Fortunes BG": "1.4"}, "not a Debian package name and version: Fortunes BG"),
        ({"fortunes-bg": 1.4}, "not a Debian package name and version: fortunes-bg = 1.4"),
    ],
)
def test_bad_pins_are_named(value: object, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        packaged.debian_pins(value)


def test_origins_of_inputs(tmp_path: Path) -> None:
    gensim = packaged.expand_path("${gensim_data}/lee.cor")
    version = importlib.metadata.version("gensim")
    assert packaged.input_origin(gensim) == {"kind": "pypi", "distribution": "gensim", "version": version}
    (tmp_path / "mine.txt").write_text("text")
    assert packaged.input_origin(tmp_path / "mine.txt") == {"kind": "file"}


FORTUNES = {"usr/share/games/fortunes/bg/proverbs": "Който копае гроб другиму, сам пада в него и не излиза.\n%\n"}
PINNED_RECIPE = """
[data]
inputs = ["${{fortunes_bg}}"]
lang = "bg"
min_article_chars = 10
workers = 1
progress = false
{pins}
"""


def test_processes_that_want_a_package_at_once_fetch_it_once(archive: FakeArchive) -> None:
    """torchrun's ranks or test workers expanding the same `${...}` at once: one fetches, the others wait and read
    its cache entry (the fetch replaces the entry through a temporary sibling, which another fetch would delete)."""
    wanted = ["usr/share/lm2vec-test/text"]
    archive.publish("lm2vec-test-l10n", "1:2.0-1", {wanted[0]: "new"})
    apt_get = archive.folder / "bin" / "apt-get"
    apt_get.write_text(apt_get.read_text().replace("\n", "\nsleep 0.5\n", 1))  # slow enough for all to overlap
    with ThreadPoolExecutor(3) as pool:
        fetched = list(pool.map(lambda _: packaged.debian_files("lm2vec-test-l10n", wanted), range(3)))
    assert archive.calls == ["download lm2vec-test-l10n"]
    assert [paths[0].read_text() for paths, _ in fetched] == ["new"] * 3


def test_a_recipe_pins_debian_versions_and_the_manifest_records_them(archive: FakeArchive, tmp_path: Path) -> None:
    from lm2vec.cli import app

    old = archive.publish("fortunes-bg", "0.9", FORTUNES, current=False)
    archive.publish("fortunes-bg", "1.4", {"usr/share/games/fortunes/bg/proverbs": "Друго.\n"})
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(PINNED_RECIPE.format(pins='pins = {"fortunes-bg" = "0.9"}'))
    run = ["run", str(recipe), "--out", str(tmp_path / "run"), "--until", "data"]
    result = CliRunner().invoke(app, run)
    assert result.exit_code == 0, result.output
    manifest = json.loads(next((tmp_path / "run" / "data").glob("00-fortunes-bg-*/manifest.json")).read_text())
    expected = {"package": "fortunes-bg", "version": "0.9", "deb_sha256": old}
    assert manifest["source"]["origin"] == {"kind": "debian", "packages": [expected]}
    assert manifest["counts"]["articles_kept"] == 1

    recipe.write_text(PINNED_RECIPE.format(pins='pins = {"fortunes-bg" = "0.8"}'))
    result = CliRunner().invoke(app, [*run, "--out", str(tmp_path / "second")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert "`apt-get download fortunes-bg=0.8` failed" in result.output, result.output
    assert not (tmp_path / "second").exists()  # found while planning, before any work
    result = CliRunner().invoke(app, [*run, "--out", str(tmp_path / "second"), "--set", "data.pins="])
    assert result.exit_code == 0, result.output
    manifest = json.loads(next((tmp_path / "second" / "data").glob("00-fortunes-bg-*/manifest.json")).read_text())
    assert [package["version"] for package in manifest["source"]["origin"]["packages"]] == ["0.9"]  # the cached one

    recipe.write_text(PINNED_RECIPE.format(pins='pins = {"fortunes-bg" = "0.9", "fortune-bg" = "1.0"}'))
    result = CliRunner().invoke(app, [*run, "--out", str(tmp_path / "third")])
    assert result.exit_code == 2 and "[data] pins fortune-bg: no input is built from them" in result.output
    assert "read the Debian packages fortunes-bg." in result.output
