"""The stage-by-stage report: which models to compare, a markdown table and a PNG bar chart.

A training run folder describes its stages in `stages.json` (or `stages.toml`), which the pipeline writes:

```json
{
  "base": "pkg:smollm2",
  "pooling": "mean",
  "stages": [
    {"name": "after MNTP", "adapters": ["mntp/adapter"]},
    {"name": "after SimCSE", "adapters": ["mntp/adapter", "simcse/adapter"]},
    {"name": "after supervised", "adapters": ["mntp/adapter", "supervised/adapter"]}
  ]
}
```

`base` is what `LM2Vec.from_pretrained` takes; each stage lists its full adapter chain (paths relative to the
run folder), or a `source` (a merged model folder) instead, and may set `pooling`, `causal` or `max_length`.
The run's baselines come first: the untouched base model with causal last-token and mean pooling, echo embeddings
(mean over the second copy of the repeated text) and PromptEOL (the last token of a one-word-meaning prompt), and
the base made bidirectional without training; the reference encoder comes last.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lm2vec.artifacts import RUN_RECORD, atomic_file, check_folder, claim_folder, write_text_atomic
from lm2vec.evaluation.errors import EvalConfigError
from lm2vec.evaluation.runner import RESULTS_FORMAT, RESULTS_LEGACY_KEYS, Results
from lm2vec.evaluation.specs import ModelSpec, check_distinct_names, reference_spec
from lm2vec.evaluation.tasks import BOOTSTRAP_REPLICATES, confidence_interval

MANIFEST_NAMES = ("stages.json", "stages.toml")
RESULTS_NAME = "results.json"  # also the report folder's ownership record
REFERENCE_NAME = "reference: all-MiniLM-L6-v2"
CAUSAL_MEAN_NAME, UNTRAINED_NAME = "causal mean", "bidirectional untrained"


def baseline_specs(base: str, pooling: str | None = None) -> list[ModelSpec]:
    return [
        ModelSpec("causal last-token", base, pooling="last_token", bidirectional=False),
        ModelSpec(CAUSAL_MEAN_NAME, base, pooling="mean", bidirectional=False),
        ModelSpec("causal echo", base, pooling="mean", bidirectional=False, template="echo"),
        ModelSpec("causal PromptEOL", base, pooling="last_token", bidirectional=False, template="prompteol"),
        ModelSpec(UNTRAINED_NAME, base, pooling=pooling, bidirectional=True),
    ]


def read_manifest(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    for name in MANIFEST_NAMES:
        path = run_dir / name
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
                data = json.loads(text) if name.endswith(".json") else tomllib.loads(text)
            except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
                raise EvalConfigError(f"{path}: cannot be parsed ({error})") from None
            if not isinstance(data, dict) or "base" not in data:
                raise EvalConfigError(f"{path}: a run manifest needs 'base' (the model the run started from)")
            return data
    raise EvalConfigError(f"{run_dir}: not a run folder (no {' or '.join(MANIFEST_NAMES)})")


def run_specs(run_dir: str | Path, baselines: bool = True, manifest: dict | None = None) -> list[ModelSpec]:
    """The models of a run folder: its baselines (optional), then each stage in order. `manifest`: its stages
    manifest, when the caller has it (the eval stage, which writes it); by default it is read from the folder."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir) if manifest is None else manifest
    base, pooling = str(manifest["base"]), manifest.get("pooling")
    base_spec = ModelSpec("base", base).relative_to(run_dir)
    specs = baseline_specs(base_spec.source, pooling) if baselines else []
    for position, stage in enumerate(manifest.get("stages", []), start=1):
        if not isinstance(stage, dict) or "name" not in stage:
            raise EvalConfigError(f"{run_dir}: stage {position} needs a 'name'")
        entry = {"source": base, "pooling": pooling, **stage}
        entry = {k: v for k, v in entry.items() if v is not None}
        specs.append(ModelSpec.from_dict(entry, base_dir=run_dir))
    return specs


