"""The supervised stage's hard-negative mining: every pair (before 2026-12-07) against only the pairs the run's
batches hold, side by side, with the run's own starting encoder and data.

    lm2vec run recipes/gemma3-en-cpu.toml --until simcse          # the run folder, once
    .venv/bin/python benchmarks/mining.py recipes/gemma3-en-cpu.toml --set supervised.mine_negatives=1

Each arm mines into a folder of its own under `--work-dir` (so neither reads the other's mined.jsonl) and reports
its wall and CPU seconds and how many records it mined; the drawn records' negatives must be the same in both.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="SECTION.KEY=VALUE")
    parser.add_argument("--out", help="the run folder (default: the recipe's)")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()

    from lm2vec import LM2Vec
    from lm2vec.pipeline.plan import plan_run
    from lm2vec.training.contrastive.data import GroupedBatchSampler, mined_records, supervised_data

    options = plan_run(args.recipe, args.overrides, args.out).options["supervised"]
    if not options.mine_negatives:
        parser.error("the recipe mines no negatives: add --set supervised.mine_negatives=1")
    data = supervised_data(options)
    groups = data.groups if options.homogeneous_batches else [range(len(data.records))]
    sampler = GroupedBatchSampler(groups, options.per_device_batch_size, 1, options.seed)
    drawn = sampler.records_drawn(options.max_steps * options.gradient_accumulation_steps)
    encoder = LM2Vec.from_pretrained(
        options.model, adapters=options.adapters, pooling=options.pooling, max_length=options.max_length, device="cpu"
    )
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mining-"))
    print(
        f"{len(data.records)} records in {len(data.sources)} source(s); {len(drawn)} drawn by {options.max_steps} steps"
    )
    results = {}
    for arm, subset in (("every pair", None), ("the drawn pairs", drawn)):
        folder = work / arm.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        wall, cpu = time.perf_counter(), cpu_seconds()
        mined = mined_records(
            encoder, data.records, replace(options, output_dir=str(folder)), True, data.sources, subset
        )
        results[arm] = (mined, time.perf_counter() - wall, cpu_seconds() - cpu)
    same = all(results["every pair"][0][i]["negatives"] == results["the drawn pairs"][0][i]["negatives"] for i in drawn)
    print("| mined | records | wall s | CPU s |\n| --- | ---: | ---: | ---: |")
    for arm, count in (("every pair", len(data.records)), ("the drawn pairs", len(drawn))):
        _, wall, cpu = results[arm]
        print(f"| {arm} | {count:,} | {wall:.0f} | {cpu:.0f} |")
    print(f"the drawn pairs' negatives equal in both: {same}")


if __name__ == "__main__":
    main()
