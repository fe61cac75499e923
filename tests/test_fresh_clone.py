"""A newcomer's clone: no ../shared beside it, no LM2VEC_STSB, no hub. The README's main job and English recipes
must plan there, with every data set they need coming with the project or its PyPI packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lm2vec.data.errors import DataError
from lm2vec.data.packaged import SHIPPED_STSB, stsb_dir

ROOT = Path(__file__).resolve().parents[1]
PLAN = """
import json, sys
import lm2vec
from lm2vec.data.packaged import expand_path
from lm2vec.evaluation.registry import Registry
from lm2vec.pipeline.plan import plan_run

plans = {}
for recipe in sys.argv[1:]:
    plan = plan_run(recipe)
    plans[recipe] = plan.stages
stsb = expand_path("${stsb}")
english = [Registry.builtin().load(name, limit=5).name for name in ("stsb-dev", "lee-similarity", "bbc-classification")]
print(json.dumps({"package": lm2vec.__file__, "stsb": str(stsb), "plans": plans, "tasks": english}))
"""


def test_the_main_job_plans_on_a_clone_without_shared(tmp_path) -> None:
    # The working tree as git would clone it (tracked and new files, nothing ignored), in a folder with no ../shared.
    clone = tmp_path / "newcomer" / "lm2vec"
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    assert not (clone.parent / "shared").exists() and not (clone / "shared").exists()

    env = {key: value for key, value in os.environ.items() if key != "LM2VEC_STSB"}
    env |= {"PYTHONPATH": str(clone / "src"), "HF_HUB_OFFLINE": "1"}
    recipes = ["recipes/gemma3-en-cpu.toml", "recipes/smollm2-en-quick.toml", "recipes/smollm2-en-cpu.toml"]
    result = subprocess.run(
        [sys.executable, "-c", PLAN, *recipes], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    planned = json.loads(result.stdout.strip().splitlines()[-1])
    assert planned["package"].startswith(str(clone))  # the clone's code, not this checkout's
    assert Path(planned["stsb"]) == clone / "src" / "lm2vec" / "data" / "stsb"
    assert all("supervised" in planned["plans"][recipe] for recipe in recipes[::2])
    assert planned["tasks"] == ["stsb-dev", "lee-similarity", "bbc-classification"]
    for name in ("sts-train.csv", "sts-dev.csv", "LICENSE.txt", "README.txt"):  # the licence travels with the data
        assert (Path(planned["stsb"]) / name).is_file()


def test_lm2vec_stsb_overrides_the_shipped_copy(tmp_path, monkeypatch) -> None:
    assert stsb_dir() == SHIPPED_STSB and (SHIPPED_STSB / "NOTICE.md").is_file()
    monkeypatch.setenv("LM2VEC_STSB", str(tmp_path))
    with pytest.raises(DataError, match="no sts-dev.csv there"):
        stsb_dir()
    (tmp_path / "sts-dev.csv").write_text("")
    assert stsb_dir() == tmp_path.resolve()
