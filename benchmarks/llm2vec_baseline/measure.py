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

    def per_step(self, steps: int) -> dict[str, float]:
        """Positions and real tokens per pass, and passes per step, over `steps` steps counted so far."""
        return {
            "positions_per_pass": self.positions / self.batches,
            "real_tokens_per_pass": self.real_tokens / self.batches,
            "passes_per_step": self.batches / steps,
        }

    def remove(self) -> None:
        self._handle.remove()


def peak_rss_mib() -> float:
    """High-water RSS of this process image (Linux VmHWM).

    Not getrusage's ru_maxrss: exec keeps the maximum of the image it replaces, so a worker started from a big
    parent would report the parent's size."""
    return _status_mib("VmHWM")


def rss_mib() -> float:
    """Current RSS of this process (Linux VmRSS)."""
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def load_sentences(path: str | Path) -> list[str]:
    return json.loads(Path(path).read_text())


def benchmark(
    encode: Callable[[list[str]], np.ndarray], backbone: nn.Module | Any, sentences: list[str], batch_size: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Time one `encode` over all sentences, after one warm-up batch (first-call allocations and lazy init).
    `backbone` is the torch module whose passes are counted, or an object that counts as BatchStats does."""
    rss_loaded = peak_rss_mib()
    stats = BatchStats(backbone) if isinstance(backbone, nn.Module) else backbone
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


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def time_training(loss_of_batch: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, steps: int) -> dict:
    """One warm-up step, then `steps` timed ones; each is forward + loss, backward, optimizer step.

    Returns per-step seconds by phase, losses and the RSS peak of each phase (VmHWM is reset before each phase,
    so a phase's peak is its own), and over the timed steps the CPU cores used (process CPU time / wall time: 2.0
    on this machine when nothing else runs). `peak_rss_mib` is the whole process's peak, loading included."""
    peak = peak_rss_mib()
    can_reset = reset_peak_rss()
    rss_loaded = rss_mib()

    def phase_peak() -> float:
        nonlocal peak
        phase = peak_rss_mib()
        peak = max(peak, phase)
        if can_reset:
            reset_peak_rss()
        return phase

    def step() -> dict[str, Any]:
        start = time.perf_counter()
        rss_start = rss_mib()
        loss = loss_of_batch()
        forward = time.perf_counter()
        forward_peak, rss_forward = phase_peak(), rss_mib()
        loss.backward()
        backward = time.perf_counter()
        backward_peak = phase_peak()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        return {
            "seconds": end - start,
            "forward": forward - start,
            "backward": backward - forward,
            "optimizer": end - backward,
            "loss": loss.item(),
            "rss_start_mib": rss_start,
            "peak_forward_mib": forward_peak,
            "rss_after_forward_mib": rss_forward,
            "peak_backward_mib": backward_peak,
            "peak_optimizer_mib": phase_peak(),
        }

    warmup = step()
    cpu_start, start = time.process_time(), time.perf_counter()
    timed = [step() for _ in range(steps)]
    wall = time.perf_counter() - start
    return {
        "warmup": warmup,
        "steps": timed,
        "first_loss": warmup["loss"],
        "seconds_per_step": wall / steps,
        "cpu_cores_used": (time.process_time() - cpu_start) / wall,
        "rss_loaded_mib": rss_loaded,
        "peak_rss_mib": peak,
        "phase_peaks_reset": can_reset,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
