"""lm2vec.evaluation with real encoders: the tiny random Llama end to end (CLI included), the mteb protocol
offline, the packaged reference encoder and SmolLM2 on small subsets of real data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lm2vec.cli import app
from lm2vec.data.packaged import libreoffice_messages
from lm2vec.evaluation.embedding_cache import CachedEncoder, spec_fingerprint
from lm2vec.evaluation.encoders import LM2VecEncoder
from lm2vec.evaluation.errors import EvalConfigError
from lm2vec.evaluation.mteb_protocol import LM2VecMTEB, to_mteb
from lm2vec.evaluation.registry import Registry
from lm2vec.evaluation.runner import evaluate
from lm2vec.evaluation.specs import ModelSpec, reference_spec

TASKS_TOML = """
[suites]
small = ["pairs", "faq", "topics"]

[tasks.pairs]
type = "sts"
path = "pairs.tsv"

[tasks.faq]
type = "retrieval"
path = "faq"
instruction = "Given a question, retrieve the answer"

[tasks.topics]
type = "clustering"
path = "topics.jsonl"
"""


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    (tmp_path / "tasks.toml").write_text(TASKS_TOML)
    (tmp_path / "pairs.tsv").write_text("a red car\ta red car\t5\na red car\tbread\t0\nbread\tfresh bread\t4\n")
    faq = tmp_path / "faq"
    (faq / "qrels").mkdir(parents=True)
    (faq / "corpus.jsonl").write_text('{"_id": "d1", "text": "Faust is by Goethe."}\n{"_id": "d2", "text": "Bread."}\n')
    (faq / "queries.jsonl").write_text('{"_id": "q1", "text": "who wrote faust"}\n')
    (faq / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    records = [{"text": t, "label": label} for label in ("cars", "food") for t in ("red car", "fast car", "bread")]
    (tmp_path / "topics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_cli_eval_run_and_report_on_the_tiny_model(task_dir: Path, tiny_llama: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    tasks = str(task_dir / "tasks.toml")
    result = runner.invoke(
        app,
        [
            "eval",
            "run",
            "-m",
            f"tiny={tiny_llama}",
            "--tasks",
            tasks,
            "--suite",
            "small",
            "--out",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert set(saved["models"]["tiny"]["results"]) == {"pairs", "faq", "topics"}
    assert saved["models"]["tiny"]["encoded_texts"] > 0

    run = tmp_path / "run"
    run.mkdir()
    (run / "stages.toml").write_text(f'base = "{tiny_llama}"\nstages = []\n')
    result = runner.invoke(
        app,
        [
            "report",
            str(run),
            f"last={tiny_llama},pooling=last_token",
            "--tasks",
            tasks,
            "--suite",
            "small",
            "--no-reference",
            "--out",
            str(tmp_path / "rep"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = (tmp_path / "rep" / "report.md").read_text()
    for name in (
        "causal last-token",
        "causal mean",
        "causal echo",
        "causal PromptEOL",
        "bidirectional untrained",
        "last",
    ):
        assert f"| {name} |" in report
    assert (tmp_path / "rep" / "report.png").stat().st_size > 1000
    # Everything was encoded by the first run or by the baselines' first use: the report's rerun hits the cache.
    rerun = runner.invoke(
        app,
        ["report", str(run), "--tasks", tasks, "--suite", "small", "--no-reference", "--out", str(tmp_path / "rep2")],
    )
    assert rerun.exit_code == 0, rerun.output
    models = json.loads((tmp_path / "rep2" / "results.json").read_text())["models"]
    assert all(m["encoded_texts"] == 0 for m in models.values())


def test_cli_reports_bad_data_with_file_and_line(task_dir: Path, tiny_llama: Path) -> None:
    (task_dir / "pairs.tsv").write_text("a\tb\t1\nc\td\tsimilar\n")
    tasks = str(task_dir / "tasks.toml")
    result = CliRunner().invoke(app, ["eval", "run", "-m", f"tiny={tiny_llama}", "--tasks", tasks, "--task", "pairs"])
    assert result.exit_code == 2
    assert "pairs.tsv:2: gold score 'similar' is not a number" in result.output
    result = CliRunner().invoke(app, ["eval", "run", "-m", "x=pkg:smollm2,colour=red", "--task", "stsb-dev"])
    assert result.exit_code == 2 and "unknown option 'colour=red'" in result.output


def test_cli_lists_the_builtin_suites() -> None:
    result = CliRunner().invoke(app, ["eval", "list"])
    assert result.exit_code == 0
    assert (
        "suite english: stsb-dev, lee-similarity, bbc-classification, bbc-clustering, bbc-headline-retrieval"
        in result.output
    )
    assert "suite bulgarian:" in result.output


# --- mteb ---------------------------------------------------------------------------------------------------------
def test_mteb_protocol_calls(tiny_llama: Path) -> None:
    from mteb.models.models_protocols import EncoderProtocol
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

    from lm2vec import LM2Vec

    model = LM2Vec.from_pretrained(tiny_llama)
    wrapped = to_mteb(model, "test/tiny", instructions={"MyTask": "Find the answer"})
    assert isinstance(wrapped, EncoderProtocol)

    class Meta:
        name, type, prompt = "MyTask", "Retrieval", None

    texts = ["who wrote faust", "bread is baked", "a third text"]
    loader = DataLoader([{"text": t} for t in texts], batch_size=2)
    queries = wrapped.encode(
        loader, task_metadata=Meta(), hf_split="test", hf_subset="default", prompt_type=PromptType.query
    )
    documents = wrapped.encode(
        loader, task_metadata=Meta(), hf_split="test", hf_subset="default", prompt_type=PromptType.document
    )
    np.testing.assert_allclose(queries, model.encode(texts, normalize=True, prompt="Find the answer"), atol=1e-5)
    np.testing.assert_allclose(documents, model.encode(texts, normalize=True), atol=1e-5)
    assert wrapped.similarity(queries, documents).shape == (3, 3)
    np.testing.assert_allclose(wrapped.similarity_pairwise(queries, queries), np.ones(3), atol=1e-5)
    meta = wrapped.mteb_model_meta
    assert meta.name == "test/tiny" and meta.embed_dim == model.get_sentence_embedding_dimension()


def test_mteb_evaluate_runs_offline(tiny_llama: Path, tmp_path: Path) -> None:
    import mteb
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    from lm2vec import LM2Vec

    wrapped = LM2VecMTEB(LM2Vec.from_pretrained(tiny_llama), "test/tiny")
    result = mteb.evaluate(wrapped, [MockSTSTask(), MockRetrievalTask()], cache=None, show_progress_bar=False)
    scores = {r.task_name: r.get_score() for r in result.task_results}
    assert set(scores) == {"MockSTSTask", "MockRetrievalTask"}
    assert all(np.isfinite(s) for s in scores.values())


# --- real encoders on real data -------------------------------------------------------------------------------
def test_reference_encoder_on_stsb_and_lee(tmp_path: Path) -> None:
    registry = Registry.builtin()
    tasks = [registry.load("stsb-dev", limit=100), registry.load("lee-similarity")]
    results = evaluate([reference_spec()], tasks, cache_root=tmp_path, progress=False)
    scores = results.models["all-minilm-l6-v2"].results
    assert scores["stsb-dev"].main_score > 0.75  # all-MiniLM-L6-v2 scores about 0.87 on the full dev set
    assert scores["lee-similarity"].main_score > 0.5


def test_smollm2_beats_nothing_on_small_real_subsets(smollm2, tmp_path: Path) -> None:
    registry = Registry.builtin()
    sts = registry.load("stsb-dev", limit=40)
    topics = registry.load("bbc-classification", limit=25)
    spec = ModelSpec("smollm2", "pkg:smollm2")
    encoder = CachedEncoder(spec, cache_root=tmp_path, model=LM2VecEncoder(smollm2, "smollm2", batch_size=16))
    results = evaluate([encoder], [sts, topics], progress=False)
    metrics = results.models["smollm2"].results
    assert -1 <= metrics["stsb-dev"].metrics["spearman"] <= 1
    assert metrics["bbc-classification"].main_score > 0.3  # five balanced classes: chance is 0.2


def test_bulgarian_libreoffice_bitext(tmp_path: Path) -> None:
    libreoffice_messages("bg")  # fetched from Debian's registry into the test session's cache
    registry = Registry.builtin()
    bitext = registry.load("en-bg-libreoffice-bitext", limit=30)
    triplets = registry.load("bg-libreoffice-prefix-triplets", limit=30)
    assert bitext.size == 30 and any("\u0400" <= c <= "\u04ff" for c in bitext.targets[0])
    results = evaluate([reference_spec()], [bitext, triplets], cache_root=tmp_path, progress=False)
    assert 0 <= results.models["all-minilm-l6-v2"].results["en-bg-libreoffice-bitext"].main_score <= 1


# --- the onnx backend ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_onnx(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama exported with its ONNX files (fp32 and int8)."""
    pytest.importorskip("onnxruntime")
    from lm2vec import LM2Vec
    from lm2vec.modeling.export import export_encoder

    folder = tmp_path_factory.mktemp("tiny-onnx") / "model"
    export_encoder(LM2Vec.from_pretrained(tiny_llama, device="cpu"), folder, onnx=True)
    return folder


