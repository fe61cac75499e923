"""Corpora for LLM2Vec training from Wikipedia dumps or plain text.

Build (also `lm2vec data wiki|text`):
    build_wiki_corpus("bgwiki-latest-pages-articles.xml.bz2", WikiConfig(lang="bg"), "corpus/bg")
    build_text_corpus("my_texts.jsonl", TextConfig(lang="bg"), "corpus/mine")
Read, for the trainers (`lm2vec.data.readers` says what each kind of text is in each kind of file):
    load_corpus("corpus/bg", kind="paragraphs", split="train")   # MNTP
    load_corpus("corpus/bg", kind="sentences", split="validation")  # SimCSE
    load_texts("my_texts.txt", "sentences")  # a text a line, a .jsonl, or a corpus
"""

from lm2vec.data.config import CorpusConfig, TextConfig, WikiConfig
from lm2vec.data.corpus import corpus_files, is_corpus, load_corpus
from lm2vec.data.errors import DataError, DumpError, OutputDirError, UnknownLanguageError
from lm2vec.data.languages import validate_language
from lm2vec.data.pipeline import build_corpus, build_text_corpus, build_wiki_corpus
from lm2vec.data.readers import load_texts
from lm2vec.data.sentences import SentenceSplitter, count_words
from lm2vec.data.shards import Counts, Manifest

__all__ = [
    "CorpusConfig",
    "Counts",
    "DataError",
    "DumpError",
    "Manifest",
    "OutputDirError",
    "SentenceSplitter",
    "TextConfig",
    "UnknownLanguageError",
    "WikiConfig",
    "build_corpus",
    "build_text_corpus",
    "build_wiki_corpus",
    "corpus_files",
    "count_words",
    "is_corpus",
    "load_corpus",
    "load_texts",
    "validate_language",
]
