"""SimCSE training step of lm2vec against the official llm2vec 0.2.3: same weights, same batch, same machine.

    benchmarks/llm2vec_baseline/setup.sh                          # once: llm2vec 0.2.3's venv
    .venv/bin/python benchmarks/train_contrastive.py --rounds 2   # both sides, alternating, fresh processes

SmolLM2-135M (`pkg:smollm2`, converted for llm2vec by llm2vec_baseline/convert.py; both sides load that folder),
LoRA r=16/alpha=32/dropout 0.05 on the seven projections, attention dropout 0.3, AdamW lr 3e-5, fp32 on CPU,
32 STS-B train sentences (seeded draw) x at most 64 tokens, temperature 0.05 (scale 20). A step is: tokenize
both copies, forward, InfoNCE, backward, optimizer step. One warm-up step, then `--steps` timed ones; peak RSS is
the worker process's VmHWM. lm2vec runs its trainer's `batch_loss` with `mini_batch_size` rows per pass (rows
sorted by length: little padding); `--mini-batch-size 0` runs all 64 rows in one right-padded pass.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import torch
from llm2vec_baseline import measure
from llm2vec_baseline.convert import BENCH_DIR, HERE, LLM2VEC_PYTHON, convert, read_sts_sentences

from lm2vec.data.packaged import stsb_dir

TRAIN_DATA = stsb_dir() / "sts-train.csv"


def run_ours(model: str, sentences_path: str, out: str, steps: int, max_length: int, mini_batch_size: int) -> None:
    from lm2vec import LM2Vec
    from lm2vec.training.adapters import add_lora
    from lm2vec.training.contrastive import ContrastiveCollator, SimCSEOptions, batch_loss, set_attention_dropout

    sentences = measure.load_sentences(sentences_path)
    torch.manual_seed(0)
    options = SimCSEOptions(model=model, max_length=max_length, mini_batch_size=mini_batch_size)
    encoder = LM2Vec.from_pretrained(model, max_length=max_length, device="cpu", dtype=torch.float32)
    set_attention_dropout(encoder.model, options.dropout)
    encoder.model = add_lora(encoder.model, options)
    encoder.model.train()
    optimizer = torch.optim.AdamW([p for p in encoder.model.parameters() if p.requires_grad], lr=3e-5)
    collator = ContrastiveCollator(encoder)
    stats = measure.BatchStats(encoder.model.get_base_model())

    timing = measure.time_training(
        lambda: batch_loss(encoder, encoder.model, collator(sentences), options), optimizer, steps
    )
    result = {
        "implementation": f"lm2vec (mini_batch_size={mini_batch_size})",
        **timing,
        **stats.per_step(steps + 1),  # the warm-up step included: every step sees the same batch
    }
    Path(out).write_text(json.dumps(result, indent=2))


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="pkg:smollm2")
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / "train_contrastive")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--mini-batch-size", type=int, default=16)
    parser.add_argument("--only", choices=["lm2vec", "llm2vec"])
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "SENTENCES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_ours(*args.worker, args.steps, args.max_length, args.mini_batch_size)
        return 0

    args.work_dir.mkdir(parents=True, exist_ok=True)
    model = convert(args.source, BENCH_DIR / "encode" / "model-llm2vec")
    sentences = read_sts_sentences(TRAIN_DATA)
    batch = random.Random(0).sample(sentences, args.batch_size)
    sentences_path = args.work_dir / "batch.json"
    sentences_path.write_text(json.dumps(batch))
    commands = {
        "lm2vec": [
            sys.executable,
            __file__,
            "--steps",
            str(args.steps),
            "--max-length",
            str(args.max_length),
            "--mini-batch-size",
            str(args.mini_batch_size),
            "--worker",
        ],
        "llm2vec": [
            str(LLM2VEC_PYTHON),
            str(HERE / "simcse_llm2vec.py"),
            "--steps",
            str(args.steps),
            "--max-length",
            str(args.max_length),
        ],
    }
    sides = [args.only] if args.only else ["lm2vec", "llm2vec"]
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for round_number in range(args.rounds):
        for side in sides if round_number % 2 == 0 else sides[::-1]:
            out = args.work_dir / f"{side}-{round_number}.json"
            load = load_average()
            subprocess.run(
                [*commands[side], str(model), str(sentences_path), str(out)],
                check=True,
                cwd=HERE,
                stdout=subprocess.DEVNULL,
            )
            result = json.loads(out.read_text())
            result["load_before"], result["load_after"] = load, load_average()
            out.write_text(json.dumps(result, indent=2))
            results[side].append(result)
            print(
                f"{side:8s} round {round_number}: {result['seconds_per_step']:.2f} s/step, peak RSS "
                f"{result['peak_rss_mib'] / 1024:.2f} GiB, {result['real_tokens_per_pass']:.0f} real of "
                f"{result['positions_per_pass']:.0f} positions/pass x {result['passes_per_step']:.0f} passes, "
                f"load {load:.1f}->{result['load_after']:.1f}",
                flush=True,
            )
    if len(sides) == 2:
        ours = min(r["seconds_per_step"] for r in results["lm2vec"])
        theirs = min(r["seconds_per_step"] for r in results["llm2vec"])
        memory = min(r["peak_rss_mib"] for r in results["lm2vec"]) / min(r["peak_rss_mib"] for r in results["llm2vec"])
        print(f"speed-up (best of rounds) {theirs / ours:.2f}x (goal >= 2), peak RSS ratio {memory:.2f} (goal <= 0.33)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
