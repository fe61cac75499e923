"""Does a refactor train the same adapters, bit for bit? `python benchmarks/same_adapters.py OLD_REV`

Runs the quick recipe (recipes/smollm2-en-quick.toml) shrunk to the tests' tiny llama (tests/test_pipeline.py's
`tiny_overrides` and `inputs_folder`) up to the supervised stage twice, in fresh processes with one thread each:
once with the lm2vec of OLD_REV (a temporary `git worktree`, removed at the end) and once with this checkout's
src/. Then compares the sha256 of every `adapter_model.safetensors` the two runs wrote (mntp, simcse,
supervised and their checkpoints) and prints a table; exits 1 if any differs or is missing on one side.

Both runs get the same recipe file (this checkout's), model, inputs, overrides and seeds, and only `--set` and
`--until`, which old and new `lm2vec run` both accept."""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "smollm2-en-quick.toml"
ADAPTER = "adapter_model.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_rev", help="the revision to compare with, e.g. b173b1a")
    parser.add_argument("--until", default="supervised", help="the last stage to run (default: supervised)")
    parser.add_argument("--keep", type=Path, help="keep the runs and their logs in this folder")
    args = parser.parse_args()

    old_commit = _git("rev-parse", "--verify", f"{args.old_rev}^{{commit}}").strip()
    with tempfile.TemporaryDirectory(prefix="lm2vec-same-adapters-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        model, inputs = _tiny_inputs(work)
        overrides = _overrides(model, inputs)
        old_tree = Path(scratch) / "old-tree"
        _git("worktree", "add", "--detach", str(old_tree), old_commit)
        try:
            hashes = {}
            for label, src in (("old", old_tree / "src"), ("new", REPO / "src")):
                hashes[label] = _run(label, src, work / f"run-{label}", overrides, args.until)
        finally:
            _git("worktree", "remove", "--force", str(old_tree))
    return _report(hashes, old_commit)


def _tiny_inputs(work: Path) -> tuple[Path, Path]:
    """The tests' tiny llama and their inputs folder, made by this checkout's test helpers."""
    sys.path[:0] = [str(REPO / "src"), str(REPO)]
    from tests.test_pipeline import inputs_folder
    from tests.tiny_models import save_tiny_model

    return save_tiny_model("llama", work / "tiny-llama"), inputs_folder(work / "inputs")


def _overrides(model: Path, inputs: Path) -> list[str]:
    from tests.test_pipeline import tiny_overrides

    return tiny_overrides(model, inputs)


def _run(label: str, src: Path, out: Path, overrides: list[str], until: str) -> dict[str, str]:
    """`lm2vec run` with the lm2vec in `src`, in a fresh process; {adapter path under the run: sha256}."""
    command = [sys.executable, "-m", "lm2vec", "run", str(RECIPE), "--out", str(out), "--until", until]
    for override in overrides:
        command += ["--set", override]
    env = os.environ | {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    print(f"{label}: lm2vec from {src} ...", flush=True)
    result = subprocess.run(command, env=env, cwd=out.parent, capture_output=True, text=True)
    (out.parent / f"{label}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"{label} run failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    print(f"{label}: done in {time.perf_counter() - started:.0f} s", flush=True)
    return {str(path.relative_to(out)): _sha256(path) for path in sorted(out.rglob(ADAPTER))}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _report(hashes: dict[str, dict[str, str]], old_commit: str) -> int:
    old, new = hashes["old"], hashes["new"]
    names = sorted(set(old) | set(new))
    width = max([len("adapter"), *map(len, names)])
    print(f"\n{'adapter':<{width}}  {'old ' + old_commit[:7]:<16}  {'new (src/)':<16}  same")
    differing = 0
    for name in names:
        a, b = old.get(name, "missing"), new.get(name, "missing")
        same = a == b and a != "missing"
        differing += not same
        print(f"{name:<{width}}  {a[:16]:<16}  {b[:16]:<16}  {'yes' if same else 'NO'}")
    if not names:
        print("no adapters were written")
        return 1
    print(f"\n{len(names) - differing} of {len(names)} adapters identical")
    return 1 if differing else 0


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout


if __name__ == "__main__":
    sys.exit(main())
