"""MNTP training step of lm2vec against the official llm2vec 0.2.3: same weights, same batch, same machine.

    benchmarks/llm2vec_baseline/setup.sh                       # once: llm2vec 0.2.3's venv
    .venv/bin/python benchmarks/train_mntp.py --steps 5 --rounds 2    # sparse head, dense head, llm2vec
    .venv/bin/python benchmarks/train_mntp.py --gradient-checkpointing   # the same three, plus each with it
    .venv/bin/python benchmarks/train_mntp.py --steps 5 --rounds 2 --variants lm2vec-sparse lm2vec-dense \
        llm2vec lm2vec-sparse-peft lm2vec-sparse-gc llm2vec-gc          # what benchmarks/README.md reports

SmolLM2-135M (`pkg:smollm2`; llm2vec loads the copy llm2vec_baseline/convert.py writes, same weights), fp32 on
CPU, SDPA, bidirectional, LoRA r=16/alpha=32/dropout 0.05 on the seven projections of the backbone, LM head
frozen, AdamW lr 5e-5. The batch: 8 blocks of 128 tokens of English Wikipedia (the first pages of the sample dump
in gensim's test data, rendered by lm2vec.data, packed with EOS between pages as `lm2vec train mntp` packs them),
masked by lm2vec's `MNTPCollator` (mask_prob 0.2, bert strategy, "_" as the mask token, as llm2vec's `blank`).
The masked ids and labels are written to `batch.npz`; every worker reads exactly those tensors.

Variants, each in a fresh process: `lm2vec-sparse` (`build_mntp_model`: LM head only at labelled positions, fused
LoRA layers; what `lm2vec train mntp` runs), `lm2vec-dense` (`sparse_lm_head=False`), `lm2vec-sparse-peft` and
`lm2vec-dense-peft` (the same with peft's own LoRA layers, i.e. without lm2vec.training.lora), `llm2vec`
(`LlamaBiForMNTP` + peft, see llm2vec_baseline/mntp_llm2vec.py); `-gc` adds gradient checkpointing. A step is
forward + loss, backward, optimizer step; one warm-up step, then `--steps` timed ones. The first (warm-up) step's
loss is the loss with LoRA B = 0, i.e. of the base model, and must agree across variants (`--loss-tolerance`,
relative). Peak RSS is the worker's VmHWM; phase peaks reset VmHWM before each phase. A run during which other
processes kept more than `--max-others` cores busy is repeated (up to `--retries` times) after waiting for idle
CPUs. Outputs (per-run JSON, summary.json) go to `--work-dir` (default ~/.cache/lm2vec-bench/train_mntp).
"""

from __future__ import annotations

import argparse
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
from encode import cpu_seconds, wait_for_idle
from llm2vec_baseline import measure
from llm2vec_baseline.convert import BENCH_DIR, HERE, LLM2VEC_PYTHON, convert

VARIANTS = ("lm2vec-sparse", "lm2vec-dense", "llm2vec")
EXTRA_VARIANTS = ("lm2vec-sparse-peft", "lm2vec-dense-peft")  # lm2vec with peft's own LoRA layers (not fused)
GOAL_SPEEDUP = 1.5
GOAL_MEMORY = 0.5


