"""`lm2vec run`: the quick recipe end to end on a tiny random model, re-runs, changed options, resume, bad recipes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.artifacts import ForeignFolderError
from lm2vec.cli import app
from lm2vec.modeling.card import front_matter
from lm2vec.pipeline.plan import plan_run
from lm2vec.pipeline.run import Pipeline, PipelineError, run_recipe
from lm2vec.recipe import RecipeError, build_config
from lm2vec.stages import Stage, get_stage, register_stage, registered_stages, unregister_stage
from tests.test_fsdp import free_port
from tests.tiny_models import WORDS

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "smollm2-en-quick.toml"
STAGES = [stage.name for stage in registered_stages() if stage.name != "merge"]  # the quick recipe's stages

TASKS_TOML = """
[suites]
tiny = ["pairs", "topics"]

[tasks.pairs]
type = "sts"
path = "pairs.tsv"
instruction = "find similar text"

[tasks.topics]
type = "classification"
path = "topics.jsonl"
folds = 2
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return inputs_folder(tmp_path_factory.mktemp("pipeline-inputs"))


def inputs_folder(folder: Path) -> Path:
    """Documents, STS pairs and tasks in the tiny model's vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS[:-9]) for _ in range(rng.randint(6, 12))) + " ."

    documents = [" ".join(sentence() for _ in range(4)) for _ in range(24)]  # .txt: blank lines separate documents
    (folder / "docs.txt").write_text("\n\n".join(documents))
    scored = [f"{sentence()}\t{sentence()}\t{rng.choice([1, 4, 5])}\n" for _ in range(40)]
    (folder / "sts.tsv").write_text("".join(scored))
    (folder / "tasks.toml").write_text(TASKS_TOML)
    (folder / "pairs.tsv").write_text("a red car\ta red car\t5\na red car\tbread\t0\nthe dog ran\ta dog ran fast\t4\n")
    topics = [{"text": t, "label": "cars"} for t in ("red car", "fast car", "a blue car")]
    topics += [{"text": t, "label": "music"} for t in ("a man plays guitar", "piano music", "the child plays music")]
    (folder / "topics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in topics))
    return folder


def tiny_overrides(model: Path, inputs: Path) -> list[str]:
    """The quick recipe, shrunk to the tiny model: its tokenizer has no "_", so <unk> stands in for the mask."""
    return [
        f"run.model={model}",
        f"data.inputs={inputs / 'docs.txt'}",
        "data.min_article_chars=20",
        "data.workers=1",
        "data.progress=false",
        "mntp.max_seq_length=16",
        "mntp.per_device_batch_size=4",
        "mntp.max_steps=4",
        "mntp.save_steps=2",
        "mntp.eval_steps=4",
        "mntp.mask_token=<unk>",
        "simcse.per_device_batch_size=8",
        "simcse.max_steps=3",
        "simcse.save_steps=2",
        "simcse.mini_batch_size=8",
        f"supervised.data={inputs / 'sts.tsv'}",
        "supervised.per_device_batch_size=4",
        "supervised.max_steps=2",
        f'eval.registries=["{inputs / "tasks.toml"}"]',
        "eval.suites=tiny",
        "eval.batch_size=8",
    ]


def test_the_quick_recipe_runs_every_stage_and_resumes(tiny_llama, inputs, tmp_path) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_llama, inputs)
    printed: list[str] = []
    pipeline = run_recipe(QUICK, overrides, run_dir, echo=printed.append)

    state = json.loads((run_dir / "pipeline.json").read_text())
    assert list(state["stages"]) == list(STAGES)
    assert all(record["status"] == "done" and record["seconds"] > 0 for record in state["stages"].values())
    assert state["stages"]["mntp"]["summary"]["steps"] == 4
    assert "masked_accuracy_start" in state["stages"]["mntp"]["summary"]
    assert state["stages"]["simcse"]["summary"]["steps"] == 3
    assert state["stages"]["data"]["summary"]["articles"] == 24
    assert all((run_dir / "logs" / f"{stage}.log").is_file() for stage in STAGES)  # third-party noise is kept
    for stage in ("mntp", "simcse", "supervised"):
        assert (run_dir / stage / "adapter" / "adapter_config.json").is_file()
        assert not (run_dir / stage / "encoder").exists()  # only the final model is exported
    assert pipeline.plan.final_adapters() == [run_dir / "mntp" / "adapter", run_dir / "supervised" / "adapter"]

    # The export is the final chain, and plain sentence-transformers reads it.
    texts = ["a red car", "the dog ran fast"]
    final = LM2Vec.from_pretrained(tiny_llama, adapters=pipeline.plan.final_adapters())
    exported = SentenceTransformer(str(run_dir / "model"), device="cpu")
    np.testing.assert_allclose(exported.encode_document(texts), final.encode(texts), rtol=1e-4, atol=1e-5)
    instruction = LM2Vec.from_pretrained(run_dir / "model").config.query_instruction
    assert instruction  # the STS pairs carry one, so plain `encode` puts it in front
    expected_query = final.encode(texts, prompt=instruction)
    np.testing.assert_allclose(exported.encode(texts), expected_query, rtol=1e-4, atol=1e-5)

    report = (run_dir / "report" / "report.md").read_text()
    for row in (
        "causal last-token",
        "causal mean",
        "bidirectional untrained",
        "after MNTP",
        "after SimCSE",
        "after supervised",
        "reference: all-MiniLM-L6-v2",
    ):
        assert f"| {row} |" in report
    assert "## Stages" in report and "| mntp |" in report
    assert (run_dir / "report" / "report.png").stat().st_size > 1000
    # Each stage's scores against the minutes of its adapter chain: supervised continues from MNTP here.
    minutes = {s: state["stages"][s]["seconds"] / 60 for s in ("mntp", "simcse", "supervised")}
    progress = report.split("## Score against training time")[1]
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in progress.splitlines() if line.startswith("| ")}
    assert rows["bidirectional untrained"] == "0.0"
    assert rows["after SimCSE"] == f"{minutes['mntp'] + minutes['simcse']:.1f}"
    assert rows["after supervised"] == f"{minutes['mntp'] + minutes['supervised']:.1f}"
    assert (run_dir / "report" / "progress.png").stat().st_size > 1000
    assert any(line.startswith("| model |") for line in printed)  # the table is printed at the end

    # The exported folder's model card: Hub front matter, each stage's wall time, the scores of eval/results.json.
    card = (run_dir / "model" / "README.md").read_text()
    assert front_matter(card)["library_name"] == "sentence-transformers"
    training = card.split("## Training")[1].split("## Evaluation")[0]
    assert f"| mntp | {state['stages']['mntp']['seconds']:.0f} s | " in training and "max_steps=4" in training
    saved = json.loads((run_dir / "eval" / "results.json").read_text())
    table = [line for line in card.split("## Evaluation")[1].splitlines() if line.startswith("| ")][2:]
    scores = {row.split(" | ")[0][2:]: [cell.strip(" *|") for cell in row.split(" | ")[1:]] for row in table}
    assert set(scores) == set(saved["models"])
    for model, cells in scores.items():
        for task, cell in zip(saved["tasks"], cells, strict=False):
            assert cell == f"{100 * saved['models'][model]['results'][task]['main_score']:.1f}"

    # A second run finds everything done.
    printed.clear()
    run_recipe(QUICK, overrides, run_dir, echo=printed.append)
    assert sum("skipped" in line for line in printed) == len(STAGES)

    # So does a folder whose record earlier lm2vec wrote (it hashed the `--set` strings as typed).
    plan = plan_run(QUICK, overrides, run_dir)
    assert any(plan.legacy_hashes[stage] != plan.hashes[stage] for stage in STAGES)
    record = json.loads((run_dir / "pipeline.json").read_text())
    for stage in STAGES:
        record["stages"][stage]["options_hash"] = plan.legacy_hashes[stage]
    (run_dir / "pipeline.json").write_text(json.dumps(record))
    printed.clear()
    run_recipe(QUICK, overrides, run_dir, echo=printed.append)
    assert sum("skipped" in line for line in printed) == len(STAGES)

    # A changed option of a finished stage is refused, then redone from there on.
    changed = [*overrides, "simcse.learning_rate=1e-3"]
    with pytest.raises(PipelineError, match="--redo simcse"):
        run_recipe(QUICK, changed, run_dir, echo=printed.append)
    printed.clear()
    run_recipe(QUICK, changed, run_dir, redo="simcse", echo=printed.append)
    ran = [line.split(":")[0] for line in printed if ": done in" in line]
    assert ran == [f"[{i}/7] {s}" for i, s in enumerate(STAGES, start=1) if s not in ("data", "mntp")]


def test_a_failed_stage_is_resumed(tiny_llama, inputs, tmp_path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_llama, inputs)
    run_recipe(QUICK, overrides, run_dir, until="mntp", echo=lambda line: None)
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert state["mntp"]["status"] == "done" and state["simcse"]["status"] == "pending"

    def broken(context):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C during SimCSE

    monkeypatch.setattr(get_stage("simcse"), "run", broken)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(QUICK, overrides, run_dir, echo=lambda line: None)
    assert json.loads((run_dir / "pipeline.json").read_text())["stages"]["simcse"]["status"] == "failed"
    monkeypatch.undo()

    printed: list[str] = []
    run_recipe(QUICK, overrides, run_dir, until="simcse", echo=printed.append)
    assert "[3/7] simcse: resuming" in printed
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert state["simcse"]["status"] == "done" and state["simcse"]["attempts"] == 2


def test_a_set_value_and_the_same_value_in_the_recipe_are_one_run(tmp_path) -> None:
    """A run planned with `--set simcse.learning_rate=1e-3` is the run of a recipe that says `learning_rate = 1e-3`,
    however the number is spelt, so moving a `--set` into the recipe does not ask for `--redo`."""
    in_recipe = tmp_path / "in-recipe.toml"
    in_recipe.write_text(QUICK.read_text().replace("[simcse]\n", "[simcse]\nlearning_rate = 1e-3\n", 1))
    run_dir = tmp_path / "run"
    set_value = plan_run(QUICK, ["simcse.learning_rate=1e-3"], run_dir, check_inputs=False)
    spelt_otherwise = plan_run(QUICK, ["simcse.learning_rate=0.001"], run_dir, check_inputs=False)
    assert set_value.hashes == spelt_otherwise.hashes == plan_run(in_recipe, [], run_dir, check_inputs=False).hashes
    default = plan_run(QUICK, [], run_dir, check_inputs=False)
    assert set_value.hashes["mntp"] == default.hashes["mntp"] and set_value.hashes["simcse"] != default.hashes["simcse"]


def test_bad_recipes_are_clear_errors(tmp_path) -> None:
    def recipe(text: str) -> Path:
        path = tmp_path / "r.toml"
        path.write_text(text)
        return path

    with pytest.raises(RecipeError, match="unknown section"):
        plan_run(recipe("[trainer]\nx = 1\n"))
    with pytest.raises(RecipeError, match="add an \\[mntp\\] section"):
        plan_run(recipe('[data]\ninputs = ["a.txt"]\nlang = "en"\n[simcse]\n'))
    with pytest.raises(RecipeError, match="may not set output_dir"):
        plan_run(recipe('[data]\ninputs = ["a.txt"]\nlang = "en"\n[mntp]\noutput_dir = "x"\n'))
    with pytest.raises(RecipeError, match="has no option colour"):
        plan_run(recipe('[data]\ninputs = ["a.txt"]\nlang = "en"\ncolour = "red"\n'))
    with pytest.raises(RecipeError, match="\\[supervised\\] needs `data`"):
        plan_run(recipe('[data]\ninputs = ["a.txt"]\nlang = "en"\n[mntp]\n[supervised]\n'))
    with pytest.raises(RecipeError, match="section.key=value"):
        plan_run(QUICK, ["max_steps=3"])
    plan = plan_run(QUICK, ["mntp.max_steps=3"], tmp_path / "run")
    assert plan.options["mntp"].max_steps == 3 and plan.options["mntp"].output_dir == str(tmp_path / "run" / "mntp")
    assert plan.options["simcse"].adapters == [str(tmp_path / "run" / "mntp" / "adapter")]

    result = CliRunner().invoke(app, ["run", str(QUICK), "--set", "mntp.mask_prob=lots", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "mask_prob='lots' is not a number" in result.output
    result = CliRunner().invoke(app, ["run", str(QUICK), "--until", "training", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "'training' is not a stage" in result.output


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda path: path.stem)
def test_every_shipped_recipe_plans(recipe: Path, tmp_path) -> None:
    plan = plan_run(recipe, out=tmp_path, check_inputs=False)  # GPU recipes name hub models and dumps
    assert plan.stages[-3:] == ["export", "eval", "report"] and "mntp" in plan.stages
    for stage in plan.trained:
        assert plan.options[stage].output_dir == str(tmp_path / stage)


def test_two_processes_run_the_recipe(tiny_llama, inputs, tmp_path) -> None:
    """Under torchrun the training stages run on both processes (gloo), the others on the main process only."""
    run_dir = tmp_path / "run"
    overrides = [arg for override in tiny_overrides(tiny_llama, inputs) for arg in ("--set", override)]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lm2vec",
        "run",
        str(QUICK),
        "--out",
        str(run_dir),
        *overrides,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert all(record["status"] == "done" for record in state.values())
    config = json.loads((run_dir / "mntp" / "mntp_config.json").read_text())
    assert config["world_size"] == 2
    assert completed.stdout.count("[7/7] report: done") == 1  # printed by the main process only
    assert (run_dir / "report" / "report.md").is_file() and (run_dir / "model" / "modules.json").is_file()


def test_machines_that_do_not_share_the_run_folder_stop_together_with_the_fix(tiny_llama, inputs, tmp_path) -> None:
    """Two `--nnodes 2` torchruns on localhost, each with a run folder of its own (as two machines with local disks):
    process 1 cannot see the record process 0 wrote, and both stop before any stage with an error saying the folder
    must be shared, instead of running different stages and waiting forever in a collective."""
    overrides = [arg for override in tiny_overrides(tiny_llama, inputs) for arg in ("--set", override)]
    port = str(free_port())
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "LM2VEC_SHARED_FOLDER_WAIT": "2"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
            + ["--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", port]
            + ["-m", "lm2vec", "run", str(QUICK), "--out", str(tmp_path / f"node{node}" / "run"), *overrides],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode != 0, output
        assert "process(es) 1 (on " in output and "file system they all share" in output, output[-3000:]
    record = json.loads((tmp_path / "node0" / "run" / "pipeline.json").read_text())
    assert all(stage["status"] == "pending" for stage in record["stages"].values())  # no stage started
    assert not (tmp_path / "node1" / "run").exists()  # process 1 wrote nothing of its own


def test_a_run_never_writes_into_or_deletes_what_is_not_its_own(tiny_llama, inputs, tmp_path) -> None:
    """`run --out .` in a project folder, then `--redo data`, used to delete the user's dump, model/ and report/."""
    project = tmp_path / "project"
    for name in ("data/mydump.xml.bz2", "model/model.safetensors", "report/notes.md"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(f"the user's {name}")
    overrides = [arg for override in tiny_overrides(tiny_llama, inputs) for arg in ("--set", override)]
    result = CliRunner().invoke(app, ["run", str(QUICK), "--out", str(project), "--until", "data", *overrides])
    assert result.exit_code == 2 and f"{project} is not empty and was not made by lm2vec" in result.output
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        "data/mydump.xml.bz2",
        "model/model.safetensors",
        "report/notes.md",
    ]

    run_dir = tmp_path / "run"
    run_recipe(QUICK, tiny_overrides(tiny_llama, inputs), run_dir, until="data", echo=lambda line: None)
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert state["format"] == "lm2vec-run" and state["stages"]["data"]["outputs"] == ["data/00-docs", "logs/data.log"]
    (run_dir / "data" / "mydump.xml.bz2").write_text("the user's dump, kept beside the corpora")
    (run_dir / "mntp").mkdir()
    (run_dir / "mntp" / "my-adapter.safetensors").write_text("the user's")
    printed: list[str] = []
    run_recipe(QUICK, tiny_overrides(tiny_llama, inputs), run_dir, redo="data", until="data", echo=printed.append)
    assert f"  --redo data: removed {run_dir.resolve() / 'data' / '00-docs'}" in printed
    assert (run_dir / "data" / "mydump.xml.bz2").is_file() and (
        run_dir / "data" / "00-docs" / "manifest.json"
    ).is_file()
    with pytest.raises(ForeignFolderError, match=f"{run_dir / 'mntp'} exists but lm2vec's record"):
        run_recipe(QUICK, tiny_overrides(tiny_llama, inputs), run_dir, until="mntp", echo=lambda line: None)
    assert (run_dir / "mntp" / "my-adapter.safetensors").read_text() == "the user's"
    assert json.loads((run_dir / "pipeline.json").read_text())["stages"]["mntp"]["status"] == "pending"


