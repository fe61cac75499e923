"""Throughput of `lm2vec data wiki` against wikiextractor on the same dump, side by side.

    .venv/bin/python benchmarks/data.py [--dump PATH] [--workers N [N ...]] [--repeats R] [--lean] [--baseline SRC]

Default dump: the English sample in the gensim 4.4.0 wheel (a dev dependency). For each worker count, the
tools run R times each in fresh subprocesses, alternating (and alternating which goes first), so that both see the
same load on a shared machine; the table gives medians and the ratio of pages/s within each pair. Both tools run as
the commands a user types (`python -m lm2vec data wiki ...`, `python -m wikiextractor.WikiExtractor ...`): seconds,
CPU and memory are the whole command's, start-up included; lm2vec's "pipeline s" is the part its manifest times
(reading to the last shard), without start-up. Peak memory is the largest sum of PSS (RSS with the pages that forked
workers share counted once) over the process tree, sampled every 50 ms. CPU is user + system time of the process
tree, which load changes less than wall time. `--lean` adds a run of lm2vec without the work that wikiextractor
does not do either: no weak pairs, no near-duplicate MinHash. `--baseline SRC` adds a run of the `lm2vec` package in
the folder SRC, for a before/after: `git archive HEAD src | tar -x -C /tmp/base` and SRC = /tmp/base/src.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ENGLISH_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command: list[str], environment: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds of the process tree, peak PSS of the tree in bytes, and stdout of `command`."""
    started, cpu_before = time.perf_counter(), children_cpu()
    env = os.environ | (environment or {})
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
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
    return wall, children_cpu() - cpu_before, peak, stdout


def run_lm2vec(dump: Path, workers: int, out: Path, source: Path | None = None, *options: str) -> dict:
    command = [sys.executable, "-m", "lm2vec", "data", "wiki", str(dump), "--lang", "en", "--out", str(out)]
    wall, cpu, peak, _ = run_measured(
        [*command, "--workers", str(workers), "--no-progress", *options],
        {"PYTHONPATH": str(source)} if source else {},
    )
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    return {"seconds": wall, "cpu": cpu, "peak": peak, "pipeline": manifest["timing"]["elapsed_s"]} | {
        "pages": counts["pages_seen"],
        "articles": counts["articles_kept"],
        "sentences": counts["sentences"],
    }


def run_lm2vec_lean(dump: Path, workers: int, out: Path) -> dict:
    return run_lm2vec(dump, workers, out, None, "--pair-kinds", "", "--near-duplicate-threshold", "0")


def run_wikiextractor(dump: Path, workers: int, out: Path) -> dict:
    command = [sys.executable, "-m", "wikiextractor.WikiExtractor", str(dump), "-o", str(out)]
    wall, cpu, peak, _ = run_measured([*command, "--processes", str(workers), "--json", "-q"])
    return {"seconds": wall, "cpu": cpu, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, help="MediaWiki dump (default: gensim's English sample)")
    parser.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool per worker count")
    parser.add_argument("--lean", action="store_true", help="also run lm2vec without pairs and near-duplicates")
    parser.add_argument("--baseline", type=Path, help="also run the lm2vec package in this source folder")
    args = parser.parse_args()
    dump = args.dump
    if dump is None:
        spec = importlib.util.find_spec("gensim")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("install the dev extras (pip install -e .[dev]) or pass --dump")
        dump = Path(spec.submodule_search_locations[0]) / "test" / "test_data" / ENGLISH_SAMPLE
    size_mb = dump.stat().st_size / 1e6
    print(f"dump: {dump.name} ({size_mb:.2f} MB compressed); load average at start {os.getloadavg()[0]:.1f}")
    print(
        f"{'workers':>7}  {'tool':<16}{'seconds':>8}{'pages/s':>9}{'CPU s':>7}{'peak PSS MB':>12}{'ratio':>7}"
        f"{'pipeline s':>11}{'pipeline ratio':>15}"
    )
    tools = {"lm2vec data": run_lm2vec, "wikiextractor": run_wikiextractor}
    if args.lean:
        tools["lm2vec lean"] = run_lm2vec_lean
    if args.baseline:
        tools["lm2vec baseline"] = functools.partial(run_lm2vec, source=args.baseline.resolve())
    for workers in args.workers:
        runs: dict[str, list[dict]] = {name: [] for name in tools}
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as scratch:
                order = list(tools.items())
                for name, run in order if repeat % 2 == 0 else order[::-1]:
                    runs[name].append(run(dump, workers, Path(scratch) / name.replace(" ", "-")))
        pages = runs["lm2vec data"][0]["pages"]
        for name, measured in runs.items():
            seconds = statistics.median(run["seconds"] for run in measured)
            cpu = statistics.median(run["cpu"] for run in measured)
            peak = max(run["peak"] for run in measured)
            line = f"{workers:>7}  {name:<16}{seconds:>8.2f}{pages / seconds:>9.1f}{cpu:>7.2f}{peak / 1e6:>12.0f}"
            if name != "wikiextractor":
                pairs = list(zip(measured, runs["wikiextractor"], strict=True))
                ratio = statistics.median(theirs["seconds"] / ours["seconds"] for ours, theirs in pairs)
                pipeline = statistics.median(run["pipeline"] for run in measured)
                pipeline_ratio = statistics.median(theirs["seconds"] / ours["pipeline"] for ours, theirs in pairs)
                line += f"{ratio:>6.2f}x{pipeline:>11.2f}{pipeline_ratio:>14.2f}x"
            print(line)
    lm2vec = runs["lm2vec data"][-1]
    print(
        f"{pages} pages; lm2vec kept {lm2vec['articles']} articles and {lm2vec['sentences']} sentences; ratio: "
        f"lm2vec's pages/s over wikiextractor's, whole commands, median of the {args.repeats} side-by-side pairs "
        f"(pipeline ratio: lm2vec's pipeline time against wikiextractor's whole command); "
        f"load average at the end {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