def wiki_texts(limit_chars: int = 200_000) -> list[str]:
    """Plain text of the first articles of gensim's sample English Wikipedia dump (redirects skipped)."""
    import gensim

    from lm2vec.data.dump import DumpReader
    from lm2vec.data.languages import language_profile
    from lm2vec.data.wikitext import WikitextCleaner

    dump = (
        Path(gensim.__file__).parent
        / "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    )
    reader = DumpReader(dump)
    pages = reader.pages()
    texts: list[str] = []
    try:
        for page in pages:
            if page.is_redirect or page.namespace != 0:
                continue
            cleaner = WikitextCleaner(language_profile("en"), reader.siteinfo.namespaces, True)
            texts.append("\n\n".join(cleaner.paragraphs(page.text)))
            if sum(map(len, texts)) >= limit_chars:
                break
    finally:
        pages.close()
    return texts


def make_batch(source: str, path: Path, batch_size: int, block_size: int, seed: int) -> dict[str, Any]:
    """Pack, mask and save the batch; returns a description of it."""
    import datasets
    from transformers import AutoConfig, AutoTokenizer

    from lm2vec.modeling.sources import resolve_source
    from lm2vec.training.masking import IGNORE_INDEX, MNTPCollator, mask_token_for, sample_seed
    from lm2vec.training.mntp import pack_blocks

    folder = resolve_source(source)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab_size = AutoConfig.from_pretrained(folder).vocab_size
    texts = wiki_texts()
    blocks = pack_blocks(datasets.Dataset.from_dict({"text": texts}), tokenizer, block_size)
    if len(blocks) < batch_size:
        raise ValueError(f"only {len(blocks)} blocks of {block_size} tokens in the sample text")
    collator = MNTPCollator.for_tokenizer(tokenizer, vocab_size, mask_prob=0.2, strategy="bert")
    features = [{"input_ids": blocks[j]["input_ids"], "mask_seed": sample_seed(seed, j)} for j in range(batch_size)]
    batch = collator(features)
    np.savez(path, input_ids=batch["input_ids"].numpy(), labels=batch["labels"].numpy())
    labels = batch["labels"]
    return {
        "shape": list(batch["input_ids"].shape),
        "mask_token": mask_token_for(tokenizer)[0],
        "masked_tokens": int((labels != IGNORE_INDEX).sum()),
        "mask_token_inputs": int((batch["input_ids"] == collator.mask_token_id).sum()),
        "pages": len(texts),
    }


def run_ours(variant: str, source: str, batch_path: str, out: str, steps: int) -> None:
    """The lm2vec worker, run by `--worker` in a fresh process."""
    import transformers

    from lm2vec.modeling.loading import backbone_of
    from lm2vec.training.adapters import add_lora
    from lm2vec.training.mntp import MNTPConfig, MNTPModel, build_mntp_model, load_causal_lm

    rss_imports = measure.rss_mib()
    batch = np.load(batch_path)
    input_ids = torch.from_numpy(batch["input_ids"]).long()
    labels = torch.from_numpy(batch["labels"]).long()
    attention_mask = torch.ones_like(input_ids)
    checkpointing = variant.endswith("-gc")
    name = variant.removesuffix("-gc")
    sparse, fused = name.startswith("lm2vec-sparse"), not name.endswith("-peft")

    causal_lm, _, _ = load_causal_lm(source, attn_implementation="sdpa")
    torch.manual_seed(0)
    options = MNTPConfig(model=source, sparse_lm_head=sparse, gradient_checkpointing=checkpointing, fused_lora=fused)
    if fused:  # what `lm2vec train mntp` builds
        model = build_mntp_model(causal_lm, options)
    else:  # the same, with peft's own LoRA layers (lm2vec before its fused LoRA layers)
        backbone = add_lora(backbone_of(causal_lm), options)
        model = MNTPModel(backbone, causal_lm.get_output_embeddings(), causal_lm.config, sparse)
    if checkpointing:  # what the Trainer does with gradient_checkpointing=True (training_arguments' kwargs)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5)

    def loss_of_batch() -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)["loss"]

    result = measure.time_training(loss_of_batch, optimizer, steps)
    result.update(
        implementation=f"lm2vec MNTPModel (sparse_lm_head={sparse}, {'fused' if fused else 'peft'} LoRA layers)",
        gradient_checkpointing=checkpointing,
        transformers=transformers.__version__,
        attn_implementation=causal_lm.config._attn_implementation,
        trainable_parameters=sum(p.numel() for p in trainable),
        batch_shape=list(input_ids.shape),
        labelled_tokens=int((labels[:, 1:] != -100).sum()),
        rss_imports_mib=rss_imports,
    )
    Path(out).write_text(json.dumps(result, indent=2))


