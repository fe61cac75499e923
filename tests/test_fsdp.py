"""FSDP (a stage's `fsdp`: the frozen weights sharded, the LoRA adapter whole on every process) and multi-node
launches, on CPU processes talking gloo, started by torchrun (tests/fsdp_worker.py): the adapters equal those of
one process trained on the same global batches, contrastive negatives are gathered across the sharded processes,
a run whose rank is killed with SIGKILL resumes to the same adapter, and two `--nnodes 2` torchruns on localhost
train as one process does."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lm2vec.training.callbacks import read_log
from lm2vec.training.contrastive import train_supervised
from lm2vec.training.mntp import train_mntp
from tests.fsdp_worker import mntp_options, supervised_options
from tests.test_contrastive_distributed import RECORDS
from tests.test_mntp import lora_weights
from tests.tiny_models import WORDS

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "fsdp_worker.py")
ENVIRONMENT = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    "OMP_NUM_THREADS": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(launch: list[str], settings: dict, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", *launch, WORKER, json.dumps(settings)]
    return subprocess.Popen(
        command, env=ENVIRONMENT, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output[-4000:]


def two_processes(settings: dict, cwd: Path) -> tuple[int, str]:
    return finished(torchrun(["--standalone", "--nproc_per_node", "2"], settings, cwd))


def assert_same_weights(trained: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert trained.keys() == expected.keys() and expected
    assert any(w.abs().sum() > 0 for k, w in expected.items() if "lora_B" in k)  # it did train
    for name, weight in expected.items():
        torch.testing.assert_close(trained[name], weight, rtol=1e-4, atol=1e-6)


def ranks(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{rank}.pt") for rank in (0, 1)]


@pytest.fixture(scope="module")
def data(tiny_llama, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("fsdp-data")
    rng = random.Random(1)
    texts = "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(100))
    (folder / "texts.txt").write_text(texts)
    (folder / "pairs.jsonl").write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return {"model": str(tiny_llama), "data": str(folder / "texts.txt"), "pairs": str(folder / "pairs.jsonl")}


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory) -> dict:
    """The same global batches in this one process: MNTP 4 steps of 4 blocks, one supervised step of 8 records."""
    out = tmp_path_factory.mktemp("one-process")
    mntp = train_mntp(mntp_options(data["model"], data["data"], str(out / "mntp"), per_device_batch_size=4))
    supervised = train_supervised(supervised_options(data["model"], data["pairs"], str(out / "supervised")))
    return {
        "mntp": lora_weights(mntp.trainer.model),
        "mntp_log": read_log(out / "mntp"),
        "supervised": load_file(supervised.adapter_dir / "adapter_model.safetensors"),
        "supervised_log": read_log(out / "supervised"),
        "encoder": supervised.encoder_dir,
    }


@pytest.fixture(scope="module")
def fsdp_run(data, tmp_path_factory) -> Path:
    """Two processes with `fsdp`: MNTP, then one supervised step."""
    out = tmp_path_factory.mktemp("fsdp")
    returncode, output = two_processes({**data, "out": str(out), "fsdp": True}, out)
    assert returncode == 0, output
    return out


def test_fsdp_shards_the_frozen_weights_and_trains_the_adapter_of_one_process(fsdp_run, one_process, data) -> None:
    from lm2vec import LM2Vec

    for record in ranks(fsdp_run):
        assert record["world_size"] == 2 and record["step"] == 4
        assert record["sharded"] > 0 and record["trainable_sharded"] == 0  # the base sharded, the adapter whole
        assert record["held"] <= record["whole"] // 2 + 64 * record["sharded"]  # each rank holds about half
        assert_same_weights(record["mntp"], one_process["mntp"])
    losses = [(r["step"], r["loss"]) for r in read_log(fsdp_run / "mntp") if "loss" in r]
    expected = [(r["step"], r["loss"]) for r in one_process["mntp_log"] if "loss" in r]
    assert [s for s, _ in losses] == [s for s, _ in expected] == [1, 2, 3, 4]
    assert [loss for _, loss in losses] == pytest.approx([loss for _, loss in expected], rel=1e-4)
    # The saved adapter is a plain PEFT adapter: it loads and merges without FSDP.
    adapter = fsdp_run / "mntp" / "adapter"
    merged = LM2Vec.from_pretrained(data["model"], adapters=[str(adapter)], device="cpu")
    unmerged = LM2Vec.from_pretrained(data["model"], device="cpu")
    assert not np.allclose(merged.encode("a cat sat"), unmerged.encode("a cat sat"))


def test_contrastive_negatives_are_gathered_across_sharded_processes(fsdp_run, one_process) -> None:
    """One supervised step of 4 records per process: the loss (every query against all 8 positives and 8 hard
    negatives), the adapter and the exported encoder are those of one process holding all 8 records."""
    from lm2vec import LM2Vec

    loss = [r["loss"] for r in read_log(fsdp_run / "supervised") if "loss" in r]
    expected = [r["loss"] for r in one_process["supervised_log"] if "loss" in r]
    assert len(loss) == len(expected) == 1 and loss == pytest.approx(expected, rel=1e-4)
    adapter = load_file(fsdp_run / "supervised" / "adapter" / "adapter_model.safetensors")
    assert_same_weights(adapter, one_process["supervised"])
    texts = ["the cat sat on the mat", "a man plays guitar"]
    exported = LM2Vec.from_pretrained(str(fsdp_run / "supervised" / "encoder"), device="cpu").encode(texts)
    reference = LM2Vec.from_pretrained(str(one_process["encoder"]), device="cpu").encode(texts)
    np.testing.assert_allclose(exported, reference, rtol=1e-4, atol=1e-5)


def test_a_run_with_a_rank_killed_resumes_to_the_uninterrupted_adapter(fsdp_run, data, tmp_path) -> None:
    """Rank 1 is SIGKILLed after the step-2 checkpoint; resumed (`--nnodes 2` on localhost, one torchrun per
    node), the run ends with the adapter of the uninterrupted run."""
    settings = {**data, "pairs": None, "out": str(tmp_path), "fsdp": True}
    returncode, output = two_processes({**settings, "kill": [1, 2]}, tmp_path)
    assert returncode != 0, output
    assert sorted(p.name for p in (tmp_path / "mntp").glob("checkpoint-*")) == ["checkpoint-2"], output
    port = str(free_port())
    nodes = [
        torchrun(
            ["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node), "--master_addr", "127.0.0.1"]
            + ["--master_port", port],
            {**settings, "resume": True},
            tmp_path,
        )
        for node in (0, 1)
    ]
    for node in nodes:
        returncode, output = finished(node)
        assert returncode == 0, output
    expected = ranks(fsdp_run)[0]["mntp"]
    for record in ranks(tmp_path):
        assert record["world_size"] == 2 and record["step"] == 4
        assert_same_weights(record["mntp"], expected)
    assert [r["step"] for r in read_log(tmp_path / "mntp") if "loss" in r] == [1, 2, 3, 4]