def test_the_whole_recipe_is_checked_before_any_stage_starts(tmp_path) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text(
        '[run]\nmodel = "/no/such/model"\n[data]\ninputs = ["missing.txt"]\nlang = "en"\n'
        "[mntp]\nlearning_rate = -1.0\nmax_steps = 6.5\nper_device_batch_size = 0\n[simcse]\nmax_steps = -5\n"
    )
    overrides = ["--set", "mntp.lora_target_modules=[q_proj", "--set", "eval.suites=nope", "--set", "nodot"]
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), *overrides])
    assert result.exit_code == 2 and "6 problems, nothing was run" in result.output
    for problem in (
        "max_steps=6.5 is not an integer",
        "lora_target_modules='[q_proj' is not a JSON list",
        "per_device_batch_size must be at least 1, got 0",
        "learning_rate must be positive",
        "[simcse] max_steps must be at least 1, got -5",
        "unknown suite 'nope'",
        "'/no/such/model' is neither a model folder nor a .gguf file",
        f"{tmp_path / 'missing.txt'} does not exist",
        "Override 'nodot'",
    ):
        assert problem in result.output
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, ["run", str(QUICK), "--out", str(tmp_path / "run"), "--set", "run.model="])
    assert result.exit_code == 2 and "No model given" in result.output


