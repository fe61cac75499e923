"""ONNX export (fp32 and int8) and the onnx backend, on tiny random models: vectors against torch, the exported
graph's attention, the sentence-transformers layout, and the command line's errors."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.modeling import onnx as onnx_module
from lm2vec.modeling.bidirectional import probe_attention, set_bidirectional
from lm2vec.modeling.export import export_encoder
from lm2vec.modeling.onnx import (
    FP32_MATMULS_KEY,
    MATMUL_WEIGHT_LEVELS,
    ONNX_FILE,
    QUANTIZED_FILE,
    WEIGHT_LEVELS_KEY,
    OnnxBackbone,
    OnnxBackendError,
    OnnxCausalGraphError,
    quantize_per_token,
    relative_error,
    smooth_activations,
)
from tests.tiny_models import save_tiny_model

pytest.importorskip("onnxruntime")

runner = CliRunner()
DOCUMENTS = ["the cat sat on the mat", "a dog ran fast", "big red car on the road in the city", "music"]
ARCHITECTURES = ("llama", "gemma3_text")


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[LM2Vec, Path]]:
    """Per architecture: the torch encoder and its export with ONNX files."""
    result = {}
    for architecture in ARCHITECTURES:
        root = tmp_path_factory.mktemp(f"onnx-{architecture}")
        encoder = LM2Vec.from_pretrained(save_tiny_model(architecture, root / "source"), device="cpu")
        export_encoder(encoder, root / "model", onnx=True)
        result[architecture] = (encoder, root / "model")
    return result


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_onnx_vectors_match_torch(exported, architecture: str) -> None:
    encoder, folder = exported[architecture]
    assert {ONNX_FILE, QUANTIZED_FILE} <= {str(p.relative_to(folder)) for p in (folder / "onnx").iterdir()}
    inputs = [*DOCUMENTS, *[("query", text) for text in DOCUMENTS]]  # the instruction is attended, not pooled
    expected = encoder.encode(inputs)
    fp32 = LM2Vec.from_pretrained(folder, backend="onnx", onnx_file=ONNX_FILE)
    int8 = LM2Vec.from_pretrained(folder, backend="onnx")
    assert isinstance(fp32.model, OnnxBackbone) and int8.model.path.name == Path(QUANTIZED_FILE).name
    assert cosines(fp32.encode(inputs), expected).min() > 0.9999
    # Seen here: >= 0.9998 on both tiny random models (real models lose more: benchmarks/encode.py --backends).
    assert cosines(int8.encode(inputs), expected).min() > 0.95


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_int8_vector_does_not_depend_on_its_batch(exported, architecture: str) -> None:
    """int8 activations are quantized per token, so a text's vector is the same alone as beside a longer text
    (with one scale per batch tensor, quantize_dynamic's, it took the neighbour's range: seen 0.013-0.016 apart)."""
    _, folder = exported[architecture]
    int8 = LM2Vec.from_pretrained(folder, backend="onnx")
    text, neighbour = DOCUMENTS[1], " ".join(reversed(DOCUMENTS * 6))
    np.testing.assert_allclose(int8.encode([text, neighbour])[0], int8.encode(text), rtol=1e-4, atol=1e-5)


def test_an_int8_file_with_8_bit_weights_is_refused_where_its_products_would_overflow(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An int8 file from before 7-bit weights gives wrong vectors on AVX2 without VNNI (SmolLM2 on an AMD EPYC:
    mean cosine to fp32 0.03); it is refused there with what to do, and loads where the CPU adds exactly."""
    import onnx

    _, folder = exported["llama"]
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    model = onnx.load(str(old / QUANTIZED_FILE))
    assert {entry.key: entry.value for entry in model.metadata_props} == {
        WEIGHT_LEVELS_KEY: "63",
        FP32_MATMULS_KEY: "0",
    }
    model.ClearField("metadata_props")
    onnx.save(model, str(old / QUANTIZED_FILE))
    monkeypatch.setattr(onnx_module, "cpu_adds_int8_pairs_exactly", lambda: False)
    for named in (QUANTIZED_FILE, f"./{QUANTIZED_FILE}"):
        with pytest.raises(OnnxBackendError, match=r"8-bit weights .* Export it again with `lm2vec convert"):
            LM2Vec.from_pretrained(old, backend="onnx", onnx_file=named)
    assert LM2Vec.from_pretrained(folder, backend="onnx", onnx_file=QUANTIZED_FILE)  # the new file loads
    monkeypatch.setattr(onnx_module, "cpu_adds_int8_pairs_exactly", lambda: True)
    assert LM2Vec.from_pretrained(old, backend="onnx", onnx_file=QUANTIZED_FILE)


