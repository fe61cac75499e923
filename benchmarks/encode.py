"""Encoding throughput of lm2vec against the official llm2vec 0.2.3, same model, same sentences, same machine.

    benchmarks/llm2vec_baseline/setup.sh              # once: llm2vec 0.2.3's venv
    .venv/bin/python benchmarks/encode.py --repeats 3  # add --limit 200 for a quick run

SmolLM2-135M (`pkg:smollm2`), fp32, CPU, batch 32, mean pooling, bidirectional attention, on the unique sentences
of STS-B dev. The model is first converted for llm2vec 0.2.3 and checked (llm2vec_baseline/convert.py). Then each
round encodes all sentences once with each implementation, each in a fresh process (its own peak RSS, nothing
shared but the OS file cache), alternating which goes first; a run that shared the CPUs with another job is
repeated. Figures are medians over rounds; the embeddings of both sides are compared by cosine in every round.

    .venv/bin/python benchmarks/encode.py --backends torch,onnx,onnx-int8 --source pkg:gemma3-270m

compares lm2vec's own backends instead, side by side in one run, each in a fresh process: the source is exported
once with its ONNX files (`lm2vec convert --onnx`), then torch fp32, the fp32 ONNX graph and its int8 copy encode
the same sentences; the table gives real tokens/s, the ratio to torch, the cosine to torch fp32, STS-B dev (Spearman
of the cosines over the pairs whose sentences were encoded: all 1,500 without --limit) and peak RSS.
`gguf-f16` and `gguf-q8_0` run the source's GGUF (`lm2vec convert --gguf`, with `--llama-cpp DIR` or
`$LLAMA_CPP_DIR`) in llama.cpp through llama-cpp-python (`pip install -e .[gguf]`), with the file's mean pooling.
`torch-pruned-20` (30, 40) is torch fp32 with that share of the top decoder layers dropped at load (`prune_layers`):
its speed is that of a model trained pruned; its cosine to the whole model only says how far the pruning moves it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from llm2vec_baseline import measure
from llm2vec_baseline.convert import (
    BENCH_DIR,
    DEFAULT_DATA,
    HERE,
    LLM2VEC_PYTHON,
    check,
    convert,
    read_sts_pairs,
    read_sts_sentences,
)

from lm2vec import LM2Vec
from lm2vec.modeling.gguf import find_converter, gguf_file_name
from lm2vec.modeling.onnx import ONNX_FILE, QUANTIZED_FILE

# --backends names: (LM2Vec.from_pretrained backend, ONNX file, share of the top layers pruned)
BACKENDS = {
    "torch": ("torch", "", 0.0),
    "onnx": ("onnx", ONNX_FILE, 0.0),
    "onnx-int8": ("onnx", QUANTIZED_FILE, 0.0),
    **{f"torch-pruned-{percent}": ("torch", "", percent / 100) for percent in (20, 30, 40)},
}

# --backends names run by llama.cpp (llama-cpp-python, the `gguf` extra) on the source's GGUF of that type
GGUF_BACKENDS = {"gguf-f16": "f16", "gguf-q8_0": "q8_0"}

AGREEMENT = 0.9999  # mean cosine required when pooling and tokenization match
TARGET_SPEEDUP = 1.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# (result key, label, format); the ratio column is lm2vec / llm2vec.
ROWS = [
    ("sentences_per_s", "sentences/s", "{:.1f}"),
    ("tokens_per_s", "real tokens/s", "{:.1f}"),
    ("seconds", "encode time (s)", "{:.2f}"),
    ("cpu_cores_used", "CPU cores used", "{:.2f}"),
    ("others_cores", "cores used by others", "{:.2f}"),
    ("padding", "padding fraction", "{:.3f}"),
    ("positions", "batch positions", "{:.0f}"),
    ("real_tokens", "real tokens", "{:.0f}"),
    ("peak_rss_mib", "peak RSS (MiB)", "{:.0f}"),
    ("peak_rss_loaded_mib", "peak RSS loading (MiB)", "{:.0f}"),
    ("load_seconds", "load time (s)", "{:.2f}"),
]


def run_ours(source: str, sentences_path: Path, out_prefix: Path, batch_size: int, backend: str = "torch") -> None:
    """The lm2vec worker, run by `--worker` in a fresh process; `backend` is a key of BACKENDS."""
    sentences = measure.load_sentences(sentences_path)
    start = time.perf_counter()
    kind, onnx_file, prune_layers = BACKENDS[backend]
    options = {"onnx_file": onnx_file} if onnx_file else {}
    encoder = LM2Vec.from_pretrained(
        source, pooling="mean", dtype=torch.float32, device="cpu", backend=kind, prune_layers=prune_layers, **options
    )
    load_seconds = time.perf_counter() - start

    def encode(batch: list[str]) -> np.ndarray:
        return encoder.encode(batch, batch_size=batch_size, show_progress_bar=False)

    embeddings, result = measure.benchmark(encode, encoder.model, sentences, batch_size)
    result.update(
        implementation="lm2vec" if backend == "torch" else f"lm2vec {backend}",
        load_seconds=load_seconds,
        backbone=type(encoder.model).__name__,
        attn_implementation=encoder.model.config._attn_implementation,
        transformers=transformers.__version__,
    )
    measure.save(out_prefix, embeddings, result)


class GgufTokens:
    """What llama.cpp computes, counted as BatchStats counts a torch backbone: its batches hold no padding, so
    positions are the real tokens (llama.cpp's own tokenizer, BOS included)."""

    def __init__(self, model, sentences: list[str], batch_size: int) -> None:
        self.real_tokens = self.positions = sum(len(model.tokenize(text.encode())) for text in sentences)
        self.batches = -(-len(sentences) // batch_size)

    def reset(self) -> None:  # the counts above are the timed encode's; the warm-up is not counted
        pass

    def remove(self) -> None:
        pass


def run_gguf(folder: Path, sentences_path: Path, out_prefix: Path, batch_size: int, backend: str) -> None:
    """The llama.cpp worker: the GGUF of `folder` embedded by llama-cpp-python with the file's pooling, `batch_size`
    texts a call, on torch's thread count. No torch operation runs in this process (llama_decode crashed after
    torch's OpenMP threads had run, gguf_check.py)."""
    from gguf_check import llama_cpp_model

    sentences = measure.load_sentences(sentences_path)
    start = time.perf_counter()
    model = llama_cpp_model(folder / gguf_file_name(GGUF_BACKENDS[backend]), torch.get_num_threads(), False)
    load_seconds = time.perf_counter() - start

    def encode(batch: list[str]) -> np.ndarray:
        return np.asarray(
            [v for at in range(0, len(batch), batch_size) for v in model.embed(batch[at : at + batch_size])]
        )

    counted = GgufTokens(model, sentences, batch_size)
    embeddings, result = measure.benchmark(encode, counted, sentences, batch_size)
    result.update(implementation=f"llama.cpp {GGUF_BACKENDS[backend]}", load_seconds=load_seconds)
    measure.save(out_prefix, embeddings, result)


def cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already counted in user
    return (total - values[3] - values[4]) / CLOCK_TICKS, total / CLOCK_TICKS  # idle and iowait are not busy


def wait_for_idle(max_wait: float, threshold: float = 0.2) -> None:
    """Wait up to `max_wait` s until other jobs use less than `threshold` of the machine's CPUs."""
    deadline = time.monotonic() + max_wait
    while True:
        busy, total = cpu_seconds()
        time.sleep(2.0)
        busy2, total2 = cpu_seconds()
        if (busy2 - busy) / max(total2 - total, 1e-9) < threshold or time.monotonic() > deadline:
            return


def run_worker(command: list[str], out_prefix: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Run one worker; add `others_cores`, the CPU cores that other processes kept busy meanwhile.

    A job beside torch's OpenMP threads slows them several times over (measured here: a matmul on 2 threads ran
    3.5x slower next to one busy process), so a run that shared the machine says nothing about either side."""
    # Offline: neither side may reach for the hub; quiet: warnings of old transformers are expected noise.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    busy, _ = cpu_seconds()
    children = _children_cpu_seconds()
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - start
    others = cpu_seconds()[0] - busy - (_children_cpu_seconds() - children)
    result = json.loads(Path(f"{out_prefix}.json").read_text())
    result["others_cores"] = max(others, 0.0) / wall
    return np.load(f"{out_prefix}.npy"), result


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def report(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], agreement: list[np.ndarray]) -> bool:
    """Print the median table; return whether the embeddings agree."""
    print(f"\n{'':24}{'lm2vec':>14}{'llm2vec 0.2.3':>16}{'ratio':>9}")
    for key, label, fmt in ROWS:
        mine, their = (statistics.median(r[key] for r in runs) for runs in (ours, theirs))
        ratio = f"{mine / their:.2f}x" if their else "-"
        print(f"{label:24}{fmt.format(mine):>14}{fmt.format(their):>16}{ratio:>9}")
    print(
        "per round, real tokens/s: lm2vec "
        + ", ".join(f"{r['tokens_per_s']:.0f}" for r in ours)
        + " | llm2vec "
        + ", ".join(f"{r['tokens_per_s']:.0f}" for r in theirs)
    )
    speedup = statistics.median(r["tokens_per_s"] for r in ours) / statistics.median(r["tokens_per_s"] for r in theirs)
    mean_cos = min(float(c.mean()) for c in agreement)
    min_cos = min(float(c.min()) for c in agreement)
    agree = mean_cos >= AGREEMENT
    print(
        f"speedup (median real tokens/s): {speedup:.2f}x, target {TARGET_SPEEDUP}x: "
        f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}"
    )
    print(
        f"cosine lm2vec vs llm2vec (worst round): mean {mean_cos:.7f}, min {min_cos:.7f}, "
        f"required mean >= {AGREEMENT}: {'ok' if agree else 'FAILED'}"
    )
    first = ours[0]
    print(
        f"setup: {first['sentences']} sentences, torch {first['torch']} with {first['torch_threads']} threads, "
        f"lm2vec on transformers {first['transformers']} ({first['attn_implementation']}), "
        f"llm2vec on transformers {theirs[0]['transformers']} ({theirs[0]['attn_implementation']})"
    )
    return agree


def sts_spearman(embeddings: np.ndarray, sentences_path: Path, data: Path) -> tuple[float, int]:
    """Spearman correlation of the cosines with the gold scores over the STS-B pairs of `data` whose two sentences
    are among those encoded (all with no --limit), and the number of such pairs."""
    from scipy.stats import spearmanr

    row = {sentence: number for number, sentence in enumerate(measure.load_sentences(sentences_path))}
    kept = [(row[a], row[b], score) for a, b, score in read_sts_pairs(data) if a in row and b in row]
    if len(kept) < 2:
        return float("nan"), len(kept)
    first, second, gold = (np.array(column) for column in zip(*kept, strict=True))
    predicted = cosines(embeddings[first], embeddings[second])
    return float(spearmanr(predicted, gold).statistic), len(kept)


def compare_backends(args: argparse.Namespace, sentences_path: Path) -> int:
    """Each backend of `args.backends` encodes the sentences in a fresh process, every round; the first is the
    reference the others' cosines and speed ratios are taken against."""
    from lm2vec.modeling.export import export_encoder

    backends = args.backends.split(",")
    if unknown := set(backends) - {*BACKENDS, *GGUF_BACKENDS}:
        raise SystemExit(f"unknown backends {sorted(unknown)}; choose from {', '.join([*BACKENDS, *GGUF_BACKENDS])}")
    gguf_types = [GGUF_BACKENDS[name] for name in backends if name in GGUF_BACKENDS]
    if gguf_types:  # before any work: the GGUF needs llama.cpp's converter, and llama-cpp-python runs it
        find_converter(args.llama_cpp)
        if importlib.util.find_spec("llama_cpp") is None:
            raise SystemExit("the gguf backends need llama-cpp-python: pip install -e .[gguf] (compiles llama.cpp)")
    exported = args.work_dir / ("model-onnx-" + args.source.replace(":", "-").replace("/", "-"))
    if not (exported / QUANTIZED_FILE).is_file():
        export_encoder(args.source, exported, onnx=True, pooling="mean", device="cpu")
    gguf_folder = exported.with_name(exported.name + "-gguf")
    if not all((gguf_folder / gguf_file_name(gguf_type)).is_file() for gguf_type in gguf_types):
        types = [option for gguf_type in gguf_types for option in ("--gguf-type", gguf_type)]
        convert = [sys.executable, "-m", "lm2vec", "convert", str(exported), str(gguf_folder), *types]
        subprocess.run([*convert, "--llama-cpp", str(args.llama_cpp)], check=True)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in backends}
    agreement: dict[str, list[np.ndarray]] = {name: [] for name in backends}
    for round_ in range(args.repeats):
        embeddings = {}
        for name in backends if round_ % 2 == 0 else backends[::-1]:
            prefix = args.work_dir / f"backend-{name}-{round_}"
            folder = gguf_folder if name in GGUF_BACKENDS else exported
            command = [sys.executable, __file__, "--source", str(folder), "--batch-size", str(args.batch_size)]
            command += ["--backend", name, "--sentences", str(sentences_path), "--worker", str(prefix)]
            wait_for_idle(args.wait_idle)
            embeddings[name], result = run_worker(command, prefix)
            results[name].append(result)
            print(
                f"round {round_ + 1}/{args.repeats} {name}: {result['tokens_per_s']:.1f} real tokens/s, peak RSS "
                f"{result['peak_rss_mib']:.0f} MiB, others used {result['others_cores']:.2f} cores",
                flush=True,
            )
        for name in backends:
            agreement[name].append(cosines(embeddings[name], embeddings[backends[0]]))
        for name in backends:  # embeddings do not change between rounds: the last round's score
            results[name][-1]["stsb_spearman"], pairs = sts_spearman(embeddings[name], sentences_path, args.data)
    reference = statistics.median(r["tokens_per_s"] for r in results[backends[0]])
    header = f"{'backend':16}{'real tokens/s':>15}{'ratio':>8}{'cosine mean':>13}{'cosine min':>12}{'STS-B dev':>11}"
    print(f"\n{header}{'peak RSS MiB':>14}")
    for name in backends:
        speed = statistics.median(r["tokens_per_s"] for r in results[name])
        mean_cos = min(float(c.mean()) for c in agreement[name])
        min_cos = min(float(c.min()) for c in agreement[name])
        rss = statistics.median(r["peak_rss_mib"] for r in results[name])
        sts = 100 * results[name][-1]["stsb_spearman"]
        row = f"{name:16}{speed:>15.1f}{speed / reference:>7.2f}x{mean_cos:>13.5f}{min_cos:>12.5f}{sts:>11.2f}"
        print(f"{row}{rss:>14.0f}")
    print(
        f"setup: {args.source}, {len(measure.load_sentences(sentences_path))} sentences, batch {args.batch_size}; "
        f"STS-B dev: Spearman x 100 of cosine over the {pairs} pairs whose two sentences were encoded"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each runs both implementations once")
    parser.add_argument("--limit", type=int, help="only the first N unique sentences (quick run)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--source", default="pkg:smollm2", help="any lm2vec model source")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="STS-B file (tab-separated)")
    parser.add_argument("--python", type=Path, default=LLM2VEC_PYTHON, help="python of the llm2vec 0.2.3 venv")
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / "encode", help="converted model, outputs")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=300,
        help="before each run, wait up to this many seconds for other jobs to leave the CPUs",
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.1,
        help="a run during which other processes kept more CPU cores busy than this is repeated",
    )
    parser.add_argument("--retries", type=int, default=3, help="repeats of a contended run before keeping it")
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    parser.add_argument(
        "--backends",
        help=f"compare lm2vec's backends instead of llm2vec, comma-separated from {', '.join(BACKENDS)}; the first "
        "is the reference",
    )
    parser.add_argument(
        "--llama-cpp",
        type=Path,
        default=os.environ.get("LLAMA_CPP_DIR"),
        help="a llama.cpp checkout (or the llama-cpp-python sdist's vendor/llama.cpp), for the gguf backends",
    )
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)  # internal: the worker's backend
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: run lm2vec, write here
    parser.add_argument("--sentences", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker and args.backend in GGUF_BACKENDS:
        run_gguf(Path(args.source), args.sentences, args.worker, args.batch_size, args.backend)
        return 0
    if args.worker:
        run_ours(args.source, args.sentences, args.worker, args.batch_size, args.backend)
        return 0
    if not args.backends and not args.python.is_file():
        parser.error(f"{args.python} not found: run benchmarks/llm2vec_baseline/setup.sh first.")

    sentences = read_sts_sentences(args.data)[: args.limit]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    sentences_path = args.work_dir / "sentences.json"
    sentences_path.write_text(json.dumps(sentences))
    if args.backends:
        return compare_backends(args, sentences_path)
    converted = convert(args.source, args.work_dir / "model-llm2vec")
    checked = check(args.source, converted, sentences, args.python)
    print("conversion check:", json.dumps(checked))

    def ours_command(prefix: Path) -> list[str]:
        return [
            sys.executable,
            __file__,
            "--source",
            args.source,
            "--batch-size",
            str(args.batch_size),
            "--sentences",
            str(sentences_path),
            "--worker",
            str(prefix),
        ]

    def theirs_command(prefix: Path) -> list[str]:
        return [
            str(args.python),
            str(HERE / "encode_llm2vec.py"),
            str(converted),
            str(sentences_path),
            str(prefix),
            "--batch-size",
            str(args.batch_size),
        ]

    commands = {"lm2vec": ours_command, "llm2vec": theirs_command}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    agreement = []
    for round_ in range(args.repeats):
        embeddings = {}
        for name in list(commands) if round_ % 2 == 0 else list(commands)[::-1]:
            prefix = args.work_dir / f"{name}-{round_}"
            for attempt in range(1 + args.retries):
                wait_for_idle(args.wait_idle)
                embeddings[name], result = run_worker(commands[name](prefix), prefix)
                result["attempts"] = attempt + 1
                contended = result["others_cores"] > args.max_others
                print(
                    f"round {round_ + 1}/{args.repeats} {result['implementation']}: "
                    f"{result['sentences_per_s']:.1f} sentences/s, {result['tokens_per_s']:.1f} real tokens/s, "
                    f"peak RSS {result['peak_rss_mib']:.0f} MiB, {result['cpu_cores_used']:.2f} cores used, "
                    f"others used {result['others_cores']:.2f} cores" + (" (contended)" if contended else ""),
                    flush=True,
                )
                if not contended:
                    break
            results[name].append(result)
        agreement.append(cosines(embeddings["lm2vec"], embeddings["llm2vec"]))

    agree = report(results["lm2vec"], results["llm2vec"], agreement)
    if args.json:
        args.json.write_text(json.dumps({"check": checked, **results}, indent=2) + "\n")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
