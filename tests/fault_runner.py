"""The lm2vec CLI with a kill -9 planted: `python -m tests.fault_runner MODULE:ATTRIBUTE N REPORT ARGS...`.

The N-th call of MODULE.ATTRIBUTE (a function, or a method as Class.method) SIGKILLs the process before it runs,
as a crash or `kill -9` at that point would. First REPORT (a JSON file) gets the pids of the worker processes
alive at that moment, so a test can check that they die with their parent."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path


def plant(target: str, nth: int, report: Path) -> None:
    module_name, _, attribute = target.partition(":")
    *path, name = attribute.split(".")
    owner = importlib.import_module(module_name)
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    def planted(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth:
            report.write_text(json.dumps({"workers": [child.pid for child in multiprocessing.active_children()]}))
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, planted)


if __name__ == "__main__":
    target, nth, report, *arguments = sys.argv[1:]
    plant(target, int(nth), Path(report))
    from lm2vec.cli import app

    app(args=arguments, prog_name="lm2vec")
