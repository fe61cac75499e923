"""Measurements shared by both benchmark workers (lm2vec's venv and llm2vec 0.2.3's): only stdlib, numpy, torch.

Each worker loads its model, then calls `benchmark` and `save`; encode.py reads the JSON and the .npy back.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class BatchStats:
    """Counts what the backbone really computes: batches, padded positions and real (attended) tokens.

    A forward pre-hook sees the tensors each implementation builds, so both sides are counted the same way."""

    def __init__(self, backbone: nn.Module):
        self.batches = self.positions = self.real_tokens = 0
        self._handle = backbone.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        attention_mask = kwargs.get("attention_mask")
        self.batches += 1
        self.positions += input_ids.numel()
        self.real_tokens += int(attention_mask.sum()) if attention_mask is not None else input_ids.numel()

    def reset(self) -> None:
        self.batches = self.positions = self.real_tokens = 0

    def remove(self) -> None:
        self._handle.remove()


def peak_rss_mib() -> float:
    """High-water RSS of this process image (Linux VmHWM).

    Not getrusage's ru_maxrss: exec keeps the maximum of the image it replaces, so a worker started from a big
    parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def load_sentences(path: str | Path) -> list[str]:
    return json.loads(Path(path).read_text())


def benchmark(
    encode: Callable[[list[str]], np.ndarray], backbone: nn.Module, sentences: list[str], batch_size: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Time one `encode` over all sentences, after one warm-up batch (first-call allocations and lazy init)."""
    rss_loaded = peak_rss_mib()
    stats = BatchStats(backbone)
    encode(sentences[:batch_size])
    stats.reset()
    start, cpu_start = time.perf_counter(), time.process_time()
    embeddings = np.asarray(encode(sentences), dtype=np.float32)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    stats.remove()
    return embeddings, {
        "sentences": len(sentences),
        "seconds": seconds,
        # Cores kept busy (all threads' CPU time / wall time): below torch's thread count when something else
        # ran on the machine at the same time, or when the implementation waits on single-threaded Python.
        "cpu_cores_used": cpu_seconds / seconds,
        "sentences_per_s": len(sentences) / seconds,
        "real_tokens": stats.real_tokens,
        "positions": stats.positions,
        "batches": stats.batches,
        "tokens_per_s": stats.real_tokens / seconds,
        "padding": 1 - stats.real_tokens / stats.positions,
        "peak_rss_loaded_mib": rss_loaded,
        "peak_rss_mib": peak_rss_mib(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def save(prefix: str | Path, embeddings: np.ndarray, result: dict[str, Any]) -> None:
    np.save(f"{prefix}.npy", embeddings)
    Path(f"{prefix}.json").write_text(json.dumps(result, indent=2) + "\n")