def test_per_token_quantization_arithmetic(tmp_path: Path) -> None:
    """On a graph of one MatMul and one Gather: int8 weights per output channel and each token quantized on its
    own range, 0 included, with its own zero point (an all-zero token gives zeros), so a token's output is the same
    whatever the other rows hold; the table is read as int8 rows, one scale each."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight, table = rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    table[2] *= 1000  # a large row does not take the others' resolution
    weight[:, 0] = 1.0  # with a token at its maximum everywhere: the largest products, which must not saturate
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"]), helper.make_node("Gather", ["table", "ids"], ["rows"])],
        "one_of_each",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 8]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 5]),
            helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", "sequence", 4]),
        ],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(table, "table")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), tmp_path / "fp32.onnx")
    assert quantize_per_token(tmp_path / "fp32.onnx", tmp_path / "int8.onnx") == 1
    session = onnxruntime.InferenceSession(tmp_path / "int8.onnx", providers=["CPUExecutionProvider"])
    x, ids = rng.normal(size=(2, 3, 8)).astype(np.float32), np.array([[0, 1, 2], [3, 4, 5]])
    x[0, 1], x[1, 0], x[1, 2] = 0, np.abs(x[1, 0]), x[1, 2] * 1000  # a zero token, a positive one, a wide one
    x[0, 2] = 3.0  # every value at the token's maximum: 255 each
    y, rows = session.run(None, {"x": x, "ids": ids})

    weight_scale = np.abs(weight).max(0) / np.float32(MATMUL_WEIGHT_LEVELS)
    low, high = np.minimum(x.min(-1, keepdims=True), 0), np.maximum(x.max(-1, keepdims=True), 0)
    token_scale = np.maximum((high - low) * np.float32(1 / 255), np.float32(1e-30))
    zero_point = np.round(-low / token_scale)
    token_uint8 = np.clip(np.round(x / token_scale) + zero_point, 0, 255)
    expected = ((token_uint8 - zero_point) @ np.round(weight / weight_scale)) * weight_scale * token_scale
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert not y[0, 1].any()
    x[1] *= 100
    np.testing.assert_array_equal(session.run(None, {"x": x, "ids": ids})[0][0], y[0])
    row_scale = np.abs(table).max(1, keepdims=True) / np.float32(127)
    np.testing.assert_allclose(rows, (np.round(table / row_scale) * row_scale)[ids], rtol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_int8_graph_keeps_no_fp32_weights(exported, architecture: str) -> None:
    """Every linear of every layer and the embedding table are int8 in the int8 graph: no fp32 matrix is left (the
    embedding's row scales are one column)."""
    import onnx
    from onnx import TensorProto

    encoder, folder = exported[architecture]
    graph = onnx.load(folder / QUANTIZED_FILE).graph
    matmuls = [node for node in graph.node if node.op_type == "MatMulIntegerToFloat"]
    assert len(matmuls) == 7 * encoder.model.config.num_hidden_layers  # q, k, v, o, gate, up, down
    matrices = [t for t in graph.initializer if len(t.dims) == 2 and t.dims[1] > 1]
    assert {t.data_type for t in matrices} == {TensorProto.INT8} and len(matrices) == len(matmuls) + 1


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_exported_graphs_stay_bidirectional(exported, architecture: str) -> None:
    encoder, folder = exported[architecture]
    for name in (ONNX_FILE, QUANTIZED_FILE):
        assert probe_attention(OnnxBackbone(folder / name, encoder.model.config), encoder.model.config.vocab_size)


def test_sentence_transformers_pooling_of_onnx_states_agrees(exported) -> None:
    """What sentence-transformers' ONNX backend does with the folder: its tokenizer, the graph's token states,
    its Pooling module from 1_Pooling; on plain documents it pools what LM2Vec pools."""
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling
    from transformers import AutoTokenizer

    encoder, folder = exported["llama"]
    tokens = AutoTokenizer.from_pretrained(folder)(DOCUMENTS, padding=True, return_tensors="pt")
    states = OnnxBackbone(folder / ONNX_FILE, encoder.model.config)(**tokens).last_hidden_state
    pooling = Pooling(**json.loads((folder / "1_Pooling" / "config.json").read_text()))
    pooled = pooling({"token_embeddings": states, "attention_mask": tokens["attention_mask"]})["sentence_embedding"]
    assert cosines(pooled.numpy(), encoder.encode(DOCUMENTS)).min() > 0.9999


def test_causal_export_is_kept_causal(tiny_llama: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(tiny_llama), str(tmp_path / "causal"), "--causal", "--onnx"])
    assert result.exit_code == 0, result.output
    assert QUANTIZED_FILE in result.output
    causal = LM2Vec.from_pretrained(tmp_path / "causal", backend="onnx", onnx_file=ONNX_FILE)
    assert not probe_attention(causal.model, causal.model.config.vocab_size)
    expected = LM2Vec.from_pretrained(tiny_llama, bidirectional=False, device="cpu").encode(DOCUMENTS)
    assert cosines(causal.encode(DOCUMENTS), expected).min() > 0.9999


