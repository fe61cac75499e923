"""MNTP under DDP: two CPU processes (gloo) started by torchrun train the same adapter on different batches."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import torch

from tests.tiny_models import WORDS

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_agree_on_the_weights(tiny_llama, tmp_path) -> None:
    rng = random.Random(1)
    data = tmp_path / "texts.txt"
    data.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(100)))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "mntp_ddp_worker.py"),
        str(tiny_llama),
        str(data),
        str(tmp_path),
    ]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]

    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [4, 4]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 4
    assert not set(ranks[0]["batches"]) & set(ranks[1]["batches"])  # each rank trains on its own batches
    assert ranks[0]["weights"].keys() == ranks[1]["weights"].keys() and ranks[0]["weights"]
    for name, weight in ranks[0]["weights"].items():
        torch.testing.assert_close(weight, ranks[1]["weights"][name], rtol=0, atol=1e-7)
    assert any(w.abs().sum() > 0 for k, w in ranks[0]["weights"].items() if "lora_B" in k)  # it did train
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoint-4").is_dir()
