"""Throughput of `lm2vec data merge` by worker count, side by side, on a synthetic multistream dump.

    .venv/bin/python benchmarks/data_merge.py [--copies C] [--parts P] [--workers 1 2] [--repeats R] [--baseline SRC]

The dump: the pages of the English sample in gensim 4.4.0's wheel, C times; each copy has titles and ids of its own
and every lowercase word of 4 or more letters changed (a suffix of the copy's), so that its paragraphs are new to the
deduplication, as a whole dump's are. It is written as Wikimedia writes a multistream dump, with its index
(tests/test_data_dumps.py's writer), and built into P parts (`lm2vec data wiki --part K/P`, not timed). Then each
worker count merges the parts R times in fresh processes (`python -m lm2vec data merge ... --workers W`), the order
alternating between rounds. The table gives medians of the whole command's wall seconds, the CPU seconds of its
process tree, the paragraphs read per second and the peak PSS of the tree; the ratio of each count's seconds to the
first count's within each round (median); and whether every merge wrote the same rows. `--baseline SRC` adds, in each
round, a merge by the `lm2vec` package in the folder SRC with its default options, for a before/after: `git archive
REV src | tar -x -C /tmp/base`, SRC = /tmp/base/src.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from data import run_measured  # noqa: E402

_LONG_WORD = re.compile(r"(?<![&;])\b[a-z]{4,}\b")  # not an XML entity's name
_TEXT = re.compile(r"(<text[^>]*>)(.*?)(</text>)", re.DOTALL)


def copied_page(page: str, copy: int) -> str:
    """`page` as copy number `copy` (0: itself): ids shifted, a suffix on its title and its long lowercase words."""
    suffix = "".join(chr(ord("a") + int(digit)) for digit in str(copy)) if copy else ""
    page = re.sub(r"<id>(\d+)</id>", lambda found: f"<id>{int(found[1]) + copy * 10**7}</id>", page)
    page = re.sub(r"<title>(.*?)</title>", lambda found: f"<title>{found[1]}{suffix}</title>", page)
    with_suffix = lambda text: _LONG_WORD.sub(lambda word: word[0] + suffix, text)  # noqa: E731
    return _TEXT.sub(lambda found: found[1] + with_suffix(found[2]) + found[3], page)


def copied_pages(copies: int) -> list[str]:
    """The English sample's <page> elements `copies` times (`copied_page`)."""
    from tests.test_data_dumps import ENGLISH_SAMPLE, gensim_sample

    xml = bz2.decompress(gensim_sample(ENGLISH_SAMPLE).read_bytes()).decode()
    pages = ["  <page>" + block.split("</page>")[0] + "</page>\n" for block in xml.split("  <page>")[1:]]
    return [copied_page(page, copy) for copy in range(copies) for page in pages]


def build_parts(folder: Path, copies: int, parts: int) -> list[Path]:
    from lm2vec.data import build_wiki_corpus
    from tests.test_data_dumps import config, write_multistream

    pages = copied_pages(copies)
    articles = sum("<redirect" not in page for page in pages)
    dump, index = write_multistream(folder, articles=articles, per_stream=100, pages=pages)
    built = []
    for number in range(1, parts + 1):
        out = folder / f"part{number}"
        options = {"index": str(index), "part": f"{number}/{parts}", "workers": 0}
        build_wiki_corpus(dump, config("en", **options), out)
        built.append(out)
    return built


def rows_digest(folder: Path) -> str:
    from tests.test_data_dumps import rows
    from tests.test_data_merge import pairs

    digest = hashlib.sha256()
    for kind in ("paragraphs", "sentences"):
        digest.update(json.dumps(rows(folder, kind), sort_keys=True).encode())
    digest.update(json.dumps(pairs(folder), sort_keys=True).encode())
    return digest.hexdigest()


def merge(parts: list[Path], out: Path, workers: int | None, source: Path | None = None) -> dict:
    """One merge command; `workers` None: a `source` package's own defaults (one without the option)."""
    command = [sys.executable, "-m", "lm2vec", "data", "merge", *map(str, parts), "--out", str(out)]
    options = [] if workers is None else ["--workers", str(workers), "--no-progress"]
    wall, cpu, peak, _ = run_measured([*command, *options], {"PYTHONPATH": str(source)} if source else {})
    return {"seconds": wall, "cpu": cpu, "peak": peak, "rows": rows_digest(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10, help="copies of the English sample's pages")
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="merges of each worker count")
    parser.add_argument("--baseline", type=Path, help="also merge with the lm2vec package in this source folder")
    args = parser.parse_args()
    arms = {str(workers): {"workers": workers} for workers in args.workers}
    if args.baseline:
        arms["baseline"] = {"workers": None, "source": args.baseline.resolve()}
    with tempfile.TemporaryDirectory() as scratch:
        parts = build_parts(Path(scratch), args.copies, args.parts)
        paragraphs = sum(json.loads((part / "manifest.json").read_text())["counts"]["paragraphs"] for part in parts)
        print(f"{args.copies} copies of the English sample in {args.parts} parts: {paragraphs} paragraphs written")
        runs: dict[str, list[dict]] = {name: [] for name in arms}
        for repeat in range(args.repeats):
            order = list(arms) if repeat % 2 == 0 else list(arms)[::-1]
            for name in order:
                runs[name].append(merge(parts, Path(scratch) / f"merged-{repeat}-{name}", **arms[name]))
    first = runs[str(args.workers[0])]
    print(f"{'workers':>8}{'seconds':>9}{'CPU s':>8}{'paragraphs/s':>14}{'peak PSS MB':>13}{'speed-up':>10}")
    for name, measured in runs.items():
        seconds = statistics.median(run["seconds"] for run in measured)
        cpu = statistics.median(run["cpu"] for run in measured)
        speedup = statistics.median(base["seconds"] / run["seconds"] for base, run in zip(first, measured, strict=True))
        peak = max(run["peak"] for run in measured) / 1e6
        print(f"{name:>8}{seconds:>9.2f}{cpu:>8.2f}{paragraphs / seconds:>14.0f}{peak:>13.0f}{speedup:>9.2f}x")
    same = len({run["rows"] for measured in runs.values() for run in measured}) == 1
    print(f"every merge wrote the same rows: {same}; medians of {args.repeats} rounds")


if __name__ == "__main__":
    main()
