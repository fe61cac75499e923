"""A stage's third-party logs and warnings go to its log file; the console shows them only when verbose."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import logging, sys, warnings
from pathlib import Path
import transformers.utils.logging as transformers_logging
from lm2vec.console import stage_log

with stage_log(Path(sys.argv[1]), verbose=sys.argv[2] == "verbose"):
    warnings.warn("peft: this argument is deprecated", FutureWarning, stacklevel=1)
    transformers_logging.get_logger("transformers.modeling_utils").warning("some weights were not used")
    logging.getLogger("lm2vec.training").info("trainable parameters: 1234")
    print("stage: done")
transformers_logging.get_logger("transformers.modeling_utils").warning("after the stage")
"""
NOISE = ("FutureWarning: peft: this argument is deprecated", "some weights were not used", "trainable parameters")


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_noise_goes_to_the_stage_log_and_to_the_console_only_when_verbose(tmp_path: Path, mode: str) -> None:
    log = tmp_path / "logs" / "mntp.log"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), mode],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=True,
    )
    assert result.stdout == "stage: done\n"  # lm2vec's own lines are untouched
    for line in NOISE:
        assert line in log.read_text()
        assert (line in result.stderr) == (mode == "verbose")
    assert "after the stage" in result.stderr and "after the stage" not in log.read_text()  # restored afterwards


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux to give the run a real terminal")
def test_a_run_on_a_terminal_shows_one_bar_per_stage_and_one_line_each(tiny_llama, tmp_path: Path) -> None:
    """What a person sees: the quick recipe in a tmux pane, captured once it is done."""
    from tests.test_pipeline import QUICK, inputs_folder, tiny_overrides

    folder = inputs_folder(tmp_path / "inputs")
    overrides = [o for o in tiny_overrides(tiny_llama, folder) if not o.startswith("eval.")]
    lm2vec = Path(sys.executable).with_name("lm2vec")
    command = [str(lm2vec), "run", str(QUICK), "--out", str(tmp_path / "run"), "--until", "simcse"]
    command += [part for override in overrides for part in ("--set", override)]
    script = tmp_path / "run.sh"
    script.write_text(f"{shlex.join(command)}; echo EXIT=$?; sleep 600\n")  # the pane stays to be read
    session = f"lm2vec-test-{os.getpid()}"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "150"}
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "50", f"bash {script}"],
        env=environment,
        check=True,
    )
    try:
        pane = ""
        for _ in range(600):
            pane = subprocess.run(
                ["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if "EXIT=" in pane:
                break
            time.sleep(0.5)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    lines = [line.rstrip() for line in pane.splitlines() if line.strip()]
    assert "EXIT=0" in lines, pane
    for header in ("[1/7] data: done in", "[2/7] mntp: done in", "[3/7] simcse: done in"):
        assert sum(line.startswith(header) for line in lines) == 1, pane
    bars = [line for line in lines if "it/s" in line or "s/it" in line]
    for stage in ("mntp", "simcse"):  # one finished bar per training stage, with its figures
        (bar,) = [line for line in bars if line.startswith(f"{stage}:")]
        assert "100%" in bar and "loss=" in bar and "tokens/s=" in bar, pane
    assert len(bars) == 2, pane  # no evaluation bar nested in the training bar, no loading bars
    for noise in ("{'loss'", "Generating train split", "FutureWarning", "Loading weights"):
        assert noise not in pane, pane
