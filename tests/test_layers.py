"""lm2vec's layers import downward only (read from the source with `ast`); weight files are fingerprinted once.

Every subpackage and top-level module of lm2vec has its place in LAYER_ORDER and imports only from its own layer
or the layers below it: at import time, in a function and under TYPE_CHECKING alike, so no import cycle hides in
a function-level import. The eval stage hands its models straight to the evaluation.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

import lm2vec
from tests.test_pipeline import QUICK, inputs_folder, tiny_overrides

SOURCE = Path(lm2vec.__file__).parent
# lm2vec's layers, lowest first.
LAYER_ORDER = (
    ("lm2vec.errors",),
    ("lm2vec.artifacts", "lm2vec.cache", "lm2vec.console", "lm2vec.options", "lm2vec.recipe"),
    ("lm2vec.data",),
    ("lm2vec.modeling",),
    ("lm2vec.training", "lm2vec.evaluation", "lm2vec.serving"),
    ("lm2vec.stages",),
    ("lm2vec.pipeline",),
    ("lm2vec.cli", "lm2vec.__main__"),
)
# Upward imports still being removed, each by the colleague named: (importing module, layer imported from).
BEING_FIXED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports: a module, or module.NAME for `from module import NAME`
    line: int
    when: str  # "import": runs when `module` is imported; "call": inside a function; "typing": under TYPE_CHECKING

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportFinder(ast.NodeVisitor):
    def __init__(self, module: str, package: str) -> None:
        self.module, self.package = module, package
        self.when = "import"
        self.found: list[Import] = []

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [Import(self.module, alias.name, node.lineno, self.when) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        parts = self.package.split(".")
        base = parts[: len(parts) - node.level + 1] if node.level else []
        target = ".".join([*base, *([node.module] if node.module else [])])
        self.found.append(Import(self.module, target, node.lineno, self.when))
        self.found += [Import(self.module, f"{target}.{alias.name}", node.lineno, self.when) for alias in node.names]

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._visit_as(node.body, "call" if self.when == "import" else self.when)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._visit_as(node.body, "typing")
        for statement in node.orelse:
            self.visit(statement)

    def _visit_as(self, statements: list[ast.stmt], when: str) -> None:
        outer, self.when = self.when, when
        for statement in statements:
            self.visit(statement)
        self.when = outer


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    finder = _ImportFinder(module, module if path.name == "__init__.py" else module.rpartition(".")[0])
    finder.visit(ast.parse(path.read_text(encoding="utf-8")))
    return finder.found


IMPORTS = [found for path in sorted(SOURCE.rglob("*.py")) for found in imports_of(path)]
LAYERS = {
    f"lm2vec.{path.stem}" for path in SOURCE.iterdir() if path.suffix == ".py" or (path / "__init__.py").is_file()
}
LAYERS.discard("lm2vec.__init__")


def layer(module: str) -> str | None:
    """The subpackage or top-level module of lm2vec that `module` is (in); None for lm2vec itself and the rest."""
    top = ".".join(module.split(".")[:2])
    return top if top in LAYERS else None


def test_every_layer_has_its_place_in_the_order() -> None:
    placed = [name for names in LAYER_ORDER for name in names]
    assert set(placed) == LAYERS, "add the new subpackage or module to LAYER_ORDER"


def test_each_module_imports_only_from_its_layer_or_below() -> None:
    rank = {name: position for position, names in enumerate(LAYER_ORDER) for name in names}
    upward = [
        f"{found} ({found.when})"
        for found in IMPORTS
        if layer(found.module)
        and layer(found.target)
        and rank[layer(found.target)] > rank[layer(found.module)]
        and (found.module, layer(found.target)) not in BEING_FIXED
    ]
    assert not upward, "imports from a layer above:\n" + "\n".join(upward)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of two or more nodes that each reach every other one: the import cycles."""

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for following in graph.get(todo.pop(), ()):
                if following not in seen:
                    seen.add(following)
                    todo.append(following)
        return seen

    nodes = set(graph).union(*graph.values())
    reached = {node: reach(node) for node in nodes}
    groups = {frozenset(other for other in reached[node] if node in reached[other]) for node in graph}
    return [set(group) for group in groups if len(group) > 1]


