"""Paired differences between models of one results.json: the average's and each task's, with 95% bootstrap intervals.

    .venv/bin/python benchmarks/paired_differences.py REPORT/results.json "MODEL A|MODEL B" ["C|D" ...]

prints, per pair, A - B on the sentence-level average and on every averaged task, × 100, each with the 95% interval
of the difference over the same 1,000 resamples for both models (lm2vec.evaluation.report.paired_difference): where
the interval contains 0 the difference is within noise.
"""

from __future__ import annotations

import argparse

from lm2vec.evaluation.report import averaged_tasks, paired_difference
from lm2vec.evaluation.runner import Results


def describe(difference: float, interval: tuple[float, float] | None) -> str:
    bounds = "" if interval is None else f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return f"{100 * difference:+.1f}{bounds}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a results.json of lm2vec report or lm2vec eval run")
    parser.add_argument("pairs", nargs="+", help='"MODEL A|MODEL B": A - B')
    args = parser.parse_args()
    results = Results.load(args.results)
    tasks = averaged_tasks(results)
    for pair in args.pairs:
        model, other = pair.split("|")
        average = paired_difference(results, model, other, tasks)
        parts = [f"{model} - {other}: average {describe(average.difference, average.interval)}"]
        for task in tasks:
            one = paired_difference(results, model, other, [task])
            parts.append(f"{task} {describe(one.difference, one.interval)}")
        print("; ".join(parts))


if __name__ == "__main__":
    main()