def test_graph_that_lost_the_bidirectional_mask_is_refused(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exporter that drops the bidirectional mask (simulated: the model is causal while it is traced) gives a
    causal graph of a bidirectional encoder: refused, and no export is left behind."""
    export = torch.onnx.export

    def causal_export(graph, *args, **kwargs):
        set_bidirectional(graph.backbone, False)
        try:
            return export(graph, *args, **kwargs)
        finally:
            set_bidirectional(graph.backbone, True)

    monkeypatch.setattr(torch.onnx, "export", causal_export)
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    export_encoder(encoder, tmp_path / "library")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(OnnxCausalGraphError, match="lost the bidirectional attention mask"):
        export_encoder(encoder, tmp_path / "library", onnx=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # the earlier export, whole
    result = runner.invoke(app, ["convert", str(tiny_llama), str(tmp_path / "cli"), "--onnx"])
    last_line = result.output.strip().splitlines()[-1]  # after the loading bars
    assert result.exit_code == 2 and last_line.startswith("error: the ONNX graph exported from llama is causal")
    assert "Traceback" not in result.output and list(tmp_path.glob("cli*")) == [] == list(tmp_path.glob(".cli*"))


def test_encode_command_with_onnx_backend(exported, tmp_path: Path) -> None:
    encoder, folder = exported["llama"]
    (tmp_path / "texts.txt").write_text("\n".join(DOCUMENTS) + "\n")
    command = ["encode", "-m", str(folder), "-i", str(tmp_path / "texts.txt"), "--backend", "onnx"]
    result = runner.invoke(app, [*command, "-o", str(tmp_path / "int8.npy")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*command, "--onnx-file", ONNX_FILE, "-o", str(tmp_path / "fp32.npy")])
    assert result.exit_code == 0, result.output
    assert cosines(np.load(tmp_path / "fp32.npy"), encoder.encode(DOCUMENTS)).min() > 0.9999
    assert cosines(np.load(tmp_path / "int8.npy"), encoder.encode(DOCUMENTS)).min() > 0.95


def test_onnx_backend_errors_before_any_load(tiny_llama: Path, exported, tmp_path: Path) -> None:
    (tmp_path / "texts.txt").write_text("a text\n")
    for model, options, message in (
        (tiny_llama, ["--backend", "onnx"], f"{tiny_llama} has no {QUANTIZED_FILE}"),
        ("pkg:never-loaded", ["--backend", "onnx"], f"pkg:never-loaded has no {QUANTIZED_FILE}"),
        (exported["llama"][1], ["--backend", "onnx", "--onnx-file", "onnx/nope.onnx"], "has no onnx/nope.onnx"),
        (tiny_llama, ["--backend", "tensorflow"], "backend must be one of torch, onnx, got 'tensorflow'"),
    ):
        command = ["encode", "-m", str(model), "-i", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "out.npy")]
        result = runner.invoke(app, [*command, *options])
        assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
        assert "Traceback" not in result.output and not (tmp_path / "out.npy").exists()


def test_convert_takes_the_int8_tolerance(tiny_llama: Path, tmp_path: Path) -> None:
    """`--int8-min-cosine 0` makes every layer int8 without the check; a value outside [0, 1] is refused first."""
    import onnx

    result = runner.invoke(app, ["convert", str(tiny_llama), str(tmp_path / "out"), "--onnx", "--int8-min-cosine", "0"])
    assert result.exit_code == 0, result.output
    metadata = {prop.key: prop.value for prop in onnx.load(tmp_path / "out" / QUANTIZED_FILE).metadata_props}
    assert metadata[FP32_MATMULS_KEY] == "0"
    result = runner.invoke(
        app, ["convert", str(tiny_llama), str(tmp_path / "refused"), "--onnx", "--int8-min-cosine", "1.5"]
    )
    assert result.exit_code == 2 and "int8_min_cosine must be in [0, 1], got 1.5" in result.output
    assert not (tmp_path / "refused").exists()


def test_onnx_backend_refuses_what_the_graph_fixes(exported) -> None:
    folder = exported["llama"][1]
    with pytest.raises(OnnxBackendError, match="cannot change its adapters, device"):
        LM2Vec.from_pretrained(folder, backend="onnx", adapters=[folder], device="cuda")
    with pytest.raises(OnnxBackendError, match="cannot change its bidirectional"):
        LM2Vec.from_pretrained(folder, backend="onnx", bidirectional=False)


def test_serve_loads_the_onnx_backend(exported) -> None:
    from lm2vec.serving.app import load_service
    from lm2vec.serving.options import ServeOptions

    encoder, folder = exported["llama"]
    service = load_service(str(folder), None, ServeOptions(backend="onnx", onnx_file=ONNX_FILE))
    assert isinstance(service.encoder.model, OnnxBackbone)
    assert cosines(service.encoder.encode(DOCUMENTS), encoder.encode(DOCUMENTS)).min() > 0.9999


def planted_outliers(architecture: str, folder: Path, factor: float = 100.0, layers: int = 2) -> LM2Vec:
    """A tiny encoder whose linears see the outliers real LLMs have, planted without changing its function: channel
    0 of every norm's output (Gemma's norms scale by 1 + weight) and of every MLP's hidden activations (down_proj's
    input) `factor` times larger, the linears that read it `factor` times smaller there."""
    encoder = LM2Vec.from_pretrained(save_tiny_model(architecture, folder, num_hidden_layers=layers), device="cpu")
    offset = 1.0 if architecture.startswith("gemma") else 0.0
    with torch.no_grad():
        for layer in encoder.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            feedforward_norm = getattr(layer, "pre_feedforward_layernorm", layer.post_attention_layernorm)
            for norm, readers in (
                (layer.input_layernorm, (attention.q_proj, attention.k_proj, attention.v_proj)),
                (feedforward_norm, (mlp.gate_proj, mlp.up_proj)),
                (mlp.up_proj, (mlp.down_proj,)),
            ):
                if norm is mlp.up_proj:
                    norm.weight[0] *= factor
                else:
                    norm.weight[0] = (norm.weight[0] + offset) * factor - offset
                for reader in readers:
                    reader.weight[:, 0] /= factor
    return encoder


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_smoothing_keeps_the_token_states(architecture: str, tmp_path: Path) -> None:
    """Smoothing rescales (Gemma's norms scale by 1 + weight, Llama's by weight) without changing the function."""
    encoder = planted_outliers(architecture, tmp_path / "source")
    smoothed = copy.deepcopy(encoder.model)
    batch = dict(encoder.tokenizer(DOCUMENTS, padding=True, return_tensors="pt"))
    layers = encoder.model.config.num_hidden_layers
    assert smooth_activations(smoothed, batch) == 6 * layers  # q, k, v, gate, up (after norms) and down per layer
    norm, original = smoothed.layers[0].input_layernorm.weight, encoder.model.layers[0].input_layernorm.weight
    assert not torch.allclose(norm, original)
    with torch.no_grad():
        assert relative_error(encoder.model, smoothed, batch) < 1e-4


def test_smoothing_brings_int8_close_to_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With planted outlier channels int8 loses much without smoothing and little with it; the export's torch
    weights are the model's own, unsmoothed."""
    from safetensors.torch import load_file

    encoder = planted_outliers("llama", tmp_path / "source")
    expected = encoder.encode(DOCUMENTS)
    export_encoder(encoder, tmp_path / "smoothed", onnx=True)
    saved = load_file(tmp_path / "smoothed" / "model.safetensors")
    assert all(torch.equal(saved[name], value) for name, value in encoder.model.state_dict().items())

    def int8_loss(folder: Path) -> float:
        return float((1 - cosines(LM2Vec.from_pretrained(folder, backend="onnx").encode(DOCUMENTS), expected)).mean())

    monkeypatch.setattr(onnx_module, "smooth_activations", lambda model, batch: 0)
    export_encoder(encoder, tmp_path / "plain", onnx=True, int8_min_cosine=0)  # smoothing alone: every layer int8
    # Seen here: 1 - cosine 0.00006 smoothed, 0.094 plain.
    assert int8_loss(tmp_path / "smoothed") < int8_loss(tmp_path / "plain") / 4