def models_from_file(path: str | Path) -> list[ModelSpec]:
    """A TOML file of `[[models]]` tables (name, source, adapters, pooling, causal, max_length)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise EvalConfigError(f"{path}: not valid TOML ({error})") from None
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise EvalConfigError(f"{path}: expected one or more [[models]] tables")
    return [ModelSpec.from_dict(m, base_dir=path.parent) for m in models]


def resolve_models(items: list[str], baselines: bool = True, reference: bool = True) -> list[ModelSpec]:
    """Each item is a run folder (stages manifest), a TOML file of [[models]], or a model spec string."""
    specs: list[ModelSpec] = []
    for item in items:
        path = Path(item)
        if path.is_dir() and any((path / n).is_file() for n in MANIFEST_NAMES):
            specs += run_specs(path, baselines)
        elif path.is_dir() and (path / RUN_RECORD).is_file():
            raise EvalConfigError(
                f"{path}: the run has no {MANIFEST_NAMES[0]} yet (its eval stage writes it); run the recipe up to "
                "its eval stage first"
            )
        elif path.is_file() and path.suffix == ".toml":
            specs += models_from_file(path)
        else:
            specs.append(ModelSpec.parse(item))
    return with_reference(specs, reference)


def with_reference(specs: list[ModelSpec], reference: bool = True) -> list[ModelSpec]:
    """`specs`, then the reference encoder (optional); two models of one name are refused."""
    if reference:
        specs = [*specs, ModelSpec(REFERENCE_NAME, reference_spec().source)]
    check_distinct_names(specs)
    return specs


def check_report_folder(out_dir: str | Path) -> None:
    """Refuse, before any work, a report folder lm2vec may not write: one that is neither new, empty nor a
    report's (its results.json says so)."""
    check_folder(Path(out_dir), RESULTS_NAME, RESULTS_FORMAT, RESULTS_LEGACY_KEYS)


# --- output -------------------------------------------------------------------------------------------------
def _score(results: Results, model: str, task: str) -> float | None:
    result = results.models[model].results.get(task)
    return None if result is None else result.main_score


WORD_LEVEL_TYPES = ("word-tagging", "word-spans")  # lm2vec.evaluation.word's


def averaged_tasks(results: Results) -> list[str]:
    """The tasks "average" covers: the sentence-level ones, or every task when there are no others (a word-level
    probe measures token states, another thing, averaged apart in `word_average_tasks`)."""
    sentence_level = [t for t in results.tasks if results.tasks[t].get("type") not in WORD_LEVEL_TYPES]
    return sentence_level or list(results.tasks)


def word_average_tasks(results: Results) -> list[str]:
    """The word-level tasks of a report that has sentence-level ones too: its "word average" column."""
    averaged = averaged_tasks(results)
    return [t for t in results.tasks if t not in averaged]


def _average(results: Results, model: str, tasks: list[str]) -> float | None:
    scores = [_score(results, model, t) for t in tasks]
    return None if not scores or any(s is None for s in scores) else sum(scores) / len(scores)


def _average_replicates(results: Results, model: str, tasks: list[str]) -> np.ndarray | None:
    """The average's bootstrap replicates: the mean of its tasks' (each task's resamples are the same for every
    model, so these are paired too); None unless every task kept them."""
    task_results = [results.models[model].results.get(t) for t in tasks]
    replicates = [None if r is None else r.replicate_scores() for r in task_results]
    return None if not replicates or any(r is None for r in replicates) else np.mean(replicates, axis=0)


def _bounds(interval: tuple[float, float] | None) -> str:
    return "–" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _half_width(interval: tuple[float, float] | list[float] | None) -> str:
    return "–" if interval is None else f"±{100 * (interval[1] - interval[0]) / 2:.1f}"


def _average_interval(results: Results, model: str, tasks: list[str]) -> tuple[float, float] | None:
    replicates = _average_replicates(results, model, tasks)
    return None if replicates is None else confidence_interval(replicates)


def markdown_table(results: Results) -> str:
    """Each model's main scores × 100 (best in bold), their average and the average's 95% bootstrap interval (and
    the word-level tasks' own average, when a report has both kinds)."""
    tasks = list(results.tasks)
    models = list(results.models)
    averaged, word_level = averaged_tasks(results), word_average_tasks(results)
    averages = {"average": averaged, **({"word average": word_level} if word_level else {})}
    columns = [*tasks, *averages]
    values = {
        m: [*(_score(results, m, t) for t in tasks), *(_average(results, m, group) for group in averages.values())]
        for m in models
    }
    best = [max((values[m][i] for m in models if values[m][i] is not None), default=None) for i in range(len(columns))]
    header = ["model", *(f"{t} ({results.tasks[t]['main_metric']})" for t in tasks), *averages, "95% interval"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * len(columns) + ["---"]) + " |"]
    for model in models:
        cells = []
        for i, value in enumerate(values[model]):
            if value is None:
                cells.append("–")
            else:
                text = f"{100 * value:.1f}"
                cells.append(f"**{text}**" if len(models) > 1 and value == best[i] else text)
        cells.append(_bounds(_average_interval(results, model, averaged)))
        lines.append("| " + " | ".join([model, *cells]) + " |")
    return "\n".join(lines)


