"""Throughput of `lm2vec data wiki` against wikiextractor on the same dump, in one run.

    .venv/bin/python benchmarks/data.py [--dump PATH] [--workers N]

Default dump: the English sample in the gensim 4.4.0 wheel (a dev dependency). Each tool runs in a
fresh subprocess with N worker processes. Peak memory is the largest sum of PSS (RSS with the pages
that forked workers share counted once) over the process tree, sampled every 50 ms. lm2vec's time is
the pipeline's own (from its manifest), without the ~5 s it takes to import the `lm2vec` package
(torch); the RSS of that import is reported separately.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ENGLISH_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

_LM2VEC_CHILD = """
import json, sys, psutil
from lm2vec.data import WikiConfig, build_wiki_corpus
import_rss = psutil.Process().memory_info().rss
manifest = build_wiki_corpus(sys.argv[1], WikiConfig(lang="en", workers=int(sys.argv[3]), progress=False), sys.argv[2])
print(json.dumps({"elapsed_s": manifest.timing["elapsed_s"], "import_rss": import_rss,
                  "pages": manifest.counts.pages_seen, "articles": manifest.counts.articles_kept,
                  "sentences": manifest.counts.sentences}))
"""


def run_measured(command: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak PSS of the process tree in bytes, and stdout of `command`."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(member.memory_full_info().pss for member in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - started
    stdout = process.stdout.read() if process.stdout else ""
    if process.returncode:
        raise SystemExit(f"{command[:4]} failed with exit code {process.returncode}")
    return wall, peak, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, help="MediaWiki dump (default: gensim's English sample)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    dump = args.dump
    if dump is None:
        spec = importlib.util.find_spec("gensim")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("install the dev extras (pip install -e .[dev]) or pass --dump")
        dump = Path(spec.submodule_search_locations[0]) / "test" / "test_data" / ENGLISH_SAMPLE
    size_mb = dump.stat().st_size / 1e6

    with tempfile.TemporaryDirectory() as scratch:
        _, lm2vec_peak, output = run_measured(
            [sys.executable, "-c", _LM2VEC_CHILD, str(dump), f"{scratch}/lm2vec", str(args.workers)]
        )
        lm2vec = json.loads(output.strip().splitlines()[-1])
        wikiextractor_wall, wikiextractor_peak, _ = run_measured(
            [
                sys.executable,
                "-m",
                "wikiextractor.WikiExtractor",
                str(dump),
                "-o",
                f"{scratch}/wikiextractor",
                "--processes",
                str(args.workers),
                "--json",
                "-q",
            ]
        )

    pages = lm2vec["pages"]
    print(f"dump: {dump.name} ({size_mb:.2f} MB compressed, {pages} pages), {args.workers} worker processes")
    print(f"{'tool':<16}{'seconds':>9}{'pages/s':>10}{'MB/s':>8}{'peak PSS MB':>13}")
    for name, seconds, peak in (
        ("lm2vec data", lm2vec["elapsed_s"], lm2vec_peak),
        ("wikiextractor", wikiextractor_wall, wikiextractor_peak),
    ):
        print(f"{name:<16}{seconds:>9.2f}{pages / seconds:>10.1f}{size_mb / seconds:>8.2f}{peak / 1e6:>13.0f}")
    print(
        f"lm2vec kept {lm2vec['articles']} articles and {lm2vec['sentences']} sentences; "
        f"{lm2vec['import_rss'] / 1e6:.0f} MB of its RSS is the import of the lm2vec package (torch)"
    )


if __name__ == "__main__":
    main()
