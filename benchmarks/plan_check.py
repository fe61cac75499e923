"""`lm2vec plan`'s CPU memory estimates against the peak RSS of the real training stages.

    .venv/bin/python benchmarks/plan_check.py                                    # SmolLM2 and Gemma-3-270m, the
                                                                                 # gemma3-en-cpu recipe's settings
    .venv/bin/python benchmarks/plan_check.py --models pkg:smollm2 \\
        --set mntp.per_device_batch_size=2 --set mntp.max_seq_length=32 \\
        --set simcse.per_device_batch_size=4 --set simcse.max_length=16 \\
        --set supervised.per_device_batch_size=4 --set supervised.max_length=16    # a smoke test

For each model, the recipe (default recipes/gemma3-en-cpu.toml) runs its data stage once, then each training stage
alone (`lm2vec run RECIPE --only STAGE`) in a fresh process for `--steps` optimizer steps, with checkpoints and
evaluation off; the process's peak RSS (its own rusage from wait4, so one stage's peak never hides another's) is
set beside `lm2vec plan`'s estimate for the same recipe and overrides (`lm2vec.pipeline.estimate`, CPU target). A
fresh process that only imports the training stack gives the runtime baseline the CPU estimate adds
(CPU_RUNTIME_BYTES). The estimate is for a batch of full-length texts (the longest batch a run meets); short texts
pad only to their batch's longest, so a recipe whose texts are shorter than its max_length measures below it.
Run folders go under `--work-dir` (default ~/.cache/lm2vec-bench/plan_check); the table is printed as markdown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("mntp", "simcse", "supervised")
RUNTIME_IMPORTS = "import lm2vec.training.mntp.driver, lm2vec.training.contrastive.driver"


def peak_rss(command: list[str], log: Path) -> int:
    """Run `command` to completion; its peak RSS in bytes (raises if it fails)."""
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}); see {log}")
    return usage.ru_maxrss * 1024  # kilobytes on Linux


def lm2vec(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "lm2vec", *arguments]


def check_model(model: str, recipe: Path, overrides: list[str], steps: int, stages: list[str], work: Path) -> list:
    from lm2vec.pipeline.estimate import estimate_plan, target_for
    from lm2vec.pipeline.plan import plan_run

    run_dir = work / model.replace(":", "-").replace("/", "-")
    if run_dir.exists():
        shutil.rmtree(run_dir)  # our own folder under the work dir, from an earlier check
    settings = [f"run.model={model}", *overrides]
    for stage in stages:
        settings += [f"{stage}.max_steps={steps}", f"{stage}.save_steps={steps + 1}", f"{stage}.logging_steps=1"]
    settings += ["mntp.eval_steps=none", "mntp.eval_on_start=false"] if "mntp" in stages else []
    options = [argument for setting in settings for argument in ("--set", setting)]
    plan = plan_run(recipe, settings, run_dir)
    estimates = {e.stage: e for e in estimate_plan(plan, target_for(gpus=0))}
    subprocess.run(lm2vec("run", str(recipe), "--out", str(run_dir), "--until", "data", *options), check=True)
    rows = []
    for stage in stages:
        command = lm2vec("run", str(recipe), "--out", str(run_dir), "--only", stage, *options)
        measured = peak_rss(command, work / f"{run_dir.name}-{stage}.log")
        rows.append((model, stage, estimates[stage], measured))
        print(
            f"{model} {stage}: estimate {estimates[stage].total / 2**30:.2f} GiB, measured {measured / 2**30:.2f} GiB"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pkg:smollm2", "pkg:gemma3-270m"])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "gemma3-en-cpu.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "lm2vec-bench" / "plan_check")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)

    runtime = peak_rss([sys.executable, "-c", RUNTIME_IMPORTS], args.work_dir / "runtime.log")
    rows = []
    for model in args.models:
        rows += check_model(model, args.recipe, args.overrides, args.steps, args.stages, args.work_dir)

    from lm2vec.pipeline.estimate import CPU_RUNTIME_BYTES

    print(
        f"\nruntime baseline (a process importing the training stack): {runtime / 2**30:.2f} GiB measured, "
        f"{CPU_RUNTIME_BYTES / 2**30:.2f} GiB in the estimate"
    )
    print(f"recipe {args.recipe.name}, {args.steps} steps, overrides: {' '.join(args.overrides) or 'none'}; GiB\n")
    print(
        "| model | stage | batch | weights | LoRA + AdamW | activations | logits | runtime | estimate | "
        "measured peak RSS | measured - model terms | estimate / measured |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, stage, estimate, measured in rows:
        terms = [estimate.weights, estimate.lora, estimate.activations, estimate.logits, estimate.runtime]
        runtime_seen = measured - (estimate.total - estimate.runtime)  # what the runtime term should have been
        cells = [f"{value / 2**30:.2f}" for value in [*terms, estimate.total, measured, runtime_seen]]
        print(
            f"| {model} | {stage} | {estimate.rows} x {estimate.length} | {' | '.join(cells)} | "
            f"{estimate.total / measured:.2f} |"
        )


if __name__ == "__main__":
    main()
