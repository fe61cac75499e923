"""Running tasks over models, with progress bars, timings and a JSON results file."""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lm2vec.artifacts import write_text_atomic
from lm2vec.evaluation.embedding_cache import CachedEncoder, default_cache_root
from lm2vec.evaluation.specs import ModelSpec, check_distinct_names
from lm2vec.evaluation.tasks import Task, confidence_interval

logger = logging.getLogger(__name__)

# results.json's format tag: also the record that makes a report folder lm2vec's (`lm2vec.artifacts`); files
# written before the tag are known by their keys.
RESULTS_FORMAT = "lm2vec-eval-results"
RESULTS_LEGACY_KEYS = ("tasks", "models")


@dataclass
class TaskResult:
    task: str
    type: str
    main_metric: str
    main_score: float
    metrics: dict[str, float]
    seconds: float
    size: int
    # The main score's 95% bootstrap interval and its replicates (`encode_replicates`); None in results.json files
    # written before lm2vec kept them.
    interval: list[float] | None = None
    replicates: str | None = None

    def replicate_scores(self) -> np.ndarray | None:
        """The main score on the task's paired bootstrap resamples (tasks.bootstrap_draws), if kept."""
        return None if self.replicates is None else decode_replicates(self.replicates)


def encode_replicates(replicates: np.ndarray) -> str:
    """Replicates as results.json keeps them: float16 (within 0.0005 of a 0-1 score), base64; 2.7 KB for 1000."""
    return base64.b64encode(np.asarray(replicates, dtype="<f2").tobytes()).decode("ascii")


def decode_replicates(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float64)


@dataclass
class ModelResult:
    name: str
    spec: str
    fingerprint: str
    results: dict[str, TaskResult] = field(default_factory=dict)
    encoded_texts: int = 0
    cache_hits: int = 0
    seconds: float = 0.0


@dataclass
class Results:
    models: dict[str, ModelResult] = field(default_factory=dict)
    tasks: dict[str, dict] = field(default_factory=dict)  # name -> type, main metric, size, language, description

    def to_json(self) -> dict:
        models = {name: asdict(model) for name, model in self.models.items()}
        return {"format": RESULTS_FORMAT, "tasks": self.tasks, "models": models}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Results:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        results = cls(tasks=data.get("tasks", {}))
        for name, model in data.get("models", {}).items():
            task_results = {t: TaskResult(**r) for t, r in model.pop("results", {}).items()}
            results.models[name] = ModelResult(**model, results=task_results)
        return results

    def merge(self, other: Results) -> None:
        self.tasks.update(other.tasks)
        for name, model in other.models.items():
            if name in self.models:
                self.models[name].results.update(model.results)
            else:
                self.models[name] = model


def describe_task(task: Task) -> dict:
    return {
        "type": task.type,
        "main_metric": task.main_metric,
        "size": task.size,
        "language": task.language,
        "description": task.description,
    }


def evaluate(
    models: list[ModelSpec | CachedEncoder],
    tasks: list[Task],
    *,
    cache_root: Path | None | str = "default",
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
    release_models: bool = True,
) -> Results:
    """Every task on every model, each main score with its replicates on the task's bootstrap resamples (the same
    for every model) and their 95% interval. Models are loaded one at a time, only on a cache miss, and released
    after."""
    check_distinct_names([model.spec if isinstance(model, CachedEncoder) else model for model in models])
    results = Results(tasks={task.name: describe_task(task) for task in tasks})
    root = default_cache_root() if cache_root == "default" else cache_root
    # disable=None: no bar when stderr is not a terminal (CI logs), as for every lm2vec bar
    bar = tqdm(total=len(models) * len(tasks), desc="Evaluating", disable=None if progress else True, unit="task")
    for model in models:
        encoder = (
            model
            if isinstance(model, CachedEncoder)
            else CachedEncoder(model, cache_root=root, batch_size=batch_size, device=device)
        )
        model_result = ModelResult(encoder.name, encoder.spec.describe(), encoder.fingerprint)
        started = time.perf_counter()
        for task in tasks:
            bar.set_postfix_str(f"{encoder.name} / {task.name}")
            task_started = time.perf_counter()
            scored = task.score(encoder)
            metrics, replicates = scored.metrics, scored.replicates(task.name)
            seconds = time.perf_counter() - task_started
            model_result.results[task.name] = TaskResult(
                task.name,
                task.type,
                task.main_metric,
                metrics[task.main_metric],
                metrics,
                round(seconds, 3),
                task.size,
                [round(bound, 6) for bound in confidence_interval(replicates)],
                encode_replicates(replicates),
            )
            logger.info(
                "%s %s %s=%.4f (%.1fs)", encoder.name, task.name, task.main_metric, metrics[task.main_metric], seconds
            )
            bar.update()
        model_result.seconds = round(time.perf_counter() - started, 3)
        model_result.encoded_texts, model_result.cache_hits = encoder.encoded_texts, encoder.hits
        results.models[encoder.name] = model_result
        if release_models and not isinstance(model, CachedEncoder):
            encoder.model = None  # free the weights before the next model is loaded
    bar.close()
    return results
