"""Peak RSS of MNTP steps against corpus size: the default (the corpus loaded through `datasets` and packed whole)
and `streaming = true` (Parquet row groups read a window at a time).

    .venv/bin/python benchmarks/stream_memory.py                       # 1x, 10x, 100x of a 20 MB base; default 1x, 10x
    .venv/bin/python benchmarks/stream_memory.py --base-mb 2 --scales 1,10 --steps 2    # a smoke run

A synthetic corpus of Parquet shards (paragraphs of the tiny test tokenizer's words, 10,000-row groups as `lm2vec
data` writes them; shard k is the base shard's rows in a seeded order of its own) is generated for each scale under
a temporary folder (`--work-dir`, removed at the end). Each run is a fresh process training `--steps` MNTP steps of
the tiny random Llama (tests/tiny_models.py), batch 8 x 64 tokens, one thread, with a `datasets` cache of its own;
the table gives its peak RSS (its own rusage), the size that cache grew to and the wall time, as markdown.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from plan_check import peak_rss  # noqa: E402

ROW_GROUP = 10_000  # rows a group, as lm2vec.data.shards writes them


def write_corpus(folder: Path, base_mb: float, scale: int) -> int:
    """`scale` shards of about `base_mb` MB of text each; the Parquet bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.tiny_models import WORDS

    rng = random.Random(0)
    texts, size = [], 0
    while size < base_mb * 1e6:
        texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120))))
        size += len(texts[-1])
    base = pa.table({"text": texts})
    folder.mkdir(parents=True)
    for shard in range(scale):
        order = list(range(len(texts)))
        random.Random(shard).shuffle(order)
        pq.write_table(base.take(order), folder / f"train-{shard:05d}.parquet", row_group_size=ROW_GROUP)
    return sum(path.stat().st_size for path in folder.iterdir())


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def child(model: str, data: str, out: str, cache: str, steps: int, streaming: bool) -> None:
    """One measured run (in its own process), with a `datasets` cache of its own."""
    os.environ.update(HF_DATASETS_CACHE=cache, HF_HUB_OFFLINE="1")
    import torch

    from lm2vec.training.mntp import MNTPConfig, train_mntp

    torch.set_num_threads(1)

    options = MNTPConfig(
        model=model,
        data=data,
        output_dir=out,
        max_seq_length=64,
        per_device_batch_size=8,
        max_steps=steps,
        save_steps=steps + 1,
        logging_steps=1,
        mask_token="<unk>",
        eval_on_start=False,
        validation_fraction=0,
        streaming=streaming,
    )
    train_mntp(options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-mb", type=float, default=20.0, help="text per shard (the 1x corpus), in MB")
    parser.add_argument("--scales", default="1,10,100", help="corpus sizes in base shards, streamed")
    parser.add_argument("--default-scales", default="1,10", help="the sizes also run without streaming")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)  # MODEL DATA OUT CACHE STEPS STREAMING
    args = parser.parse_args()
    if args.child:
        model, data, out, cache, steps, streaming = args.child
        return child(model, data, out, cache, int(steps), streaming == "1")

    from tests.tiny_models import save_tiny_model

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="lm2vec-stream-"))
    model = save_tiny_model("llama", work / "model")
    scales = [int(s) for s in args.scales.split(",")]
    default_scales = {int(s) for s in args.default_scales.split(",") if s}
    rows = []
    try:
        for scale in scales:
            data = work / f"corpus-{scale}x"
            parquet = write_corpus(data, args.base_mb, scale)
            for streaming in (False, True):
                if not streaming and scale not in default_scales:
                    continue
                name = f"{scale}x-{'streaming' if streaming else 'default'}"
                cache = work / f"hf-cache-{name}"
                command = [sys.executable, __file__, "--child", str(model), str(data), str(work / name), str(cache)]
                command += [str(args.steps), "1" if streaming else "0"]
                start = time.perf_counter()
                rss = peak_rss(command, work / f"{name}.log")
                seconds = time.perf_counter() - start
                cache_bytes = folder_bytes(cache) if cache.exists() else 0
                rows.append((scale, parquet, streaming, rss, cache_bytes, seconds))
                print(f"{name}: {rss / 2**20:.0f} MiB, cache {cache_bytes / 1e6:.0f} MB, {seconds:.0f} s", flush=True)
            shutil.rmtree(data)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.steps} MNTP steps (batch 8 x 64 tokens, tiny random Llama, one thread):\n")
    print("| corpus | Parquet | mode | peak RSS (MiB) | `datasets` cache written | wall (s) |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for scale, parquet, streaming, rss, cache_bytes, seconds in rows:
        mode = "streaming" if streaming else "default"
        print(
            f"| {scale}x | {parquet / 1e6:,.0f} MB | {mode} | {rss / 2**20:,.0f} | {cache_bytes / 1e6:,.0f} MB "
            f"| {seconds:,.0f} |"
        )


if __name__ == "__main__":
    main()
