"""`python -m lm2vec ...`, e.g. `torchrun --nproc_per_node 8 -m lm2vec run recipe.toml`."""

from lm2vec.cli import app

app()
