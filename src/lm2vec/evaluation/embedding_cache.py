"""The embedding cache: an encoder is loaded only when a text is not in it.

Embeddings are stored per (model fingerprint, texts + instruction) under `<lm2vec cache>/embeddings/`, and token
states (word-level tasks) per (model fingerprint, texts), so re-running a report encodes nothing twice. A model's
fingerprint stamps its weight files (lm2vec.modeling.fingerprint) with everything else that changes its embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lm2vec.artifacts import atomic_file, write_text_atomic
from lm2vec.cache import cache_dir
from lm2vec.evaluation.encoders import TextEncoder, load_encoder
from lm2vec.evaluation.errors import EvalConfigError
from lm2vec.evaluation.specs import ModelSpec, reference_folder

logger = logging.getLogger(__name__)


def spec_fingerprint(spec: ModelSpec) -> str:
    """A hash of everything that changes the embeddings: weights (path, size, mtime), adapters and their merge,
    pooling, attention, and for the onnx backend its graph file (with its external data): int8 is another model."""
    from lm2vec.modeling.fingerprint import adapters_stamp, weights_stamp  # here: lm2vec.modeling imports torch

    source = spec.source
    if source.startswith("ref:"):
        stamp: list = ["ref", source, weights_stamp(reference_folder(source[4:]))]
        effective = {}
    elif source.startswith("st:"):
        stamp = ["st", weights_stamp(Path(source[3:]))]
        effective = {}
    else:
        from lm2vec.modeling.config import PLAIN_TEMPLATE, EncoderConfig
        from lm2vec.modeling.sources import resolve_source

        folder = resolve_source(source)
        saved = EncoderConfig.from_folder(folder) if Path(folder).is_dir() else None
        base = saved or EncoderConfig()
        template = EncoderConfig(text_template=spec.template).text_template if spec.template else base.text_template
        local = Path(source).exists()  # a folder is the same model by its relative or absolute path
        stamp = ["lm2vec", str(Path(source).resolve()) if local else source, weights_stamp(Path(folder))]
        effective = {
            "pooling": spec.pooling or base.pooling,
            "bidirectional": base.bidirectional if spec.bidirectional is None else spec.bidirectional,
            "max_length": spec.max_length or base.max_length,
            "template": base.instruction_template,
        }
        if template != PLAIN_TEMPLATE:  # kept out of the plain models' stamp, so their cached embeddings stay valid
            effective["text_template"] = template
        if spec.backend != "torch":  # likewise kept out of the torch models' stamp
            graph = Path(folder) / spec.onnx_file
            graph_files = sorted(graph.parent.glob(graph.name + "*"))  # model.onnx and model.onnx.data
            effective["backend"] = [spec.backend, spec.onnx_file, [weights_stamp(file) for file in graph_files]]
    stamp += [adapters_stamp(spec.adapters, spec.adapter_weights, spec.merge_method, spec.merge_density), effective]
    return hashlib.sha256(json.dumps(stamp, sort_keys=True, default=str).encode()).hexdigest()[:24]


def texts_key(texts: list[str], instruction: str | None) -> str:
    digest = hashlib.sha256(json.dumps([instruction, texts], ensure_ascii=False).encode())
    return digest.hexdigest()[:32]


def default_cache_root() -> Path:
    return cache_dir() / "embeddings"


@dataclass
class CachedEncoder:
    """Wraps a spec: loads the model on the first cache miss; duplicate texts in a call are encoded once.

    Set `cache_root=None` for an in-memory cache only. `model` may be given already loaded."""

    spec: ModelSpec
    cache_root: Path | None = field(default_factory=default_cache_root)
    batch_size: int = 32
    device: str | None = None
    model: TextEncoder | None = None
    fingerprint: str = ""
    hits: int = 0
    misses: int = 0
    encoded_texts: int = 0
    _memory: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = spec_fingerprint(self.spec)

    @property
    def name(self) -> str:
        return self.spec.name

    def _path(self, key: str, suffix: str = ".npy") -> Path | None:
        return None if self.cache_root is None else Path(self.cache_root) / self.fingerprint / f"{key}{suffix}"

    def _model(self) -> TextEncoder:
        """The encoder, loaded on the first cache miss."""
        self.misses += 1
        if self.model is None:
            logger.info("loading %s", self.spec.describe())
            self.model = load_encoder(self.spec, self.batch_size, self.device)
        return self.model

    def _store(self, path: Path | None, write: Callable[[BinaryIO], None]) -> None:
        """Write a cache file atomically (np.save would add .npy to a temporary name), the spec beside it."""
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as temporary, temporary.open("wb") as file:
            write(file)
        spec_file = path.parent / "spec.json"
        if not spec_file.exists():
            write_text_atomic(spec_file, json.dumps({"spec": self.spec.describe()}) + "\n")

    def embed_tokens(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each text's (token offsets, token states), as `TokenEncoder.embed_tokens`; stored as one .npz."""
        texts = list(texts)
        key = "tokens-" + texts_key(texts, None)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        path = self._path(key, ".npz")
        if path is not None and path.is_file():
            with np.load(path) as stored:
                bounds = np.cumsum(stored["lengths"])[:-1]
                pairs = list(zip(np.split(stored["offsets"], bounds), np.split(stored["states"], bounds), strict=True))
            if len(pairs) == len(texts):
                self.hits += 1
                self._memory[key] = pairs
                return pairs
        model = self._model()
        if not hasattr(model, "embed_tokens"):
            raise EvalConfigError(f"{self.name}: this encoder gives no token states for word-level tasks")
        pairs = model.embed_tokens(texts)
        self.encoded_texts += len(texts)
        self._store(
            path,
            lambda file: np.savez(
                file,
                lengths=np.asarray([len(offsets) for offsets, _ in pairs], dtype=np.int64),
                offsets=np.concatenate([offsets for offsets, _ in pairs]).reshape(-1, 2),
                states=np.concatenate([states for _, states in pairs]),
            ),
        )
        self._memory[key] = pairs
        return pairs

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        texts = list(texts)
        if self.spec.source.startswith(("ref:", "st:")):
            instruction = None  # sentence-transformers encoders ignore instructions: one cache entry per text set
        key = texts_key(texts, instruction)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        path = self._path(key)
        if path is not None and path.is_file():
            embeddings = np.load(path)
            if embeddings.shape[0] == len(texts):
                self.hits += 1
                self._memory[key] = embeddings
                return embeddings
        model = self._model()
        unique = list(dict.fromkeys(texts))
        self.encoded_texts += len(unique)
        unique_embeddings = model.embed(unique, instruction) if unique else np.zeros((0, 1), np.float32)
        position = {text: i for i, text in enumerate(unique)}
        embeddings = np.ascontiguousarray(unique_embeddings[[position[t] for t in texts]], dtype=np.float32)
        self._store(path, lambda file: np.save(file, embeddings))
        self._memory[key] = embeddings
        return embeddings
