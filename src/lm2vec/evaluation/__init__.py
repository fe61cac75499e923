"""Evaluation: offline MTEB-style tasks, the mteb encoder protocol, and the stage-by-stage report.

    from lm2vec.evaluation import Registry, ModelSpec, evaluate, write_report
    tasks = [Registry.builtin().load(name) for name in Registry.builtin().select(["english"])]
    results = evaluate([ModelSpec.parse("bidir=pkg:smollm2"), ModelSpec.parse("causal=pkg:smollm2,causal")], tasks)
    write_report(results, "eval-report")

Command line: `lm2vec eval run|list|fetch-data` and `lm2vec report`. Imports are lazy, so the CLI starts fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EvalDataError": "errors",
    "EvalConfigError": "errors",
    "Task": "tasks",
    "STSTask": "tasks",
    "RetrievalTask": "tasks",
    "ClassificationTask": "tasks",
    "ClusteringTask": "tasks",
    "BitextTask": "tasks",
    "TripletTask": "tasks",
    "Registry": "registry",
    "build_task": "registry",
    "ModelSpec": "specs",
    "CachedEncoder": "embedding_cache",
    "LM2VecEncoder": "encoders",
    "SentenceTransformerEncoder": "encoders",
    "load_encoder": "encoders",
    "reference_folder": "specs",
    "evaluate": "runner",
    "Results": "runner",
    "write_report": "report",
    "resolve_models": "report",
    "run_specs": "report",
    "baseline_specs": "report",
    "to_mteb": "mteb_protocol",
    "LM2VecMTEB": "mteb_protocol",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lm2vec.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lm2vec.evaluation' has no attribute {name!r}")