def test_the_lowest_layers_stay_fp32_where_int8_text_vectors_stray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Outliers left unsmoothed put int8 far from fp32: the lowest layers' MatMuls stay fp32, as many as the search
    reaches (here the bar cannot be met: half of the 4 layers, with a warning), recorded in the file, and the vectors
    come closer to fp32 than with every layer in int8."""
    import onnx

    encoder = planted_outliers("llama", tmp_path / "source", layers=4)
    expected = encoder.encode(DOCUMENTS)
    monkeypatch.setattr(onnx_module, "smooth_activations", lambda model, batch: 0)
    with caplog.at_level(logging.WARNING, logger="lm2vec.modeling.onnx"):
        export_encoder(encoder, tmp_path / "model", onnx=True, int8_min_cosine=1.0)
    assert f"{QUANTIZED_FILE}: with every layer int8" in caplog.text
    assert "the lowest 2 of 4 layers stay fp32" in caplog.text and "still below 1.0" in caplog.text
    model = onnx.load(tmp_path / "model" / QUANTIZED_FILE)
    kinds = [node.op_type for node in model.graph.node if node.op_type in ("MatMul", "MatMulIntegerToFloat")]
    assert kinds.count("MatMulIntegerToFloat") == 7 * 2
    assert {prop.key: prop.value for prop in model.metadata_props}[FP32_MATMULS_KEY] == "14"
    assert kinds[: kinds.index("MatMulIntegerToFloat")].count("MatMul") >= 14  # the lowest layers' come first
    quantize_per_token(tmp_path / "model" / ONNX_FILE, tmp_path / "model" / "onnx" / "all-int8.onnx")

    def loss(onnx_file: str) -> float:
        vectors = LM2Vec.from_pretrained(tmp_path / "model", backend="onnx", onnx_file=onnx_file).encode(DOCUMENTS)
        return float((1 - cosines(vectors, expected)).mean())

    assert loss(QUANTIZED_FILE) < loss("onnx/all-int8.onnx")


def test_serving_workers_share_the_onnx_sessions_threads(exported) -> None:
    """An ONNX session sizes its thread pool when it opens: two serving workers open it again on half the threads
    each (two passes at once on a pool sized for one oversubscribe the cores), and the vectors stay the same."""
    from lm2vec.serving.batching import DynamicBatcher

    _, folder = exported["llama"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        int8 = LM2Vec.from_pretrained(folder, backend="onnx")
        assert int8.model.session.get_session_options().intra_op_num_threads == 4
        expected = int8.encode(DOCUMENTS, normalize=True)  # as the server answers
        batcher = DynamicBatcher(int8, batch_tokens=4096, workers=2)
        try:
            assert int8.model.session.get_session_options().intra_op_num_threads == 2
            lengths = [len(item.input_ids) for item in int8.tokenize(DOCUMENTS)]
            served = batcher.submit(DOCUMENTS, lengths).result(timeout=60)
        finally:
            batcher.close()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