def test_a_killed_attempt_still_counts_in_the_wall_time(tiny_llama, inputs, tmp_path, monkeypatch) -> None:
    """The time of an attempt is written while it runs, so a kill -9 (which runs no handler) does not lose it."""
    monkeypatch.setattr("lm2vec.pipeline.run.HEARTBEAT_SECONDS", 0.05)
    pipeline = Pipeline(plan_run(QUICK, tiny_overrides(tiny_llama, inputs), tmp_path / "run"), echo=lambda line: None)
    record = pipeline.records["data"]
    with pipeline._timing(record):
        time.sleep(0.5)
        written = json.loads((tmp_path / "run" / "pipeline.json").read_text())["stages"]["data"]["seconds"]
    assert 0.2 < written <= record.seconds


def test_only_runs_one_stage_from_the_runs_inputs(tiny_llama, inputs, tmp_path) -> None:
    """`run --only STAGE` and `train STAGE --recipe`: that stage alone, in the run's folders, from its inputs."""
    run_dir = tmp_path / "run"
    overrides = [arg for override in tiny_overrides(tiny_llama, inputs) for arg in ("--set", override)]
    result = CliRunner().invoke(app, ["run", str(QUICK), "--out", str(run_dir), "--only", "mntp", *overrides])
    assert result.exit_code == 2 and "mntp reads what data write(s)" in " ".join(result.output.split())
    assert "--until data" in result.output
    # `train STAGE --recipe` also runs the stages it reads from that are not done: here the data stage.
    result = CliRunner().invoke(app, ["train", "mntp", "--recipe", str(QUICK), "--out", str(run_dir), *overrides])
    assert result.exit_code == 0, result.output
    assert "[1/7] data: done in" in result.output and "simcse" not in result.output
    assert f"mntp done at step 4: adapter {run_dir / 'mntp' / 'adapter'}" in result.output
    result = CliRunner().invoke(app, ["run", str(QUICK), "--out", str(run_dir), "--only", "data", *overrides])
    assert result.exit_code == 0 and "data: done earlier" in result.output, result.output
    # Supervised training starts from MNTP here (run.supervised_after), so it need not wait for SimCSE.
    result = CliRunner().invoke(app, ["train", "supervised", "-r", str(QUICK), "--out", str(run_dir), *overrides])
    assert result.exit_code == 0, result.output
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert [s for s in STAGES if state[s]["status"] == "done"] == ["data", "mntp", "supervised"]
    config = json.loads((run_dir / "supervised" / "contrastive_options.json").read_text())
    assert config["adapters"] == [str(run_dir / "mntp" / "adapter")] and config["max_steps"] == 2

    printed: list[str] = []  # the whole run goes on from there
    run_recipe(QUICK, tiny_overrides(tiny_llama, inputs), run_dir, until="export", echo=printed.append)
    ran = [line.split(":")[0].split()[-1] for line in printed if ": done in" in line]
    assert ran == ["simcse", "export"]


