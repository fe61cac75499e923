"""Layer pruning (arXiv 2410.14578): the top decoder layers dropped, the first ones kept with their weights.

`prune_layers` is the share of the source model's decoder layers dropped from the top, rounded to the nearest whole
layer; the config then says how many are left (`num_hidden_layers` and the per-layer lists), so a pruned export
reloads with the same layers in transformers, sentence-transformers and vLLM. An adapter trained on a pruned model
records the layers it was trained on (ADAPTER_RECORD in its folder); loading it prunes the base model the same way,
and asking for more layers than an adapter was trained on is refused, before any weights load."""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lm2vec.errors import LM2VecError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

PRUNE_HELP = (
    "Share of the decoder layers dropped from the top before training or export, in [0, 1), rounded to the nearest "
    "whole layer (0.3 keeps the first 21 of 30); 0 keeps them all, or as many as the adapters were trained on."
)
ADAPTER_RECORD = "lm2vec_pruning.json"
PRUNED_FROM = "lm2vec_pruned_from_layers"  # config.json: the layer count of the model before pruning
# Config entries that hold one value per layer, list layer indices, or count layers (transformers 5 configs of the
# supported architectures); each must describe the kept layers only.
PER_LAYER_LISTS = ("layer_types", "no_rope_layers")
LAYER_INDEX_LISTS = ("mlp_only_layers",)
LAYER_COUNTS = ("max_window_layers",)


class PruneError(LM2VecError, ValueError):
    """A prune_layers value that cannot prune this model, or one that does not fit the adapters loaded with it."""


def valid_prune_fraction(fraction: object) -> bool:
    return (
        isinstance(fraction, numbers.Real)
        and not isinstance(fraction, bool)
        and math.isfinite(fraction)
        and 0 <= fraction < 1
    )


def prune_fraction_message(fraction: object) -> str:
    return f"prune_layers must be a share of the layers in [0, 1), got {fraction!r}."


def check_prune_fraction(fraction: object) -> None:
    if not valid_prune_fraction(fraction):
        raise PruneError(prune_fraction_message(fraction))


def kept_layers(total: int, fraction: float) -> int:
    """The layers left when `fraction` of `total` is dropped from the top, rounded to the nearest layer."""
    return total - math.floor(fraction * total + 0.5)


def trained_layers(adapter: str | os.PathLike) -> int | None:
    """The decoder layers of the pruned model `adapter` was trained on; None when it was trained unpruned."""
    path = Path(adapter) / ADAPTER_RECORD
    return json.loads(path.read_text())["num_hidden_layers"] if path.is_file() else None


def layers_to_keep(source: str, total: int, fraction: float, adapters: Sequence[str | os.PathLike] = ()) -> int:
    """How many of the `total` decoder layers of `source` to keep: `kept_layers(total, fraction)` when `fraction`
    is set, else as many as the most pruned adapter was trained on. Raises PruneError for a share that leaves no
    layer, an adapter trained on more layers than `source` has, or a share that keeps more layers than an adapter
    was trained on (its deltas would miss the layers above)."""
    check_prune_fraction(fraction)
    trained = {str(adapter): layers for adapter in adapters if (layers := trained_layers(adapter)) is not None}
    for adapter, layers in trained.items():
        if layers > total:
            raise PruneError(
                f"adapter {adapter} was trained on {layers} decoder layers, but {source} has {total}: load it on "
                "the model it was trained on."
            )
    if not fraction:
        return min(trained.values(), default=total)
    keep = kept_layers(total, fraction)
    if keep < 1:
        raise PruneError(f"prune_layers={fraction} would drop all {total} decoder layers of {source}.")
    for adapter, layers in trained.items():
        if layers < keep:
            raise PruneError(
                f"prune_layers={fraction} keeps {keep} of the {total} decoder layers of {source}, but adapter "
                f"{adapter} was trained on the first {layers}: prune at least as much, or leave prune_layers at 0 "
                "to follow the adapters."
            )
    return keep


def prune_model(model: PreTrainedModel, keep: int) -> None:
    """Drop the decoder layers of `model` (a backbone or a causal LM) above the first `keep`, in place, and make
    its config describe the layers left."""
    config = model.config
    total = config.num_hidden_layers
    if keep == total:
        return
    backbone = getattr(model, model.base_model_prefix, model)
    layers = getattr(backbone, "layers", None)
    if not hasattr(layers, "__delitem__") or len(layers) != total:
        raise PruneError(f"{type(model).__name__} does not keep its {total} decoder layers in `layers`.")
    del layers[keep:]
    prune_config(config, keep)


def prune_config(config: PretrainedConfig, keep: int) -> None:
    """Make `config` describe its first `keep` decoder layers only, recording how many it had."""
    setattr(config, PRUNED_FROM, getattr(config, PRUNED_FROM, None) or config.num_hidden_layers)
    config.num_hidden_layers = keep
    for name in PER_LAYER_LISTS:
        if isinstance(value := getattr(config, name, None), list):
            setattr(config, name, value[:keep])
    for name in LAYER_INDEX_LISTS:
        if isinstance(value := getattr(config, name, None), list):
            setattr(config, name, [index for index in value if index < keep])
    for name in LAYER_COUNTS:
        if isinstance(value := getattr(config, name, None), int):
            setattr(config, name, min(value, keep))


def write_adapter_record(folder: Path, config: PretrainedConfig) -> None:
    """Record in an adapter's folder the layers of the pruned model it was trained on (nothing when unpruned)."""
    if pruned_from := getattr(config, PRUNED_FROM, None):
        record = {"num_hidden_layers": config.num_hidden_layers, PRUNED_FROM: pruned_from}
        (folder / ADAPTER_RECORD).write_text(json.dumps(record, indent=2) + "\n")