def half_widths_table(results: Results) -> str:
    """Half the width of each score's 95% bootstrap interval, × 100 ("–" where results.json kept none)."""
    tasks = list(results.tasks)
    lines = ["| model | " + " | ".join([*tasks, "average"]) + " |", "| --- |" + " ---: |" * (len(tasks) + 1)]
    for model, model_results in results.models.items():
        cells = [_half_width(r.interval if (r := model_results.results.get(t)) else None) for t in tasks]
        cells.append(_half_width(_average_interval(results, model, averaged_tasks(results))))
        lines.append("| " + " | ".join([model, *cells]) + " |")
    return "\n".join(lines)


@dataclass
class Difference:
    """How far the best average is above another model's, with the 95% paired bootstrap interval of that
    difference (None where either model's results kept no replicates)."""

    model: str
    difference: float
    interval: tuple[float, float] | None

    @property
    def within_noise(self) -> bool | None:
        """Whether the interval contains 0: on other examples of the same tasks the order could turn."""
        return None if self.interval is None else self.interval[0] <= 0 <= self.interval[1]


def differences_from_best(results: Results) -> tuple[str | None, list[Difference]]:
    """The model of the best average, and its difference from every other model with an average."""
    tasks = averaged_tasks(results)
    averages = {m: average for m in results.models if (average := _average(results, m, tasks)) is not None}
    if len(averages) < 2:
        return None, []
    best = max(averages, key=averages.__getitem__)
    return best, [paired_difference(results, best, model, tasks) for model in averages if model != best]


def paired_difference(results: Results, model: str, other: str, tasks: list[str]) -> Difference:
    """`model`'s average over `tasks` minus `other`'s (one task: its score), with the 95% interval of the difference
    over the same resamples for both; no interval unless both kept replicates on the same examples."""
    replicates = _average_replicates(results, model, tasks)
    other_replicates = _average_replicates(results, other, tasks)
    # Paired only on the same examples: the same tasks at the same sizes (not merged from runs at other limits).
    paired = (
        replicates is not None
        and other_replicates is not None
        and len(replicates) == len(other_replicates)
        and all(results.models[model].results[t].size == results.models[other].results[t].size for t in tasks)
    )
    interval = confidence_interval(replicates - other_replicates) if paired else None
    return Difference(other, _average(results, model, tasks) - _average(results, other, tasks), interval)


def noise_comparison(results: Results) -> str:
    """A markdown table: the best average against every other model, its difference within noise or beyond it
    ("" for fewer than two models)."""
    best, differences = differences_from_best(results)
    if not differences:
        return ""
    lines = [
        f"The best average, {best}'s, against each other model: the difference × 100 and its 95% interval over "
        f"{BOOTSTRAP_REPLICATES:,} resamples of the tasks' examples, the same for both models (paired). Where the "
        "interval contains 0 the difference is within noise.",
        "",
        f"| {best} against | difference | 95% interval | verdict |",
        "| --- | ---: | --- | --- |",
    ]
    for difference in differences:
        verdict = {None: "no interval", True: "within noise", False: "beyond noise"}[difference.within_noise]
        lines.append(
            f"| {difference.model} | {100 * difference.difference:+.1f} | {_bounds(difference.interval)} | {verdict} |"
        )
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_file(path) as temporary:
            figure.savefig(temporary, dpi=120, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(figure)
    return path


def write_chart(results: Results, path: str | Path, title: str = "lm2vec evaluation") -> Path:
    plt = _pyplot()

    tasks = list(results.tasks)
    models = list(results.models)
    groups = [*tasks, "average"]
    width = 0.8 / max(1, len(models))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(models)) ** 0.5 + 3), 4.8))
    x = np.arange(len(groups))
    colors = plt.get_cmap("tab10")
    for i, model in enumerate(models):
        scores = [_score(results, model, t) for t in tasks] + [_average(results, model, averaged_tasks(results))]
        heights = [np.nan if s is None else 100 * s for s in scores]
        bars = axes.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=model, color=colors(i % 10))
        if len(models) * len(groups) <= 40:
            axes.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    axes.set_xticks(
        x, [g if g == "average" else f"{g}\n({results.tasks[g]['main_metric']})" for g in groups], fontsize=7
    )
    axes.set_ylabel("score × 100")
    axes.set_title(title)
    axes.axhline(0, color="black", linewidth=0.5)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(4, len(models)), frameon=False)
    return _save(figure, path)


