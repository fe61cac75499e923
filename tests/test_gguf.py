"""GGUF export (`lm2vec convert --gguf`, lm2vec.modeling.gguf) on tiny random models.

By default llama.cpp's converter is stood in for by a script that writes what it was given (the class, the tensors
and the weight type) as a GGUF the way the real one does, so what lm2vec owns is tested everywhere: the refusals
before any work, the converter's input, the metadata it sets, the atomic write. With LLAMA_CPP_DIR (a llama.cpp
checkout) the real converter runs too, and with LM2VEC_LLAMA_CPP_TESTS=1 and llama-cpp-python installed llama.cpp
embeds with the file and must agree with LM2Vec.encode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from lm2vec import LM2Vec
from lm2vec.cli import app
from lm2vec.modeling.export import export_encoder
from lm2vec.modeling.gguf import GGUFExportError, find_converter, gguf_file_name, write_gguf
from tests.tiny_models import save_tiny_model

runner = CliRunner()
LLAMA_CPP_DIR = os.environ.get("LLAMA_CPP_DIR")
STAND_IN = '''
    """Stands in for llama.cpp's convert_hf_to_gguf.py: a GGUF of the input's tensors, as the converter names its
    architecture, with `test.*` keys saying what it was given."""
    import json, sys
    from pathlib import Path

    import gguf
    from safetensors.numpy import load_file

    source, output, outtype = Path(sys.argv[1]), sys.argv[3], sys.argv[5]
    config = json.loads((source / "config.json").read_text())
    arch = "gemma-embedding" if config["architectures"] == ["Gemma3TextModel"] else "llama"
    writer = gguf.GGUFWriter(output, arch=arch)
    writer.add_string("test.architectures", config["architectures"][0])
    writer.add_string("test.outtype", outtype)
    writer.add_pooling_type(gguf.PoolingType.NONE)  # lm2vec must replace it
    for shard in sorted(source.glob("*.safetensors")):
        for name, tensor in load_file(shard).items():
            writer.add_tensor(name, tensor.astype("float16"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
'''


def stand_in_converter(folder: Path, body: str = STAND_IN) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "convert_hf_to_gguf.py").write_text(textwrap.dedent(body))
    return folder


@pytest.fixture(scope="module")
def llama_cpp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stand_in_converter(tmp_path_factory.mktemp("llama.cpp"))


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[LM2Vec, Path]]:
    """Per architecture: the encoder and its export (tiny random weights)."""
    result = {}
    for architecture, pooling in (("llama", "mean"), ("gemma3_text", "last_token"), ("mistral", "first_token")):
        root = tmp_path_factory.mktemp(f"gguf-{architecture}")
        encoder = LM2Vec.from_pretrained(save_tiny_model(architecture, root / "source"), pooling=pooling, device="cpu")
        export_encoder(encoder, root / "model")
        result[architecture] = (encoder, root / "model")
    return result


def metadata(path: Path) -> dict[str, object]:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


@pytest.mark.parametrize(
    ("architecture", "converter_class", "prefix", "pooling_type"),
    [
        ("llama", "LlamaModel", "", gguf.PoolingType.MEAN),  # the converter takes Llama's backbone as exported
        ("gemma3_text", "Gemma3TextModel", "", gguf.PoolingType.LAST),  # written as EmbeddingGemma
        ("mistral", "MistralForCausalLM", "model.", gguf.PoolingType.CLS),  # shown as the causal LM's checkpoint
    ],
)
def test_gguf_metadata_and_tensors(exports, llama_cpp, architecture, converter_class, prefix, pooling_type) -> None:
    encoder, folder = exports[architecture]
    path = write_gguf(folder, llama_cpp / "convert_hf_to_gguf.py", "q8_0")
    assert path == folder / gguf_file_name("q8_0")
    values = metadata(path)
    arch = values["general.architecture"]
    assert values[f"{arch}.attention.causal"] is False
    assert values[f"{arch}.pooling_type"] == pooling_type
    assert values.get("tokenizer.ggml.add_eos_token") is (True if pooling_type == gguf.PoolingType.LAST else None)
    assert (values["test.architectures"], values["test.outtype"]) == (converter_class, "q8_0")
    tensors = {tensor.name: tuple(tensor.data.shape) for tensor in gguf.GGUFReader(path).tensors}
    expected = {prefix + name: tuple(value.shape) for name, value in encoder.model.state_dict().items()}
    assert tensors == expected
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # nothing of the work left beside it


def test_causal_encoder_stays_causal(tmp_path: Path, tiny_llama: Path, llama_cpp: Path) -> None:
    export_encoder(LM2Vec.from_pretrained(tiny_llama, bidirectional=False, device="cpu"), tmp_path / "model")
    values = metadata(write_gguf(tmp_path / "model", llama_cpp / "convert_hf_to_gguf.py"))
    assert values["llama.attention.causal"] is True


def test_failing_converter_leaves_nothing(tmp_path: Path, exports) -> None:
    _, folder = exports["llama"]
    broken = stand_in_converter(tmp_path / "broken", "import sys\nsys.exit('ValueError: Can not map tensor')\n")
    with pytest.raises(GGUFExportError, match="Can not map tensor"):
        write_gguf(folder, broken / "convert_hf_to_gguf.py", "f16")
    assert not (folder / gguf_file_name("f16")).exists()
    assert [p.name for p in (folder / "gguf").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--gguf-type", "q4_0"], "--gguf-type 'q4_0': choose one of f16, q8_0"),
        (["--pooling", "weighted_mean"], "pooling 'weighted_mean' cannot be exported to GGUF"),
        (["--llama-cpp", "{missing}"], "no convert_hf_to_gguf.py there"),
        (["--llama-cpp", ""], "--gguf needs llama.cpp's converter"),
    ],
)
def test_cli_refuses_before_loading(tmp_path, tiny_llama, llama_cpp, monkeypatch, options, message) -> None:
    monkeypatch.setattr("lm2vec.cli._load", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    arguments = ["convert", str(tiny_llama), str(tmp_path / "out"), "--gguf", "--llama-cpp", str(llama_cpp)]
    options = [option.format(missing=tmp_path / "nothing") for option in options]
    if options == ["--llama-cpp", ""]:
        arguments, options = arguments[:-2], []
    result = runner.invoke(app, arguments + options)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("architecture", ["helium", "ministral"])
def test_architecture_without_converter_is_refused_before_loading(
    tmp_path: Path, llama_cpp: Path, monkeypatch, architecture: str
) -> None:
    source = save_tiny_model(architecture, tmp_path / "source")
    monkeypatch.setattr("lm2vec.cli._load", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    result = runner.invoke(
        app, ["convert", str(source), str(tmp_path / "out"), "--gguf", "--llama-cpp", str(llama_cpp)]
    )
    assert result.exit_code == 2
    assert f"error: architecture '{architecture}' cannot be exported to GGUF" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_writes_gguf(tmp_path: Path, tiny_llama: Path, llama_cpp: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLAMA_CPP_DIR", str(llama_cpp))
    result = runner.invoke(app, ["convert", str(tiny_llama), str(tmp_path / "out"), "--gguf"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("pooling=mean, gguf/model-f16.gguf)")
    assert metadata(tmp_path / "out" / gguf_file_name("f16"))["test.outtype"] == "f16"
    both = ["--gguf-type", "f16", "--gguf-type", "q8_0"]  # one export, both files
    result = runner.invoke(app, ["convert", str(tiny_llama), str(tmp_path / "out"), *both])
    assert result.exit_code == 0, result.output
    for gguf_type in ("f16", "q8_0"):
        assert metadata(tmp_path / "out" / gguf_file_name(gguf_type))["test.outtype"] == gguf_type
    LM2Vec.from_pretrained(tmp_path / "out")  # the folder is still an encoder folder


def smollm2_vocabulary_model(folder: Path) -> Path:
    """Tiny random Llama weights with SmolLM2's real tokenizer, which llama.cpp's converter recognises."""
    from transformers import AutoTokenizer

    from lm2vec.modeling.sources import packaged_model

    located = packaged_model("pkg:smollm2").gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(located.parent, gguf_file=located.name)
    save_tiny_model("llama", folder, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=2)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def real_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[LM2Vec, Path]:
    if not LLAMA_CPP_DIR:
        pytest.skip("LLAMA_CPP_DIR (a llama.cpp checkout) is not set")
    find_converter(LLAMA_CPP_DIR)
    root = tmp_path_factory.mktemp("gguf-real")
    encoder = LM2Vec.from_pretrained(smollm2_vocabulary_model(root / "source"), device="cpu")
    export_encoder(encoder, root / "model")
    for gguf_type in ("f16", "q8_0"):
        write_gguf(root / "model", Path(LLAMA_CPP_DIR) / "convert_hf_to_gguf.py", gguf_type)
    return encoder, root / "model"


def test_real_converter(real_export) -> None:
    encoder, folder = real_export
    values = metadata(folder / gguf_file_name("f16"))
    assert (values["general.architecture"], values["llama.attention.causal"]) == ("llama", False)
    assert values["llama.pooling_type"] == gguf.PoolingType.MEAN
    assert values["tokenizer.ggml.pre"] == "smollm"
    tensors = gguf.GGUFReader(folder / gguf_file_name("q8_0")).tensors
    assert len(tensors) == len(encoder.model.state_dict())
    assert {tensor.tensor_type for tensor in tensors if tensor.name.endswith("attn_q.weight")} == {
        gguf.GGMLQuantizationType.Q8_0
    }


SENTENCES = ["A man is playing a guitar.", "The weather is cold today.", "Bread is baked in an oven.", "Dogs run."]
# llama.cpp runs in a child process: its OpenMP threads and torch's in one process crash llama_decode.
EMBED = """
import json, sys
import llama_cpp
from lm2vec.modeling.gguf import llama_cpp_embedder
path, causal, texts = sys.argv[1], sys.argv[2] == "causal", json.loads(sys.argv[3])
model = llama_cpp_embedder(path, n_ctx=512, n_batch=512, n_ubatch=512, verbose=False)
if causal:
    llama_cpp.llama_set_causal_attn(model._ctx.ctx, True)
print(json.dumps(model.embed(texts, normalize=True)))
"""


def llama_cpp_vectors(path: Path, causal: bool = False) -> np.ndarray:
    done = subprocess.run(
        [sys.executable, "-c", EMBED, str(path), "causal" if causal else "bidirectional", json.dumps(SENTENCES)],
        capture_output=True,
        text=True,
        check=True,
    )
    return np.array(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(os.environ.get("LM2VEC_LLAMA_CPP_TESTS") != "1", reason="LM2VEC_LLAMA_CPP_TESTS=1 runs llama.cpp")
@pytest.mark.parametrize(("gguf_type", "least"), [("f16", 0.99), ("q8_0", 0.98)])
def test_llama_cpp_embeds_as_lm2vec(real_export, gguf_type: str, least: float) -> None:
    pytest.importorskip("llama_cpp")
    encoder, folder = real_export
    ours = encoder.encode(SENTENCES, normalize=True)
    path = folder / gguf_file_name(gguf_type)
    assert np.min(np.sum(llama_cpp_vectors(path) * ours, axis=1)) >= least
    # The same file run causally gives other vectors: the agreement above comes from the metadata.
    assert np.min(np.sum(llama_cpp_vectors(path, causal=True) * ours, axis=1)) < least
