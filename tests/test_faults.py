"""Fault injection: `kill -9` at many points of a run, then re-runs, which must end where an uninterrupted run ends.

Each kill is a real SIGKILL of a subprocess (`tests.fault_runner`), planted at one call: while the data stage
closes its shards (with worker processes alive), in the middle of a checkpoint save, and while the encoder is
exported. After every kill the user's own files must be unchanged and, at the end, no temporary leftovers remain.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lm2vec import LM2Vec
from lm2vec.artifacts import PARTIAL
from lm2vec.data import corpus_files
from lm2vec.pipeline.run import run_recipe
from tests.tiny_models import WORDS

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a red car", "the dog ran fast", "a man plays guitar"]

RECIPE = """
[run]
model = "{model}"

[data]
inputs = ["docs.txt"]
lang = "en"
min_article_chars = 20
workers = 2
shard_size = 10
progress = false

[mntp]
max_seq_length = 16
per_device_batch_size = 4
max_steps = 4
save_steps = 2
logging_steps = 1
eval_steps = 4
mask_token = "<unk>"
"""


@pytest.fixture
def project(tiny_llama: Path, tmp_path: Path) -> Path:
    """A user's project folder: the recipe, the input, and files of their own that no run may touch."""
    folder = tmp_path / "project"
    folder.mkdir()
    rng = random.Random(1)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS[:-9]) for _ in range(rng.randint(6, 12))) + " ."

    (folder / "docs.txt").write_text("\n\n".join(" ".join(sentence() for _ in range(4)) for _ in range(24)))
    (folder / "recipe.toml").write_text(RECIPE.format(model=tiny_llama))
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.md").write_text("keep this\n")
    (folder / "model").mkdir()  # a folder of the user's that happens to share a stage's name
    (folder / "model" / "model.safetensors").write_bytes(b"the user's own weights")
    return folder


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, str]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_relative_to(skip)
    }


def run_killed(target: str, nth: int, arguments: list[str], cwd: Path, report: Path) -> dict:
    """Run `lm2vec ARGUMENTS` with a SIGKILL at the `nth` call of `target`; what the runner reported."""
    command = [sys.executable, "-m", "tests.fault_runner", target, str(nth), str(report), *arguments]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == -9, f"not killed at {target} #{nth}: {completed.stderr[-3000:]}"
    return json.loads(report.read_text())


def is_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")  # reaped or a zombie
    except FileNotFoundError:
        return True


def texts_of(corpus: Path, kind: str) -> list[str]:
    return [text for path in corpus_files(corpus, kind) for text in pq.read_table(path)["text"].to_pylist()]


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and /proc")
def test_kill_9_anywhere_then_rerun_gives_the_uninterrupted_result(project: Path, tmp_path: Path) -> None:
    reference_dir = tmp_path / "reference"
    run_recipe(project / "recipe.toml", out=reference_dir, until="export", echo=lambda line: None)
    user_files = snapshot(project, skip=project / "run")
    arguments = ["run", "recipe.toml", "--out", "run", "--until", "export"]
    report = tmp_path / "report.json"

    # 1. In the data stage, in the middle of a checkpoint (some shards closed, the manifest not yet rewritten).
    workers = run_killed("lm2vec.data.shards:_ShardWriter.close", 6, arguments, project, report)["workers"]
    assert len(workers) == 2
    deadline = time.monotonic() + 10
    while not all(is_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(is_gone(pid) for pid in workers), "the data workers outlived their killed parent"
    assert snapshot(project, skip=project / "run") == user_files
    # 2. MNTP, in the middle of saving checkpoint-4: weights and optimizer written, trainer state not yet.
    run_killed("transformers.trainer:Trainer._save_rng_state", 2, arguments, project, report)
    checkpoints = sorted(path.name for path in (project / "run" / "mntp").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2"]  # the interrupted save left no checkpoint-4 to trip over
    # 3. The export, half written.
    run_killed("lm2vec.modeling.encoder:write_sentence_transformers_files", 1, arguments, project, report)
    assert not (project / "run" / "model").exists()
    assert snapshot(project, skip=project / "run") == user_files

    printed: list[str] = []
    run_recipe(project / "recipe.toml", out=project / "run", until="export", echo=printed.append)
    assert "[3/5] export: resuming" in printed and "[2/5] mntp: done earlier" in printed[1]

    run_dir = project / "run"
    for kind in ("paragraphs", "sentences"):
        assert texts_of(run_dir / "data", kind) == texts_of(reference_dir / "data", kind)
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert [state[s]["status"] for s in ("data", "mntp", "export")] == ["done"] * 3
    assert state["data"]["attempts"] == 2 and state["mntp"]["attempts"] == 2 and state["export"]["attempts"] == 2
    assert state["mntp"]["summary"]["steps"] == 4
    # The log and the loss curve go on from the checkpoint without repeated steps.
    steps = [
        r["step"] for r in map(json.loads, (run_dir / "mntp" / "log.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert steps == [1, 2, 3, 4]
    expected = LM2Vec.from_pretrained(reference_dir / "model").encode(TEXTS)
    np.testing.assert_allclose(LM2Vec.from_pretrained(run_dir / "model").encode(TEXTS), expected, atol=1e-5)
    assert not [path for path in run_dir.rglob("*") if PARTIAL in path.name]
    assert snapshot(project, skip=run_dir) == user_files
