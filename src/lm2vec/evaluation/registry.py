"""The task registry: task definitions in TOML, each with its data paths, metric and instruction.

```toml
[suites]
mine = ["my-sts", "my-faq"]

[tasks.my-sts]
type = "sts"                      # sts | retrieval | classification | clustering | bitext | triplets |
                                  # word-tagging | word-spans (lm2vec.evaluation.word)
path = "data/sts.tsv"             # relative to this file, absolute, or ${stsb}/... ${gensim_data}/... ${bbc}/...
format = "tsv"                    # optional; else from the suffix (see lm2vec.data.formats)
instruction = "Retrieve semantically similar text"
metric = "spearman"               # optional main metric; else the type's default
limit = 500                       # optional: a deterministic subset (stratified by label where there are labels;
                                  # retrieval: `limit` queries against their documents and others, 3 per query)

[tasks.my-faq]
type = "retrieval"
path = "data/faq"                 # a BEIR folder; split = "test" by default
instruction = "Given a question, retrieve answers"
```

Every type also takes `language` and `description`. Keys of some types (`Task.entry_keys`; any other key is an
error): `scores` (sts: the score matrix of the `matrix` format), `target_path` (bitext from two parallel files),
`test_path` (classification with a given test split; else `folds`-fold cross-validation), `max_chars` (sts,
classification, clustering, retrieval: cut long texts), `min_words` (bitext and triplets from .mo catalogues),
`split` (retrieval), `column`, `readings` and `test_limit` (word-tagging and word-spans: CoNLL files, the tag
column, how words are read from token states, the test sentences kept; lm2vec.evaluation.word). Retrieval from
labelled texts whose first line is a headline: `format = "headlines"` (headline -> body). Each task type reads its
own entry (`Task.from_entry` in lm2vec.evaluation.tasks and .word). `builtin.toml` beside this module defines the
English, Bulgarian and word-level offline suites.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lm2vec.evaluation import tasks, word
from lm2vec.evaluation.errors import EvalConfigError, EvalDataError
from lm2vec.evaluation.tasks import COMMON_KEYS, Task, TaskEntry

TASK_TYPES: dict[str, type[Task]] = {**tasks.TASK_TYPES, **word.TASK_TYPES}

# The built-in suites and tasks, shipped beside this module (package data).
BUILTIN_REGISTRY = Path(__file__).resolve().with_name("builtin.toml")


@dataclass
class Registry:
    tasks: dict[str, dict] = field(default_factory=dict)
    suites: dict[str, list[str]] = field(default_factory=dict)
    base_dirs: dict[str, Path | None] = field(default_factory=dict)

    @classmethod
    def builtin(cls) -> Registry:
        return cls.from_files([BUILTIN_REGISTRY], include_builtin=False)

    @classmethod
    def from_files(cls, paths: list[str | Path] = (), include_builtin: bool = True) -> Registry:
        registry = cls.builtin() if include_builtin else cls()
        for path in paths:
            path = Path(path)
            if not path.is_file():
                raise EvalDataError("task registry not found", path)
            registry.add_toml(path.read_text(encoding="utf-8"), path.parent, str(path))
        return registry

    def add_toml(self, text: str, base_dir: Path | None, origin: str) -> None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise EvalConfigError(f"{origin}: not valid TOML ({error})") from None
        unknown_tables = set(data) - {"tasks", "suites"}
        if unknown_tables:
            raise EvalConfigError(f"{origin}: unknown table(s) {', '.join(sorted(unknown_tables))}; use [tasks.NAME]")
        for name, definition in data.get("tasks", {}).items():
            if not isinstance(definition, dict):
                raise EvalConfigError(f"{origin}: tasks.{name} must be a table")
            task_type = TASK_TYPES.get(definition.get("type"))
            if task_type is None:
                raise EvalConfigError(
                    f"{origin}: tasks.{name}: type must be one of {', '.join(TASK_TYPES)}, "
                    f"got {definition.get('type')!r}"
                )
            if unknown := set(definition) - {*COMMON_KEYS, *task_type.entry_keys}:
                raise EvalConfigError(
                    f"{origin}: tasks.{name}: unknown key(s) {', '.join(sorted(unknown))} for type "
                    f"{task_type.type!r}; it takes {', '.join(COMMON_KEYS + task_type.entry_keys)}"
                )
            if "path" not in definition:
                raise EvalConfigError(f"{origin}: tasks.{name}: 'path' is required")
            self.tasks[name] = definition
            self.base_dirs[name] = base_dir
        for suite, names in data.get("suites", {}).items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise EvalConfigError(f"{origin}: suites.{suite} must be a list of task names")
            self.suites[suite] = names
        for suite, names in self.suites.items():
            if missing := [n for n in names if n not in self.tasks]:
                raise EvalConfigError(f"{origin}: suite {suite!r} names unknown task(s) {', '.join(missing)}")

    def select(self, suites: list[str] = (), names: list[str] = ()) -> list[str]:
        chosen: list[str] = []
        for suite in suites:
            if suite not in self.suites:
                raise EvalConfigError(f"unknown suite {suite!r}; known: {', '.join(self.suites)}")
            chosen += self.suites[suite]
        for name in names:
            if name not in self.tasks:
                raise EvalConfigError(f"unknown task {name!r}; known: {', '.join(self.tasks)}")
            chosen.append(name)
        return list(dict.fromkeys(chosen))

    def load(self, name: str, limit: int | None = None) -> Task:
        """Read a task's data. `limit` overrides the definition's subset sizes (smaller runs, tests; a word-level
        task's test sample too, so a large limit is its full size)."""
        if name not in self.tasks:
            raise EvalConfigError(f"unknown task {name!r}; known: {', '.join(self.tasks)}")
        definition = dict(self.tasks[name])
        if limit is not None:
            definition["limit"] = limit
            if "test_limit" in definition:
                definition["test_limit"] = limit
        return build_task(name, definition, self.base_dirs.get(name))


def build_task(name: str, definition: dict, base_dir: Path | None = None) -> Task:
    """The task a registry entry defines (its keys; relative paths start at `base_dir`), with its data read."""
    return TASK_TYPES[definition["type"]].from_entry(TaskEntry(name, definition, base_dir))