def test_no_import_cycles_between_lm2vecs_layers() -> None:
    """Between the peers of one layer too (training, evaluation, serving), function-level imports included."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for found in IMPORTS:
        source, target = layer(found.module), layer(found.target)
        if source and target and source != target and (found.module, target) not in BEING_FIXED:
            edges.setdefault((source, target), []).append(found)
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    cycles = strongly_connected(graph)
    described = [
        f"{sorted(cycle)}: " + "; ".join(str(edges[edge][0]) for edge in sorted(edges) if set(edge) <= cycle)
        for cycle in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(described)


MODULES = {module_name(path) for path in SOURCE.rglob("*.py")}


def imported_module(target: str) -> str:
    """The lm2vec module that `target` (a module, or module.NAME) is or is in; "" for none."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target


@pytest.mark.parametrize("package", ["lm2vec.modeling", "lm2vec.training", "lm2vec.evaluation", "lm2vec.pipeline"])
def test_the_modules_of_a_layer_import_each_other_without_cycles(package: str) -> None:
    """In any way: at import, in a function or for type hints. The model card once named the EncoderConfig of the
    encoder module, which imports the card; now config, loading, the encoder and its files are modules of their own."""
    graph: dict[str, set[str]] = {}
    for found in IMPORTS:
        target = imported_module(found.target)
        if layer(found.module) == package and layer(target) == package and target != found.module:
            graph.setdefault(found.module, set()).add(target)
    assert not strongly_connected(graph), f"import cycles in {package}: {strongly_connected(graph)}"


def test_the_modules_of_lm2vec_data_import_each_other_without_cycles() -> None:
    """In any way, as above; the package's __init__, which re-exports its modules, aside. lm2vec.readers and
    lm2vec.data.corpus once imported each other (a function-level import hid it); now the readers of lm2vec.data
    import the corpus, dump and error modules, and none of these imports a reader."""
    graph: dict[str, set[str]] = {}
    for found in IMPORTS:
        target = imported_module(found.target)
        inside = layer(found.module) == layer(target) == "lm2vec.data" and "lm2vec.data" not in (found.module, target)
        if inside and target != found.module:
            graph.setdefault(found.module, set()).add(target)
    assert not strongly_connected(graph), f"import cycles in lm2vec.data: {strongly_connected(graph)}"
    assert {"lm2vec.data.corpus", "lm2vec.data.errors"} <= graph["lm2vec.data.readers"]


def test_weight_files_are_fingerprinted_in_one_module() -> None:
    defining = sorted(
        module_name(path)
        for path in SOURCE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign)
        and any(getattr(target, "id", "") == "WEIGHT_SUFFIXES" for target in node.targets)
    )
    assert defining == ["lm2vec.modeling.fingerprint"]
    users = {found.module for found in IMPORTS if found.target == "lm2vec.modeling.fingerprint"}
    assert {"lm2vec.evaluation.embedding_cache", "lm2vec.serving.index"} <= users


STAMP_NS = 1_700_000_000_000_000_000
MODEL_FILES = {  # name: content; each file's mtime is STAMP_NS + its position here
    "config.json": "{}",
    "README.md": "readme",
    "model-00001-of-00002.safetensors": "first shard",
    "model-00002-of-00002.safetensors": "second shard",
    "2_Dense/model.safetensors": "dense",
}


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """Two shards of weights, a Dense layer's weights in a subfolder, and files that are not weights."""
    folder = tmp_path / "model"
    (folder / "2_Dense").mkdir(parents=True)
    for position, (name, content) in enumerate(MODEL_FILES.items()):
        (folder / name).write_text(content)
        os.utime(folder / name, ns=(STAMP_NS + position, STAMP_NS + position))
    return folder


