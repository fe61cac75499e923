"""A stage's third-party logs and warnings go to its log file; the console shows them only when verbose."""

from __future__ import annotations

import os
import subprocess
import sys
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
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(log), mode], capture_output=True, text=True,
                            env=environment, timeout=120, check=True)  # fmt: skip
    assert result.stdout == "stage: done\n"  # lm2vec's own lines are untouched
    for line in NOISE:
        assert line in log.read_text()
        assert (line in result.stderr) == (mode == "verbose")
    assert "after the stage" in result.stderr and "after the stage" not in log.read_text()  # restored afterwards