def command_for(variant: str, args: argparse.Namespace, model_dir: Path, batch_path: Path, out: Path) -> list[str]:
    if variant.startswith("llm2vec"):
        command = [str(args.python), str(HERE / "mntp_llm2vec.py"), str(model_dir), str(batch_path), str(out)]
        return (
            command + ["--steps", str(args.steps)] + (["--gradient-checkpointing"] if variant.endswith("-gc") else [])
        )
    return [sys.executable, __file__, "--source", args.source, "--steps", str(args.steps)] + [
        "--worker",
        variant,
        str(batch_path),
        str(out),
    ]


def run_worker(command: list[str], out: Path) -> dict[str, Any]:
    """Run one worker; add the load average around it and `others_cores`, the CPU cores other processes used."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    load_before = os.getloadavg()[0]
    busy, _ = cpu_seconds()
    children = _children_cpu_seconds()
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=HERE, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    others = cpu_seconds()[0] - busy - (_children_cpu_seconds() - children)
    result = json.loads(out.read_text())
    result.update(load_before=load_before, load_after=os.getloadavg()[0], others_cores=max(others, 0.0) / wall)
    out.write_text(json.dumps(result, indent=2))
    return result


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarise(results: dict[str, list[dict[str, Any]]], tokens: int, tolerance: float) -> bool:
    """Print the table (medians over the rounds), the loss check and the goals; return whether the losses agree.

    `above imports`: peak RSS minus the RSS right after the worker's imports (lm2vec's MNTP module imports
    transformers 5's Trainer and datasets, llm2vec's worker only its model classes and peft)."""
    keys = ("seconds_per_step", "peak_rss_mib", "rss_imports_mib", "cpu_cores_used", "others_cores")
    medians = {
        variant: {key: statistics.median(r[key] for r in runs) for key in keys}
        for variant, runs in results.items()
        if runs
    }
    print(
        f"\n{'variant':22}{'s/step':>8}{'tokens/s':>10}{'peak RSS MiB':>14}{'above imports':>15}"
        f"{'cores':>7}{'others':>8}  first loss"
    )
    for variant, m in medians.items():
        first = results[variant][0]["first_loss"]
        print(
            f"{variant:22}{m['seconds_per_step']:8.2f}{tokens / m['seconds_per_step']:10.1f}{m['peak_rss_mib']:14.0f}"
            f"{m['peak_rss_mib'] - m['rss_imports_mib']:15.0f}{m['cpu_cores_used']:7.2f}{m['others_cores']:8.2f}"
            f"  {first:.6f}"
        )
    for variant, runs in results.items():
        for r in runs:
            w, steps = r["warmup"], r["steps"]
            seconds = ", ".join(f"{s['seconds']:.2f}" for s in steps)
            phases = "/".join(
                f"{statistics.mean(s[p] for s in steps):.2f}" for p in ("forward", "backward", "optimizer")
            )
            print(
                f"  {variant}: steps {seconds} s (forward/backward/optimizer {phases} s); RSS after imports "
                f"{r['rss_imports_mib']:.0f}, loaded {r['rss_loaded_mib']:.0f}, warm-up peaks forward "
                f"{w['peak_forward_mib']:.0f} / backward {w['peak_backward_mib']:.0f} / optimizer "
                f"{w['peak_optimizer_mib']:.0f} MiB; load {r['load_before']:.2f}->{r['load_after']:.2f}"
            )
    agree = True
    reference = next((v for v in ("llm2vec", "llm2vec-gc") if results.get(v)), None)
    if reference is not None:
        their_loss = results[reference][0]["first_loss"]
        worst = max(abs(r["first_loss"] - their_loss) / abs(their_loss) for runs in results.values() for r in runs)
        agree = worst <= tolerance
        print(
            f"loss check (LoRA B = 0, same batch): llm2vec {their_loss:.6f}, largest relative difference "
            f"{worst:.2e}, tolerance {tolerance:g}: {'ok' if agree else 'FAILED'}"
        )
    for suffix in ("", "-gc"):
        theirs = medians.get(f"llm2vec{suffix}")
        if theirs is None:
            continue
        for ours in (*VARIANTS[:2], *EXTRA_VARIANTS):
            mine = medians.get(ours + suffix)
            if mine is None:
                continue
            speedup = theirs["seconds_per_step"] / mine["seconds_per_step"]
            memory = mine["peak_rss_mib"] / theirs["peak_rss_mib"]
            above = (mine["peak_rss_mib"] - mine["rss_imports_mib"]) / (
                theirs["peak_rss_mib"] - theirs["rss_imports_mib"]
            )
            goals = (
                f" (goals >= {GOAL_SPEEDUP}x: {'met' if speedup >= GOAL_SPEEDUP else 'NOT met'}, "
                f"<= {GOAL_MEMORY}: {'met' if memory <= GOAL_MEMORY else 'NOT met'})"
                if not suffix
                else ""
            )
            print(
                f"{ours + suffix} vs llm2vec{suffix}: tokens/s {speedup:.2f}x, peak RSS {memory:.2f}x "
                f"(above imports {above:.2f}x){goals}"
            )
    return agree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="pkg:smollm2", help="any lm2vec model source (a Llama architecture)")
    every = [*VARIANTS, *EXTRA_VARIANTS]
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*every, *(f"{v}-gc" for v in every)])
    parser.add_argument("--gradient-checkpointing", action="store_true", help="also run each variant with it")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run, after one warm-up step")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every variant, alternating the order")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="mask seed")
    parser.add_argument("--python", type=Path, default=LLM2VEC_PYTHON, help="python of the llm2vec 0.2.3 venv")
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / "train_mntp")
    parser.add_argument("--wait-idle", type=float, default=300, help="wait up to this long for idle CPUs per run")
    parser.add_argument("--max-others", type=float, default=0.1, help="cores used by others that make a run contended")
    parser.add_argument("--retries", type=int, default=2, help="repeats of a contended run before keeping it")
    parser.add_argument("--loss-tolerance", type=float, default=1e-4, help="relative, first-step loss vs llm2vec")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "BATCH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_ours(args.worker[0], args.source, args.worker[1], args.worker[2], args.steps)
        return 0

    variants = list(
        dict.fromkeys(args.variants + ([f"{v}-gc" for v in args.variants] if args.gradient_checkpointing else []))
    )
    if any(v.startswith("llm2vec") for v in variants) and not args.python.is_file():
        parser.error(f"{args.python} not found: run benchmarks/llm2vec_baseline/setup.sh first.")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = convert(args.source, BENCH_DIR / "encode" / "model-llm2vec")
    batch_path = args.work_dir / "batch.npz"
    described = make_batch(args.source, batch_path, args.batch_size, args.block_size, args.seed)
    tokens = args.batch_size * args.block_size
    print(f"batch: {json.dumps(described)}; torch threads {torch.get_num_threads()}", flush=True)

    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_number in range(args.rounds):
        for variant in variants if round_number % 2 == 0 else variants[::-1]:
            out = args.work_dir / f"{variant}-{round_number}.json"
            for attempt in range(1 + args.retries):
                wait_for_idle(args.wait_idle)
                result = run_worker(command_for(variant, args, model_dir, batch_path, out), out)
                result["attempts"] = attempt + 1
                contended = result["others_cores"] > args.max_others
                print(
                    f"round {round_number + 1}/{args.rounds} {variant}: {result['seconds_per_step']:.2f} s/step, "
                    f"{tokens / result['seconds_per_step']:.1f} tokens/s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
                    f"first loss {result['first_loss']:.6f}, {result['cpu_cores_used']:.2f} cores used, others "
                    f"{result['others_cores']:.2f}, load {result['load_before']:.2f}->{result['load_after']:.2f}"
                    + (" (contended)" if contended else ""),
                    flush=True,
                )
                if not contended:
                    break
            results[variant].append(result)
    agree = summarise(results, tokens, args.loss_tolerance)
    (args.work_dir / "summary.json").write_text(json.dumps({"batch": described, **results}, indent=2) + "\n")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