@dataclass
class Greeting:
    """The toy stage's options."""

    word: str = "hello"


class ToyStage(Stage):
    """A stage from outside lm2vec: writes the adapters of the chain before it, with its option, to RUN/toy/."""

    name = section = "toy"

    def options_class(self) -> type:
        return Greeting

    def build_options(self, plan, section):
        return build_config(Greeting, self.name, {self.name: section})

    def outputs(self, plan) -> list[str]:
        return ["toy"]

    def run(self, context) -> dict:
        adapters = context.plan.final_adapters()
        assert all((adapter / "adapter_config.json").is_file() for adapter in adapters)
        (context.dir / "toy").mkdir()
        text = "\n".join([context.plan.options["toy"].word, *(str(a) for a in adapters)])
        (context.dir / "toy" / "adapters.txt").write_text(text)
        return {"adapters": len(adapters), "word": context.plan.options["toy"].word}


@pytest.fixture
def toy_stage():
    register_stage(ToyStage(), after="supervised")
    yield
    unregister_stage("toy")


@pytest.mark.usefixtures("toy_stage")
def test_a_stage_added_through_the_registry_runs_in_a_recipe(tiny_llama, inputs, tmp_path) -> None:
    recipe = tmp_path / "toy.toml"
    recipe.write_text(QUICK.read_text() + '\n[toy]\nword = "hi"\n')
    overrides = [*tiny_overrides(tiny_llama, inputs), "supervised.max_steps=1", "simcse.max_steps=1"]
    plain = plan_run(QUICK, overrides, tmp_path / "plain")
    plan = plan_run(recipe, overrides, tmp_path / "run")
    assert plan.stages == ["data", "mntp", "simcse", "supervised", "toy", "export", "eval", "report"]
    assert [plan.hashes[s] for s in plan.stages[:4]] == [plain.hashes[s] for s in plain.stages[:4]]
    assert plan_run(QUICK, overrides, tmp_path / "plain").stages == plain.stages  # only recipes with [toy] run it

    printed: list[str] = []
    run_recipe(recipe, [*overrides, "toy.word=howdy"], tmp_path / "run", until="toy", echo=printed.append)
    assert "[5/8] toy: done in" in printed[-2] and "(adapters 2, word howdy)" in printed[-2]
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())["stages"]
    assert state["toy"]["summary"] == {"adapters": 2, "word": "howdy"}
    assert state["toy"]["outputs"] == ["logs/toy.log", "toy"]
    written = (tmp_path / "run" / "toy" / "adapters.txt").read_text().splitlines()
    assert written == [
        "howdy",
        str(tmp_path / "run" / "mntp" / "adapter"),
        str(tmp_path / "run" / "supervised" / "adapter"),
    ]
    with pytest.raises(RecipeError, match="toy\\] has no option colour"):
        plan_run(recipe, [*overrides, "toy.colour=red"])