def write_progress_chart(
    results: Results, steps: list[tuple[str, float, str | None]], path: str | Path, references: tuple[str, ...] = ()
) -> Path:
    """Each task's score against training minutes: `steps` are (model, cumulative minutes, model it continues from),
    drawn as points joined to their parent; `references` (e.g. the causal baseline) as horizontal lines."""
    plt = _pyplot()

    minutes = {model: at for model, at, _ in steps}
    colors = plt.get_cmap("tab10")
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    for i, task in enumerate(results.tasks):
        color = colors(i % 10)
        for model, at, parent in steps:
            score, parent_score = _score(results, model, task), parent and _score(results, parent, task)
            if score is not None and parent_score is not None:
                axes.plot([minutes[parent], at], [100 * parent_score, 100 * score], color=color, marker="o")
            if score is not None and i == 0:
                axes.annotate(model, (at, 100 * score), fontsize=6, xytext=(3, 3), textcoords="offset points")
        axes.plot([], [], color=color, marker="o", label=task)
        for style, reference in zip(("dotted", "dashdot"), references, strict=False):
            if (score := _score(results, reference, task)) is not None:
                axes.axhline(100 * score, color=color, linestyle=style, linewidth=0.8)
    for style, reference in zip(("dotted", "dashdot"), references, strict=False):
        axes.plot([], [], color="grey", linestyle=style, label=reference)
    axes.set_xlabel("training minutes (cumulative along the adapter chain)")
    axes.set_ylabel("score × 100")
    axes.set_title("score against training time")
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    return _save(figure, path)


def write_report(
    results: Results,
    out_dir: str | Path,
    title: str = "lm2vec evaluation",
    command: str | None = None,
    notes: str | None = None,
    owned: bool = False,
) -> dict[str, Path]:
    """report.md (table, tasks, models, timings, then `notes`), report.png (bar chart) and results.json.

    `out_dir` must be new, empty or a report folder (ForeignFolderError), unless the caller knows it is lm2vec's
    (`owned`: a run's report folder)."""
    out_dir = Path(out_dir)
    if owned:
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        claim_folder(out_dir, RESULTS_NAME, RESULTS_FORMAT, RESULTS_LEGACY_KEYS)
    results.save(out_dir / RESULTS_NAME)  # first: the record that makes the folder a report's
    chart = write_chart(results, out_dir / "report.png", title)
    lines = [f"# {title}", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [
        f"Main metric of each task, × 100 (best in bold); the average's 95% interval over {BOOTSTRAP_REPLICATES:,} "
        "bootstrap resamples of the tasks' examples.",
        "",
        markdown_table(results),
        "",
    ]
    if comparison := noise_comparison(results):
        lines += [comparison, ""]
    lines += [
        "![chart](report.png)",
        "",
        "## Noise",
        "",
        "Half the width of each score's 95% bootstrap interval, × 100: how far the score could move on another "
        "sample of the task's size (– : results written before lm2vec kept bootstrap replicates).",
        "",
        half_widths_table(results),
        "",
        "## Tasks",
        "",
        "| task | type | metric | examples | language | description |",
        "| --- | --- | --- | ---: | --- | --- |",
    ]
    for name, task in results.tasks.items():
        lines.append(
            f"| {name} | {task['type']} | {task['main_metric']} | {task['size']} | {task['language']} | "
            f"{task['description']} |"
        )
    lines += [
        "",
        "## Models",
        "",
        "| model | spec | seconds | texts encoded | cache hits |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for model in results.models.values():
        lines.append(
            f"| {model.name} | `{model.spec}` | {model.seconds:.1f} | {model.encoded_texts} | {model.cache_hits} |"
        )
    if notes:
        lines += ["", notes]
    report = out_dir / "report.md"
    write_text_atomic(report, "\n".join(lines) + "\n")
    return {"markdown": report, "chart": chart, "results": out_dir / RESULTS_NAME}
