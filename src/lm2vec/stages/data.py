"""`[data]`: each of `inputs` built into RUN/data/NN-name/, an lm2vec.data corpus; training reads them as one. A
dump's corpus also holds its weak supervised pairs (pairs/*.jsonl), which `[supervised] data = "${data}"` reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lm2vec.stages import RunContext, RunPlan, Stage, register_stage


class DataStage(Stage):
    name = section = "data"
    help = "Build the recipe's inputs (dumps, .txt/.jsonl files, hf:NAME) into corpora under RUN/data."

    def build_options(self, plan: RunPlan, section: dict[str, Any]) -> list[tuple]:
        """[(input path or hf: name, corpus folder name, WikiConfig or TextConfig)] for the data section."""
        from lm2vec.data import TextConfig, WikiConfig
        from lm2vec.data.packaged import check_pins_used, debian_pins, expand_path
        from lm2vec.recipe import RecipeError, build_config

        inputs = section.get("inputs")
        if isinstance(inputs, str):
            inputs = [part.strip() for part in inputs.split(",") if part.strip()]
        if not inputs:
            raise RecipeError("[data] needs `inputs`: dumps (.xml, .xml.bz2, .xml.gz), .txt/.jsonl files or hf:NAME.")
        known = {f.name for f in dataclasses.fields(WikiConfig)} | {f.name for f in dataclasses.fields(TextConfig)}
        if unknown := sorted(set(section) - known - {"inputs", "pins"}):
            raise RecipeError(
                f"[data] has no option {', '.join(unknown)}; options: inputs, pins, {', '.join(sorted(known))}."
            )
        pins = debian_pins(section.get("pins", {}))
        result = []
        for number, spec in enumerate(inputs):
            spec = str(spec)
            is_hub = spec.startswith("hf:")
            source = spec[3:] if is_hub else str(expand_path(spec, plan.recipe_path.parent, pins))
            config_class = WikiConfig if not is_hub and ".xml" in Path(source).name else TextConfig
            names = {f.name for f in dataclasses.fields(config_class)}
            values = {k: v for k, v in section.items() if k in names}
            if values.get("holdout_file"):
                values["holdout_file"] = str(expand_path(str(values["holdout_file"]), plan.recipe_path.parent, pins))
            config = build_config(config_class, "data", {"data": values}, [])
            stem = Path(source).name.split(".")[0] if not is_hub else source.replace("/", "-")
            result.append((source, f"{number:02d}-{stem}", config))
        check_pins_used(pins, [Path(source) for source, _, _ in result])
        return result

    def input_paths(self, plan: RunPlan) -> list[tuple[str, str, str]]:
        built = plan.options.get("data", ())
        holdout_files = {config.holdout_file for _, _, config in built if getattr(config, "holdout_file", "")}
        return [("[data] inputs", source, "file") for source, _, _ in built] + [
            ("[data] holdout_file", path, "file") for path in sorted(holdout_files)
        ]

    def outputs(self, plan: RunPlan) -> list[str]:
        return [f"data/{name}" for _, name, _ in plan.options["data"]]

    def needs(self, plan: RunPlan) -> list[str]:
        return []

    def run(self, context: RunContext) -> dict[str, Any]:
        from lm2vec.data import build_text_corpus, build_wiki_corpus
        from lm2vec.data.config import WikiConfig
        from lm2vec.data.shards import MANIFEST_NAME, Manifest

        summary: dict[str, int] = {"articles": 0, "paragraphs": 0, "sentences": 0, "pairs": 0}
        for source, name, config in context.plan.options["data"]:
            out = context.dir / "data" / name
            manifest = Manifest.read(out) if (out / MANIFEST_NAME).is_file() else None
            if manifest is None or manifest.status != "complete":
                context.echo(f"  {source} -> {out}")
                build = build_wiki_corpus if isinstance(config, WikiConfig) else build_text_corpus
                mode = {"resume": True} if manifest is not None else {"overwrite": True}
                manifest = build(source, config, out, **mode)
            counts = manifest.counts
            summary["articles"] += counts.articles_kept
            summary["paragraphs"] += counts.paragraphs
            summary["sentences"] += counts.sentences
            summary["pairs"] += sum(counts.pairs.values())
        return summary


register_stage(DataStage())
