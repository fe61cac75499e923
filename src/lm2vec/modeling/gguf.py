"""GGUF files for llama.cpp and Ollama, made from an exported encoder folder (`lm2vec convert SOURCE OUT --gguf`).

llama.cpp's own converter (`convert_hf_to_gguf.py` of a llama.cpp checkout) writes the file, then lm2vec sets the
encoder's metadata in it: one path, because the converter already knows every architecture's tensor layout,
hyper-parameters and tokenizer pre-type, which a writer of our own would have to copy and keep in step.

What llama.cpp does with that metadata (read in the llama.cpp that llama-cpp-python 0.3.36 vendors): load_hparams
in src/llama-model.cpp reads `<arch>.attention.causal` and `<arch>.pooling_type` for every architecture; when
causal is false the attention masks (src/llama-kv-cache.cpp set_input_kq_mask, src/llama-graph.cpp for models
without a KV cache) let every token see every other in every attention layer, and build_pooling
(src/llama-graph.cpp) pools the final norm's output over all of the input's tokens: mean, cls (the first token) or
last; there is no weighted mean, and no way to leave an instruction out. Only layers that are not attention stay
causal (Mamba, RWKV, LFM2's convolutions; Gemma-4's dense layers), and none of those is an lm2vec architecture.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf

from lm2vec.artifacts import remove_leftovers, temporary_sibling
from lm2vec.errors import LM2VecError

GGUF_TYPES = ("f16", "q8_0")
GGUF_FOLDER = "gguf"
CONVERTER = "convert_hf_to_gguf.py"
# lm2vec's pooling -> llama.cpp's (first_token is its cls: the input's first token).
POOLING_TYPES = {
    "mean": gguf.PoolingType.MEAN,
    "first_token": gguf.PoolingType.CLS,
    "last_token": gguf.PoolingType.LAST,
}
# The class llama.cpp's converter is told each architecture is (config.json's `architectures`; its registry is
# conversion/__init__.py). It takes the backbones of BACKBONE_CLASSES as lm2vec exports them; the others are shown to
# it as their causal LM's checkpoint, the tensors under `model.`. Gemma-3 goes as EmbeddingGemma's class, which the
# converter writes as `gemma-embedding`: no KV cache and a symmetric sliding window, as transformers' bidirectional
# Gemma-3 has. helium and ministral are missing because the converter has no class for them.
BACKBONE_CLASSES = {
    "llama": "LlamaModel",
    "qwen2": "Qwen2Model",
    "qwen3": "Qwen3Model",
    "gemma3_text": "Gemma3TextModel",
}
CAUSAL_LM_CLASSES = {
    "mistral": "MistralForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "phi": "PhiForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "stablelm": "StableLmForCausalLM",
    "smollm3": "SmolLM3ForCausalLM",
    "olmo": "OlmoForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "olmo3": "Olmo3ForCausalLM",
    "granite": "GraniteForCausalLM",
    "cohere": "CohereForCausalLM",
    "cohere2": "Cohere2ForCausalLM",
    "starcoder2": "Starcoder2ForCausalLM",
    "glm": "GlmForCausalLM",
    "exaone4": "Exaone4ForCausalLM",
    "arcee": "ArceeForCausalLM",
}


class GGUFExportError(LM2VecError, ValueError):
    """An encoder that cannot be written as a GGUF llama.cpp runs as lm2vec does, or a converter that failed."""


def gguf_file_name(gguf_type: str) -> str:
    return f"{GGUF_FOLDER}/model-{gguf_type}.gguf"


def check_gguf_type(gguf_type: str) -> None:
    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"--gguf-type {gguf_type!r}: choose one of {', '.join(GGUF_TYPES)}.")


def check_gguf_pooling(pooling: str) -> gguf.PoolingType:
    """llama.cpp's pooling type for lm2vec's `pooling`; GGUFExportError for a pooling llama.cpp does not have."""
    if pooling not in POOLING_TYPES:
        raise GGUFExportError(
            f"pooling {pooling!r} cannot be exported to GGUF: llama.cpp pools by {', '.join(POOLING_TYPES)} only."
        )
    return POOLING_TYPES[pooling]


def check_gguf_architecture(model_type: str) -> str:
    """The class llama.cpp's converter is given for `model_type`; GGUFExportError for an architecture it cannot
    convert, whose GGUF llama.cpp could therefore not run as a bidirectional encoder."""
    converter_class = BACKBONE_CLASSES.get(model_type) or CAUSAL_LM_CLASSES.get(model_type)
    if converter_class is None:
        supported = sorted(BACKBONE_CLASSES.keys() | CAUSAL_LM_CLASSES.keys())
        raise GGUFExportError(
            f"architecture {model_type!r} cannot be exported to GGUF: llama.cpp's converter has no bidirectional "
            f"path for it, and a causal GGUF would give other vectors. Architectures with one: {', '.join(supported)}."
        )
    return converter_class


def find_converter(llama_cpp: str | os.PathLike | None) -> Path:
    """llama.cpp's converter script in the folder `llama_cpp` (a llama.cpp checkout, or vendor/llama.cpp of the
    llama-cpp-python sdist), with the Python packages it needs here; GGUFExportError otherwise."""
    if llama_cpp is None:
        raise GGUFExportError(
            f"--gguf needs llama.cpp's converter: pass --llama-cpp DIR (or set LLAMA_CPP_DIR), a llama.cpp checkout "
            f"holding {CONVERTER}."
        )
    converter = Path(llama_cpp) / CONVERTER
    if not converter.is_file():
        raise GGUFExportError(f"--llama-cpp {llama_cpp}: no {CONVERTER} there; name a llama.cpp checkout.")
    if importlib.util.find_spec("sentencepiece") is None:  # the converter reads Llama vocabularies with it
        raise GGUFExportError("llama.cpp's converter needs sentencepiece: pip install 'lm2vec[gguf]'.")
    return converter


def write_gguf(folder: str | os.PathLike, converter: Path, gguf_type: str = "f16") -> Path:
    """Convert the exported encoder `folder` into `folder/gguf/model-{gguf_type}.gguf` with llama.cpp's `converter`,
    with `<arch>.attention.causal` as the encoder's attention, `<arch>.pooling_type` as its pooling and, for
    last-token pooling, the EOS the encoder appends. Written in a temporary sibling and renamed into place."""
    folder = Path(folder)
    check_gguf_type(gguf_type)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    pooling = json.loads((folder / "lm2vec_config.json").read_text(encoding="utf-8"))["pooling"]
    pooling_type = check_gguf_pooling(pooling)
    converter_class = check_gguf_architecture(config["model_type"])
    target = folder / gguf_file_name(gguf_type)
    target.parent.mkdir(exist_ok=True)
    remove_leftovers(target)
    work = temporary_sibling(target)
    work.mkdir()
    try:
        source = folder if config.get("architectures") == [converter_class] else _converter_input(folder, work, config)
        converted = work / "converted.gguf"
        _run_converter(converter, source, converted, gguf_type)
        final = work / target.name
        set_encoder_metadata(converted, final, causal=config.get("is_causal") is not False, pooling_type=pooling_type)
        os.replace(final, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _converter_input(folder: Path, work: Path, config: dict) -> Path:
    """A copy of the export as the converter reads a causal LM checkpoint: its class in config.json, every tensor
    under `model.`; the other files are linked."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = work / "input"
    source.mkdir()
    for path in folder.iterdir():
        if (
            path.is_file()
            and path.suffix != ".safetensors"
            and path.name not in ("config.json", "model.safetensors.index.json")
        ):
            os.symlink(path.resolve(), source / path.name)
    config = {**config, "architectures": [CAUSAL_LM_CLASSES[config["model_type"]]]}
    (source / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for shard in folder.glob("*.safetensors"):
        with safe_open(shard, framework="pt") as tensors:
            save_file({f"model.{name}": tensors.get_tensor(name) for name in tensors.keys()}, source / shard.name)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        record = json.loads(index.read_text(encoding="utf-8"))
        record["weight_map"] = {f"model.{name}": shard for name, shard in record["weight_map"].items()}
        (source / index.name).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return source


def _run_converter(converter: Path, source: Path, output: Path, gguf_type: str) -> None:
    command = [sys.executable, str(converter), str(source), "--outfile", str(output), "--outtype", gguf_type]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not output.is_file():
        last_lines = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise GGUFExportError(f"llama.cpp's converter ({converter}) failed:\n{last_lines}")


def set_encoder_metadata(source: Path, target: Path, *, causal: bool, pooling_type: gguf.PoolingType) -> None:
    """Copy the GGUF `source` to `target` with the encoder's attention and pooling in its metadata."""
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(source)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    metadata = {
        gguf.Keys.Attention.CAUSAL.format(arch=arch): MetadataDetails(gguf.GGUFValueType.BOOL, causal),
        gguf.Keys.LLM.POOLING_TYPE.format(arch=arch): MetadataDetails(gguf.GGUFValueType.UINT32, int(pooling_type)),
    }
    if pooling_type == POOLING_TYPES["last_token"]:
        metadata[gguf.Keys.Tokenizer.ADD_EOS] = MetadataDetails(gguf.GGUFValueType.BOOL, True)
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    copy_with_new_metadata(reader, writer, metadata, remove_metadata=[])


def llama_cpp_embedder(path: str | os.PathLike, **options):
    """llama-cpp-python's `Llama(path, embedding=True, **options)` with the weights in plain CPU buffers, as
    llama.cpp's `--no-repack` keeps them: on a CPU that reports AMX, llama.cpp repacks q8_0 weights for its AMX
    backend, whose `llama_decode` crashed (SIGSEGV) on an AMX Xeon. `Llama` takes no option for it: its model
    parameters start from `llama_model_default_params`, replaced here while it loads."""
    from unittest import mock

    import llama_cpp

    default_params = llama_cpp.llama_cpp.llama_model_default_params

    def plain_buffers():
        params = default_params()
        params.use_extra_bufts = False
        return params

    with mock.patch.object(llama_cpp.llama_cpp, "llama_model_default_params", plain_buffers):
        return llama_cpp.Llama(str(path), embedding=True, **options)


__all__ = [
    "GGUF_TYPES",
    "GGUFExportError",
    "check_gguf_architecture",
    "check_gguf_pooling",
    "check_gguf_type",
    "find_converter",
    "gguf_file_name",
    "llama_cpp_embedder",
    "set_encoder_metadata",
    "write_gguf",
]
