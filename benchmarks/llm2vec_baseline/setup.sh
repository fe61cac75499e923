#!/usr/bin/env bash
# Creates the virtual environment of the official llm2vec 0.2.3 baseline, outside the repository by default.
#   LM2VEC_BENCH_DIR  benchmark work folder (default ~/.cache/lm2vec-bench)
#   LLM2VEC_VENV      the venv to create (default $LM2VEC_BENCH_DIR/venv-llm2vec)
#   PYTHON            interpreter to build it from (default python3; llm2vec 0.2.3 needs >= 3.8)
set -euo pipefail

bench_dir="${LM2VEC_BENCH_DIR:-$HOME/.cache/lm2vec-bench}"
venv="${LLM2VEC_VENV:-$bench_dir/venv-llm2vec}"
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
# torch first, and the same release as lm2vec's venv: the CPU build lies on disk (any other version would pull a
# multi-GB CUDA build) and both sides of the benchmark then run the same kernels.
"$venv/bin/pip" install torch==2.13.0
# llm2vec 0.2.3 requires transformers>=4.43.1,<=4.44.2 (its setup.py); its bidirectional Llama subclasses
# transformers 4.44's attention classes, so take the newest allowed. peft 0.13.2 is a release of the same period.
# Repeating torch==2.13.0 keeps pip from swapping it.
"$venv/bin/pip" install torch==2.13.0 llm2vec==0.2.3 transformers==4.44.2 peft==0.13.2
"$venv/bin/pip" check
"$venv/bin/python" -c "import llm2vec, transformers, torch; print('llm2vec venv ready:', transformers.__version__, torch.__version__)"
