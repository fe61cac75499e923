"""Recipe study: where encoder quality per CPU-minute comes from, in short proxy runs on the tuning tasks only.

    PYTHONPATH=src .venv/bin/python benchmarks/recipe_study.py                       # every arm
    PYTHONPATH=src .venv/bin/python benchmarks/recipe_study.py --arms gemma-simcse   # some arms

Tuning tasks, and nothing else: STS-B dev, Lee, BBC News classification and clustering, BBC headline retrieval,
in proxy subsets (the registry's `limit`: `--limit` pairs, articles or headlines per task, 200 by default;
retrieval searches 3 articles per headline, its own and distractors). 100 examples a task, as in the first rounds
(results/recipe-study-l100), left differences of 1-2 points between arms within the noise.
Final numbers come from `lm2vec run` on the full tasks.

An arm is a base model, optional MNTP and SimCSE runs (lm2vec's own trainers, options as in a recipe section)
and the pooling; it is evaluated with its training stages merged. Zero-training arms evaluate the baselines.

Cost: the CPU is shared, so wall time is inflated and noisy. Each arm records its optimizer steps, token slots
(steps x batch x sequence length, both SimCSE views counted: an upper bound of the tokens processed), wall
seconds and the CPU seconds of this process (every torch thread). The throughput measured is token slots per
CPU second; `idle_minutes` = CPU seconds / 120, the minutes of an idle 2-core machine whose two torch threads
keep both cores busy. CPU time, unlike wall time, barely changes with other users' load, the more so with
OMP_NUM_THREADS=1 (no thread waits for a descheduled sibling), which is how the study was run; the two-thread
speed-up is assumed perfect, so idle minutes are a lower bound.

Writes `OUT/results.json` (every arm and score) and `OUT/table.md` (the table); training runs go to `--work`.
A re-run skips the arms already in results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TUNING_TASKS = ("stsb-dev", "lee-similarity", "bbc-classification", "bbc-clustering", "bbc-headline-retrieval")
GEMMA, SMOLLM2 = "pkg:gemma3-270m", "pkg:smollm2"
SENTENCES = {"max_length": 48, "per_device_batch_size": 32}
PARAGRAPHS = {"max_length": 128, "per_device_batch_size": 32, "data": "paragraphs"}
MNTP_SHORT = {"max_steps": 30, "max_seq_length": 128, "per_device_batch_size": 8, "learning_rate": 1e-4}
MNTP_RECIPE = {**MNTP_SHORT, "max_steps": 10, "mask_strategy": "bert"}  # the main recipe's MNTP
SUPERVISED = {
    "data": "${stsb}/sts-train.csv",
    "per_device_batch_size": 32,
    "max_length": 64,
    "max_steps": 20,
    "warmup_steps": 3,
    "mini_batch_size": 16,
}  # the main recipe's
DIMENSIONS = (64, 128, 256)  # Gemma-3-270m's embeddings have 640
CROPS = {"positives": "crops", "max_length": 64, "per_device_batch_size": 32, "data": "corpus"}
ASYMMETRIC = {"crop_ratio": [0.05, 0.25], "positive_crop_ratio": [0.5, 1.0], "max_length": 128}


@dataclass
class Arm:
    model: str
    mntp: dict | None = None  # MNTPConfig fields
    # SimCSEOptions fields; data = "paragraphs": the paragraphs as one text per line, "corpus": the corpus folder
    simcse: dict | None = None
    pooling: str = "mean"
    baselines: bool = False  # a zero-training arm: the base model's baselines instead of a trained model
    supervised: dict | None = None  # SupervisedOptions fields, `data` a path that may use ${stsb}
    # Steps of the arm's last stage whose checkpoints are evaluated too (the score-against-minutes curve of one
    # run); their cost is the stages before it whole plus that share of the last.
    checkpoints: tuple[int, ...] = ()
    dimensions: tuple[int, ...] = ()  # also scored with the embeddings cut to these sizes (and renormalised)
    gpu: bool = False  # the paper's settings: days on this CPU, not among the default arms (--smoke tries them)
    note: str = ""

    @property
    def last_stage(self) -> str:
        return [stage for stage in ("mntp", "simcse", "supervised") if getattr(self, stage)][-1]


def simcse(steps: int = 20, lr: float = 1e-4, dropout: float = 0.3, **text) -> dict:
    return {"max_steps": steps, "learning_rate": lr, "dropout": dropout, "mini_batch_size": 16, **(text or SENTENCES)}


def crops(steps: int = 20, lr: float = 1e-4, **overrides) -> dict:
    """SimCSE on two crops of a paragraph (dropout 0.1), the positives every arm since round 2 uses."""
    return simcse(steps, lr, dropout=0.1, **{**CROPS, **overrides})


MNTP_50 = {**MNTP_RECIPE, "max_steps": 50}
MNTP_50_LR3E4 = {**MNTP_50, "learning_rate": 3e-4}  # the main recipe's MNTP since round 3
COSENT = {**SUPERVISED, "cosent_weight": 1.0}  # every STS-B train pair, CoSENT on its score + InfoNCE


# The paper's settings (MNTP 1000 x 32 x 512, SimCSE 1000 x 128, lr 3e-5, dropout 0.3), for a GPU (bf16 there).
PAPER_MNTP = {"max_steps": 1000, "per_device_batch_size": 32, "max_seq_length": 512, "learning_rate": 5e-5}
PAPER_SIMCSE = {
    "max_steps": 1000,
    "per_device_batch_size": 128,
    "max_length": 128,
    "learning_rate": 3e-5,
    "dropout": 0.3,
    "mini_batch_size": 64,
}

ARMS: dict[str, Arm] = {
    "smollm2-zero": Arm(SMOLLM2, baselines=True, note="SmolLM2 untouched"),
    "gemma-zero": Arm(GEMMA, baselines=True, note="Gemma-3-270m untouched"),
    "gemma-zero-weighted": Arm(GEMMA, pooling="weighted_mean", note="bidirectional, untrained, weighted mean"),
    "gemma-simcse": Arm(GEMMA, simcse=simcse(), note="no MNTP; SimCSE 20 x 32 sentences, lr 1e-4"),
    "gemma-simcse-paragraphs": Arm(GEMMA, simcse=simcse(**PARAGRAPHS), note="no MNTP; SimCSE on paragraphs"),
    "gemma-mntp-simcse": Arm(GEMMA, mntp=MNTP_SHORT, simcse=simcse(), note="MNTP 30 x 8 x 128, then SimCSE"),
    "gemma-simcse-lr3e-5": Arm(GEMMA, simcse=simcse(lr=3e-5), note="no MNTP; the paper's lr"),
    "gemma-simcse-dropout0.1": Arm(GEMMA, simcse=simcse(dropout=0.1), note="no MNTP; dropout 0.1"),
    "smollm2-mntp-simcse": Arm(SMOLLM2, mntp=MNTP_SHORT, simcse=simcse(), note="the old base model"),
    "smollm2-mntp-crops": Arm(SMOLLM2, mntp=MNTP_SHORT, simcse=crops(), note="the old base model, crops"),
    "gemma-paper": Arm(
        GEMMA,
        mntp={**PAPER_MNTP, "mask_strategy": "bert"},
        simcse=PAPER_SIMCSE,
        gpu=True,
        note="the paper's MNTP and SimCSE",
    ),
    "smollm2-paper": Arm(SMOLLM2, mntp=PAPER_MNTP, simcse=PAPER_SIMCSE, gpu=True, note="the paper's MNTP and SimCSE"),
    "gemma-mntp10-simcse": Arm(GEMMA, mntp=MNTP_RECIPE, simcse=simcse(), note="the main recipe's MNTP, SimCSE"),
    "gemma-mntp10-crops": Arm(GEMMA, mntp=MNTP_RECIPE, simcse=crops(), note="MNTP 10, then crops of paragraphs"),
    "gemma-crops": Arm(GEMMA, simcse=crops(), note="no MNTP; crops of paragraphs"),
    "gemma-mntp10-crops-curve": Arm(
        GEMMA,
        mntp=MNTP_RECIPE,
        simcse=crops(steps=60),
        checkpoints=(20, 40, 60),
        note="crops, 60 steps, evaluated at 20, 40 and 60",
    ),
    "gemma-mntp10-crops-supervised": Arm(
        GEMMA, mntp=MNTP_RECIPE, simcse=crops(), supervised=SUPERVISED, note="+ STS-B train"
    ),
    "gemma-mntp10-crops-supervised-curve": Arm(
        GEMMA,
        mntp=MNTP_RECIPE,
        simcse=crops(),
        supervised={**SUPERVISED, "max_steps": 80},
        checkpoints=(20, 40, 80),
        note="+ STS-B train, 80 steps, evaluated at 20, 40 and 80",
    ),
    "gemma-mntp10-crops-supervised-mined": Arm(
        GEMMA,
        mntp=MNTP_RECIPE,
        simcse=crops(),
        supervised={**SUPERVISED, "mine_negatives": 1, "num_hard_negatives": 1},
        note="+ STS-B train with a mined hard negative per pair",
    ),
    "gemma-mntp10-crops-dims": Arm(
        GEMMA,
        mntp=MNTP_RECIPE,
        simcse=crops(),
        dimensions=DIMENSIONS,
        note="crops, scored at Matryoshka prefixes it was not trained for",
    ),
    "gemma-mntp10-crops-matryoshka": Arm(
        GEMMA,
        mntp=MNTP_RECIPE,
        simcse=crops(matryoshka_dims=list(DIMENSIONS)),
        dimensions=DIMENSIONS,
        note="crops with the loss summed over the prefixes too",
    ),
    "gemma-mntp50-crops": Arm(GEMMA, mntp=MNTP_50, simcse=crops(), note="MNTP 50, crops"),
    "gemma-mntp10-crops-asym": Arm(
        GEMMA,
        mntp=MNTP_RECIPE,
        simcse=crops(**ASYMMETRIC),
        note="crops: a short query span and a long positive span, like a search",
    ),
    "gemma-mntp200-crops": Arm(GEMMA, mntp={**MNTP_RECIPE, "max_steps": 200}, simcse=crops(), note="MNTP 200, crops"),
    "gemma-mntp50-lr3e-4-crops": Arm(
        GEMMA,
        mntp=MNTP_50_LR3E4,
        simcse=crops(),
        note="MNTP 50 at lr 3e-4, crops",
    ),
    "gemma-mntp50-lr1e-3-crops": Arm(
        GEMMA,
        mntp={**MNTP_RECIPE, "max_steps": 50, "learning_rate": 1e-3},
        simcse=crops(),
        note="MNTP 50 at lr 1e-3, crops",
    ),
    "gemma-mntp150-lr3e-4-crops": Arm(
        GEMMA,
        mntp={**MNTP_RECIPE, "max_steps": 150, "learning_rate": 3e-4},
        simcse=crops(),
        note="MNTP 150 at lr 3e-4, crops",
    ),
    "gemma-mntp50-crops-b128": Arm(
        GEMMA,
        mntp=MNTP_50,
        simcse=crops(per_device_batch_size=128, cached=True),
        note="MNTP 50, crops in batches of 128 (GradCache)",
    ),
    "gemma-mntp50-crops-supervised": Arm(
        GEMMA,
        mntp=MNTP_50,
        simcse=crops(),
        supervised=SUPERVISED,
        note="the main recipe before round 3: MNTP 50, crops, STS-B train",
    ),
    "gemma-mntp50-crops-cosent-curve": Arm(
        GEMMA,
        mntp=MNTP_50,
        simcse=crops(),
        supervised={**COSENT, "max_steps": 80},
        checkpoints=(20, 40, 80),
        note="+ STS-B train, every pair: CoSENT on the scores + InfoNCE on the good ones, at 20, 40 and 80 steps",
    ),
    "gemma-mntp50-crops-cosent0.3": Arm(
        GEMMA,
        mntp=MNTP_50,
        simcse=crops(),
        supervised={**SUPERVISED, "cosent_weight": 0.3, "max_steps": 40},
        note="+ STS-B train, every pair: CoSENT at weight 0.3 + InfoNCE, 40 steps",
    ),
    "gemma-mntp50-crops-cosent-lr5e-5": Arm(
        GEMMA,
        mntp=MNTP_50,
        simcse=crops(),
        supervised={**COSENT, "max_steps": 40, "learning_rate": 5e-5},
        note="+ STS-B train, every pair: CoSENT + InfoNCE, 40 steps at lr 5e-5",
    ),
    "smollm2-mntp200-lr3e-4-crops": Arm(
        SMOLLM2,
        mntp={**MNTP_SHORT, "max_steps": 200, "learning_rate": 3e-4},
        simcse=crops(),
        note="SmolLM2: MNTP 200 at lr 3e-4, crops",
    ),
    "smollm2-mntp200-lr3e-4-crops-cosent": Arm(
        SMOLLM2,
        mntp={**MNTP_SHORT, "max_steps": 200, "learning_rate": 3e-4},
        simcse=crops(),
        supervised={**COSENT, "max_steps": 40},
        note="SmolLM2: MNTP 200 at lr 3e-4, crops, STS-B train with CoSENT + InfoNCE (40 steps)",
    ),
    "gemma-mntp50-lr3e-4-crops-lr3e-4": Arm(
        GEMMA,
        mntp=MNTP_50_LR3E4,
        simcse=crops(lr=3e-4),
        note="MNTP 50 at lr 3e-4, crops at lr 3e-4",
    ),
    "gemma-mntp50-lr3e-4-crops-cosent": Arm(
        GEMMA,
        mntp=MNTP_50_LR3E4,
        simcse=crops(),
        supervised={**COSENT, "max_steps": 40},
        note="MNTP 50 at lr 3e-4, crops, STS-B train with CoSENT + InfoNCE (40 steps)",
    ),
    "gemma-mntp50-lr3e-4-crops-lr1e-3": Arm(
        GEMMA,
        mntp=MNTP_50_LR3E4,
        simcse=crops(lr=1e-3),
        note="MNTP 50 at lr 3e-4, crops at lr 1e-3",
    ),
    "gemma-mntp50-lr3e-4-crops40-lr3e-4": Arm(
        GEMMA,
        mntp=MNTP_50_LR3E4,
        simcse=crops(steps=40, lr=3e-4),
        note="MNTP 50 at lr 3e-4, crops 40 steps at lr 3e-4",
    ),
    "gemma-mntp50-lr3e-4-crops-lr3e-4-cosent-curve": Arm(
        GEMMA,
        mntp=MNTP_50_LR3E4,
        simcse=crops(lr=3e-4),
        supervised={**COSENT, "max_steps": 80},
        checkpoints=(40, 80),
        note="MNTP 50 and crops at lr 3e-4, STS-B train with CoSENT + InfoNCE, 80 steps, evaluated at 40 and 80",
    ),
    "gemma-mntp10-crops-b128": Arm(
        GEMMA,
        mntp=MNTP_RECIPE,
        simcse=crops(per_device_batch_size=128, cached=True),
        note="crops, batch 128 (GradCache)",
    ),
}


@dataclass
class Cost:
    steps: int = 0
    token_slots: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    parts: dict = field(default_factory=dict)

    def add(self, name: str, steps: int, token_slots: int, wall: float, cpu: float) -> None:
        """The cost of one stage run; token slots count every side (SimCSE's two views, negatives)."""
        self.steps += steps
        self.token_slots += token_slots
        self.wall_seconds += wall
        self.cpu_seconds += cpu
        self.parts[name] = {"steps": steps, "token_slots": token_slots, "wall_seconds": wall, "cpu_seconds": cpu}

    def share(self, steps: int, stage: str = "simcse") -> Cost:
        """The cost of the run up to `steps` of its `stage` part (steps cost alike), the stages before it whole."""
        part = Cost()
        for name, spent in self.parts.items():
            fraction = steps / spent["steps"] if name == stage else 1.0
            part.add(
                name,
                round(spent["steps"] * fraction),
                round(spent["token_slots"] * fraction),
                spent["wall_seconds"] * fraction,
                spent["cpu_seconds"] * fraction,
            )
        return part

    @property
    def idle_minutes(self) -> float:
        return self.cpu_seconds / 120


def truncated_encoder_class():
    """A cached encoder whose embeddings are cut to their first `dimension` values and renormalised: a Matryoshka
    prefix, sharing the full model's embedding cache."""
    from lm2vec.evaluation.embedding_cache import CachedEncoder

    @dataclass
    class Truncated(CachedEncoder):
        label: str = ""
        dimension: int = 0

        @property
        def name(self) -> str:
            return self.label

        def embed(self, texts: list[str], instruction: str | None = None):
            import numpy as np

            prefix = super().embed(texts, instruction)[:, : self.dimension]
            return prefix / np.maximum(np.linalg.norm(prefix, axis=1, keepdims=True), 1e-12)

    return Truncated


def timed(work, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = work(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def corpus(work: Path) -> tuple[Path, Path]:
    """The English training text of the main recipe (its data stage) and its paragraphs as a one-per-line file."""
    from lm2vec.data.corpus import load_corpus
    from lm2vec.pipeline.run import run_recipe

    run_dir = work / "data-run"
    run_recipe(REPO / "recipes" / "smollm2-en-cpu.toml", out=run_dir, until="data", echo=lambda _: None)
    data = run_dir / "data"
    paragraphs = work / "paragraphs.txt"
    if not paragraphs.is_file():
        texts = [" ".join(t.split()) for folder in sorted(data.iterdir()) for t in load_corpus(folder)["text"]]
        temporary = paragraphs.with_suffix(".tmp")
        temporary.write_text("\n".join(texts) + "\n", encoding="utf-8")
        temporary.replace(paragraphs)
    return data, paragraphs


def proxy_tasks(limit: int) -> list:
    from lm2vec.evaluation.registry import Registry

    registry = Registry.builtin()
    return [registry.load(name, limit) for name in TUNING_TASKS]


def train(name: str, arm: Arm, data: Path, paragraphs: Path, out: Path, cost: Cost) -> list[str]:
    """Run the arm's training stages; returns its adapter chain.

    A stage run is keyed by everything that makes it (base model, the chain before it, its settings), so arms
    that share a prefix share its runs, and each arm still pays their cost (kept in the run's study-cost.json)."""
    from lm2vec.data.packaged import expand_path
    from lm2vec.training.contrastive import SimCSEOptions, SupervisedOptions, train_simcse, train_supervised
    from lm2vec.training.mntp import MNTPConfig, train_mntp

    adapters: list[str] = []
    stages = [("mntp", arm.mntp), ("simcse", arm.simcse), ("supervised", arm.supervised)]
    for stage, given in stages:
        if not given:
            continue
        settings = dict(given)
        key = hashlib.sha256(
            json.dumps([arm.model, arm.pooling, adapters, stage, settings], sort_keys=True).encode()
        ).hexdigest()[:12]
        folder = out / f"{stage}-{key}"
        record = folder / "study-cost.json"
        if not record.is_file():
            common = {"model": arm.model, "output_dir": str(folder), "save_steps": 10_000}
            if stage == "mntp":
                options = MNTPConfig(**common, data=str(data), eval_on_start=False, eval_steps=None, **settings)
                result, wall, cpu = timed(train_mntp, options, resume=True)
                rows = options.per_device_batch_size * options.max_seq_length
            else:
                text = settings.pop("data", None)
                source = {"paragraphs": str(paragraphs), None: str(data), "corpus": str(data)}.get(text) or str(
                    expand_path(text)
                )
                common |= {"adapters": list(adapters), "data": source, "pooling": arm.pooling, "export": False}
                if stage == arm.last_stage and arm.checkpoints:
                    common |= {"save_steps": math.gcd(*arm.checkpoints), "save_total_limit": None}
                options_class, run = {
                    "simcse": (SimCSEOptions, train_simcse),
                    "supervised": (SupervisedOptions, train_supervised),
                }[stage]
                options = options_class(**common, **settings)
                result, wall, cpu = timed(run, options, resume=True)
                # mined negatives join the rows; STS pairs bring none of their own
                sides = 2 + (options.num_hard_negatives if getattr(options, "mine_negatives", 0) else 0)
                rows = options.per_device_batch_size * options.max_length * sides
            spent = {"steps": result.global_step, "token_slots": result.global_step * rows, "wall": wall, "cpu": cpu}
            del result  # it holds the Trainer, and with it the trained model
            record.write_text(json.dumps(spent))
        cost.add(stage, **json.loads(record.read_text()))
        adapters.append(str(folder / "adapter"))
    return adapters


def run_arm(name: str, arm: Arm, tasks: list, data: Path, paragraphs: Path, out: Path) -> dict:
    from lm2vec.evaluation.embedding_cache import CachedEncoder
    from lm2vec.evaluation.report import baseline_specs
    from lm2vec.evaluation.runner import evaluate
    from lm2vec.evaluation.specs import ModelSpec

    cost = Cost()
    costs: dict[str, Cost] = {}
    if arm.baselines:
        specs = [dataclasses.replace(s, name=f"{name}: {s.name}") for s in baseline_specs(arm.model, arm.pooling)]
    else:
        adapters = train(name, arm, data, paragraphs, out, cost)
        specs = [ModelSpec(name, arm.model, tuple(adapters), pooling=arm.pooling)]
        for step in arm.checkpoints[:-1] if arm.checkpoints else ():
            checkpoint = Path(adapters[-1]).parent / f"checkpoint-{step}"
            specs.append(ModelSpec(f"{name} @ {step}", arm.model, (*adapters[:-1], str(checkpoint)), arm.pooling))
            costs[specs[-1].name] = cost.share(step, arm.last_stage)
    models = list(specs)
    if arm.dimensions:
        Truncated = truncated_encoder_class()  # noqa: N806
        full = CachedEncoder(specs[0])
        models = [
            full,
            *(Truncated(specs[0], model=None, label=f"{name} @ dim {d}", dimension=d) for d in arm.dimensions),
        ]
    results, wall, cpu = timed(lambda: evaluate(models, tasks, progress=False))
    rows = []
    for model in models:
        spec_cost = costs.get(model.name, cost)
        scores = {task: r.main_score for task, r in results.models[model.name].results.items()}
        rows.append(
            {
                "arm": model.name,
                "note": arm.note,
                "scores": scores,
                "average": sum(scores.values()) / len(scores),
                "cost": dataclasses.asdict(spec_cost),
                "idle_minutes": round(spec_cost.idle_minutes, 2),
            }
        )
    print(
        f"{name}: trained in {cost.wall_seconds:.0f}s wall / {cost.cpu_seconds:.0f}s CPU, evaluated in {wall:.0f}s "
        f"wall / {cpu:.0f}s CPU",
        flush=True,
    )
    return {"rows": rows, "eval_wall_seconds": wall, "eval_cpu_seconds": cpu}


def table(rows: list[dict]) -> str:
    header = [
        "arm",
        *TUNING_TASKS,
        "average",
        "steps",
        "token slots",
        "slots / CPU s",
        "wall min",
        "CPU min",
        "idle 2-core min",
    ]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for row in rows:
        cost = row["cost"]
        cells = [f"{100 * row['scores'].get(t, float('nan')):.1f}" for t in TUNING_TASKS]
        cells += [
            f"{100 * row['average']:.1f}",
            str(cost["steps"]),
            f"{cost['token_slots']:,}",
            f"{cost['token_slots'] / cost['cpu_seconds']:.0f}" if cost["cpu_seconds"] else "–",
            f"{cost['wall_seconds'] / 60:.1f}",
            f"{cost['cpu_seconds'] / 60:.1f}",
            f"{row['idle_minutes']:.1f}",
        ]
        lines.append("| " + " | ".join([row["arm"], *cells]) + " |")
    return "\n".join(lines)


def smoke(arm: Arm) -> Arm:
    """The arm at a size a CPU runs in minutes: two steps of four short texts per stage, to try a GPU arm first."""
    tiny = {"max_steps": 2, "per_device_batch_size": 4, "max_seq_length": 32, "max_length": 32, "mini_batch_size": 4}

    def shrink(settings: dict | None) -> dict | None:
        return None if settings is None else {k: tiny.get(k, v) for k, v in settings.items()}

    return dataclasses.replace(arm, mntp=shrink(arm.mntp), simcse=shrink(arm.simcse), supervised=shrink(arm.supervised))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cpu_arms = [name for name, arm in ARMS.items() if not arm.gpu]
    parser.add_argument("--arms", nargs="+", default=cpu_arms, choices=list(ARMS), metavar="ARM")
    parser.add_argument("--smoke", action="store_true", help="every arm at two tiny steps a stage, 25 examples a task")
    parser.add_argument("--out", type=Path, help="results (default: benchmarks/results/recipe-study-lLIMIT)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "recipe-study", help="training runs")
    parser.add_argument("--limit", type=int, default=200, help="examples per proxy task (the registry's limit)")
    args = parser.parse_args(argv)
    arms = {name: smoke(arm) for name, arm in ARMS.items()} if args.smoke else ARMS
    if args.smoke:
        args.limit, args.work = 25, args.work / "smoke"
    args.out = args.out or REPO / "benchmarks" / "results" / f"recipe-study-l{args.limit}{'-smoke' * args.smoke}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    done = json.loads(results_path.read_text()) if results_path.is_file() else {"arms": {}}
    data, paragraphs = corpus(args.work)
    tasks = proxy_tasks(args.limit)
    done["proxy"] = {"limit": args.limit, "tasks": {t.name: t.size for t in tasks}}
    for name in args.arms:
        if name in done["arms"]:
            continue
        arm = run_arm(name, arms[name], tasks, data, paragraphs, args.work)
        # Re-read before writing: a study run in another process may have added arms meanwhile.
        done = json.loads(results_path.read_text()) if results_path.is_file() else done
        done["arms"][name] = arm
        temporary = results_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(done, indent=2) + "\n")
        temporary.replace(results_path)
    rows = [row for name in ARMS if name in done["arms"] for row in done["arms"][name]["rows"]]
    (args.out / "table.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