def test_model_spec_backend_options(tmp_path: Path) -> None:
    from lm2vec.modeling.onnx import ONNX_FILE, QUANTIZED_FILE

    int8 = ModelSpec.parse(f"int8={tmp_path},backend=onnx,pooling=mean")
    assert (int8.backend, int8.onnx_file, int8.pooling) == ("onnx", QUANTIZED_FILE, "mean")
    assert (
        ModelSpec.parse(int8.describe())
        == int8
        == ModelSpec.from_dict({"name": "int8", "source": str(tmp_path), "backend": "onnx", "pooling": "mean"})
    )
    fp32 = ModelSpec.parse(f"fp32={tmp_path},backend=onnx,onnx_file={ONNX_FILE}")
    assert fp32.onnx_file == ONNX_FILE and ModelSpec.parse(fp32.describe()) == fp32
    torch_spec = ModelSpec.parse(f"t={tmp_path}")
    assert (torch_spec.backend, torch_spec.onnx_file, torch_spec.describe()) == ("torch", None, f"t={tmp_path}")
    with pytest.raises(EvalConfigError, match=r"known: .*backend=torch\|onnx, onnx_file="):
        ModelSpec.parse(f"x={tmp_path},onnx=yes")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("x=FOLDER,backend=tensorflow", "backend must be one of torch, onnx, got 'tensorflow'"),
        ("x=FOLDER,onnx_file=onnx/model.onnx", "onnx_file=onnx/model.onnx needs backend=onnx"),
        ("x=FOLDER,backend=onnx,adapters=a+b,merge_method=ties", "cannot take adapters, merge_method"),
        ("x=FOLDER,backend=onnx,causal", "cannot take causal/bidirectional"),
        ("x=ref:all-minilm-l6-v2,backend=onnx", "runs lm2vec encoder folders, not ref:all-minilm-l6-v2"),
    ],
)
def test_model_spec_refuses_what_the_onnx_graph_cannot_honour(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(EvalConfigError, match=re.escape(message)):
        ModelSpec.parse(spec.replace("FOLDER", str(tmp_path)))


def test_onnx_spec_without_its_file_is_refused_before_any_load(tiny_llama: Path, tiny_onnx: Path) -> None:
    for spec, message in (
        (f"x={tiny_llama},backend=onnx", f"model 'x': {tiny_llama} has no onnx/model_qint8_avx2.onnx"),
        ("x=pkg:smollm2,backend=onnx", "model 'x': pkg:smollm2 has no onnx/model_qint8_avx2.onnx"),
        (f"x={tiny_onnx},backend=onnx,onnx_file=onnx/nope.onnx", "has no onnx/nope.onnx"),
    ):
        result = CliRunner().invoke(app, ["eval", "run", "-m", f"t={tiny_llama}", "-m", spec, "--task", "stsb-dev"])
        assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
        assert "Traceback" not in result.output and "loading" not in result.output.lower()


def test_cache_keys_tell_backends_and_onnx_files_apart(tiny_onnx: Path) -> None:
    from lm2vec.modeling.onnx import ONNX_FILE

    specs = [f"x={tiny_onnx}", f"x={tiny_onnx},backend=onnx", f"x={tiny_onnx},backend=onnx,onnx_file={ONNX_FILE}"]
    fingerprints = [spec_fingerprint(ModelSpec.parse(spec)) for spec in specs]
    assert len(set(fingerprints)) == 3
    (tiny_onnx / ONNX_FILE).touch()  # a re-exported graph is another model
    assert spec_fingerprint(ModelSpec.parse(specs[2])) != fingerprints[2]
    assert spec_fingerprint(ModelSpec.parse(specs[1])) == fingerprints[1]


def test_eval_run_through_the_onnx_backend_scores_as_torch(task_dir: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    from lm2vec.modeling.onnx import ONNX_FILE

    models = {
        "torch": str(tiny_onnx),
        "onnx-fp32": f"{tiny_onnx},backend=onnx,onnx_file={ONNX_FILE}",
        "onnx-int8": f"{tiny_onnx},backend=onnx",
    }
    options = [item for name, spec in models.items() for item in ("-m", f"{name}={spec}")]
    tasks = ["--tasks", str(task_dir / "tasks.toml"), "--suite", "small"]
    result = CliRunner().invoke(app, ["eval", "run", *options, *tasks, "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())["models"]
    # Each backend encoded its texts itself: none was served another's cached vectors.
    assert [saved[name]["encoded_texts"] for name in models] == [saved["torch"]["encoded_texts"]] * 3 != [0] * 3
    for name in ("onnx-fp32", "onnx-int8"):
        for task, scores in saved["torch"]["results"].items():
            assert saved[name]["results"][task]["main_score"] == pytest.approx(scores["main_score"], abs=0.02), task