def test_an_index_built_before_still_knows_its_model(model_folder: Path) -> None:
    """An index records its model's top-level weight files (name, size, mtime) and a SHA-256 over their names and
    contents, as earlier versions did; a copy (new mtimes) is the same model, changed weights are not."""
    from lm2vec.modeling.config import EncoderConfig
    from lm2vec.serving.index import IndexStoreError, check_same_model, describe_model

    encoder = SimpleNamespace(config=EncoderConfig(), get_sentence_embedding_dimension=lambda: 8)
    recorded = describe_model(str(model_folder), encoder)
    assert recorded["weights_sha256"] == "4e9beb043a644a5a676854b93f342add019a82156333dd211ee3bd583f47b317"
    assert recorded["weight_files"] == [
        ["model-00001-of-00002.safetensors", 11, STAMP_NS + 2],
        ["model-00002-of-00002.safetensors", 12, STAMP_NS + 3],
    ]
    shard = model_folder / "model-00002-of-00002.safetensors"
    os.utime(shard)
    check_same_model(recorded, str(model_folder), encoder)
    shard.write_text("second shard, retrained")
    with pytest.raises(IndexStoreError, match="its weights differ"):
        check_same_model(recorded, str(model_folder), encoder)


def test_cached_embeddings_keep_their_keys(model_folder: Path, tmp_path: Path) -> None:
    """The embedding cache's key of a model: every weight file under its folder and each adapter (subfolders too)
    by resolved path, size and mtime, as earlier versions computed it, so their cached embeddings stay valid."""
    from lm2vec.evaluation.embedding_cache import spec_fingerprint
    from lm2vec.evaluation.specs import ModelSpec

    def stamp(name: str) -> list:
        position = list(MODEL_FILES).index(name)
        return [str((model_folder / name).resolve()), len(MODEL_FILES[name]), STAMP_NS + position]

    (tmp_path / "empty").mkdir()
    adapters = (str(model_folder / "2_Dense"), str(tmp_path / "empty"), str(tmp_path / "missing"))
    weights = [
        stamp("2_Dense/model.safetensors"),
        stamp("model-00001-of-00002.safetensors"),
        stamp("model-00002-of-00002.safetensors"),
    ]
    adapter_stamps = [[stamp("2_Dense/model.safetensors")], [str((tmp_path / "empty").resolve())], [adapters[2]]]
    expected = json.dumps(["st", weights, adapter_stamps, {}], sort_keys=True)
    key = spec_fingerprint(ModelSpec("any name", f"st:{model_folder}", adapters=adapters))
    assert key == hashlib.sha256(expected.encode()).hexdigest()[:24]


def test_the_eval_stage_evaluates_the_models_it_lists_without_reading_them_back(tiny_llama, tmp_path, monkeypatch):
    """The eval stage writes RUN/stages.json for `lm2vec report RUN` and evaluates the same models straight away."""
    from lm2vec.evaluation import report, runner
    from lm2vec.pipeline.plan import plan_run
    from lm2vec.stages import get_stage

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    plan = plan_run(QUICK, tiny_overrides(tiny_llama, inputs_folder(tmp_path / "inputs")), run_dir)
    evaluated = []

    def evaluate(specs, tasks, **options) -> runner.Results:
        evaluated.extend(specs)
        return runner.Results()

    monkeypatch.setattr(runner, "evaluate", evaluate)
    with monkeypatch.context() as reading:
        reading.setattr(report, "read_manifest", lambda folder: pytest.fail(f"{folder}'s manifest was read back"))
        get_stage("eval").run(SimpleNamespace(plan=plan, dir=run_dir))
    assert evaluated == report.resolve_models([str(run_dir)])  # what `lm2vec report RUN` compares
    assert [spec.name for spec in evaluated][5:] == [
        "after MNTP",
        "after SimCSE",
        "after supervised",
        report.REFERENCE_NAME,
    ]
    assert evaluated[7].adapters == (str(run_dir / "mntp" / "adapter"), str(run_dir / "supervised" / "adapter"))
