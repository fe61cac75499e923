"""README.md for an exported encoder, in the Hugging Face Hub's model-card format.

`save_pretrained` writes the basic card (what the model is, how to use it); the pipeline's report stage rewrites
it with sections of its own (`extra_sections`: the recipe, each stage's settings and wall time, the evaluation
table).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lm2vec.artifacts import write_text_atomic
from lm2vec.modeling.config import EncoderConfig
from lm2vec.modeling.matryoshka import supported_dimensions
from lm2vec.modeling.sources import packaged_model

CARD_NAME = "README.md"
TAGS = ["sentence-transformers", "sentence-similarity", "feature-extraction", "lm2vec", "llm2vec"]
HUB_CACHE_FOLDER = re.compile(r"models--([^/]+)--([^/]+)")


def base_metadata(source: str) -> dict[str, Any]:
    """base_model, license (and license_link) and language of the model `source` names, from its own card where it
    has one.

    A packaged alias (`pkg:gemma3-270m`) names the hub model its weights came from and that model's licence; a folder
    exported by lm2vec passes on its base model; a hub id (or a hub cache folder) is the base model."""
    metadata: dict[str, Any] = {}
    path = Path(source)
    if packaged := packaged_model(source):
        metadata = {"base_model": packaged.base_model, "license": packaged.license}
        if packaged.license_link:
            metadata["license_link"] = packaged.license_link
    elif path.is_dir():
        card = front_matter((path / CARD_NAME).read_text()) if (path / CARD_NAME).is_file() else {}
        metadata = {key: card[key] for key in ("license", "license_link", "language") if card.get(key)}
        if "lm2vec" in (card.get("tags") or []) and card.get("base_model"):
            metadata["base_model"] = card["base_model"]
        elif match := HUB_CACHE_FOLDER.search(path.as_posix()):
            metadata["base_model"] = f"{match[1]}/{match[2]}"
    elif not path.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        metadata["base_model"] = source
    return metadata


def front_matter(text: str) -> dict[str, Any]:
    """The YAML block between the leading `---` lines of a model card ({} when there is none)."""
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        return {}
    loaded = yaml.safe_load(text[4 : text.index("\n---\n", 3)])
    return loaded if isinstance(loaded, dict) else {}


def model_card(
    config: EncoderConfig, dimension: int, base: Mapping[str, Any], extra_sections: Sequence[str] = ()
) -> str:
    """The card's markdown: Hub front matter (`base`: base_metadata), what the encoder is and how to use it, then
    `extra_sections` (markdown, each ending in a blank line)."""
    header = {**base, "library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity", "tags": TAGS}
    base_name = base.get("base_model", "a decoder-only language model")
    attention = "bidirectional attention" if config.bidirectional else "causal attention"
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(),
        "---",
        "",
        f"# Text encoder from {base_name}",
        "",
        f"A sentence encoder made from {base_name} with the LLM2Vec recipe by lm2vec: {attention}, "
        f"{config.pooling} pooling, {dimension}-dimensional embeddings, inputs up to {config.max_length} tokens. "
        "Compare embeddings by cosine.",
        "",
        *_instruction_section(config),
        *_matryoshka_section(config, dimension),
        *_usage_section(config),
        *_licence_section(base),
        *extra_sections,
    ]
    return "\n".join(lines)


def write_model_card(folder: Path, text: str) -> None:
    write_text_atomic(folder / CARD_NAME, text)


def _instruction_section(config: EncoderConfig) -> list[str]:
    if not config.query_instruction:
        return ["Trained without an instruction: encode queries and documents as they are.", ""]
    prompt = config.instruction_template.format(instruction=config.query_instruction)
    return [
        "## Query instruction",
        "",
        f"Queries (and both sides of a similarity comparison) were trained with the instruction "
        f"`{config.query_instruction}`, written as `{prompt!r}` in front of the text; its tokens are attended to "
        "but not pooled. Documents get no instruction. sentence-transformers applies it by default "
        "(prompt `query`), `encode_document` leaves it out.",
        "",
    ]


def _matryoshka_section(config: EncoderConfig, dimension: int) -> list[str]:
    if not config.matryoshka_dims:
        return []
    sizes = ", ".join(map(str, supported_dimensions(config.matryoshka_dims, dimension)))
    return [
        "## Matryoshka dimensions",
        "",
        f"Trained with the loss also on the embeddings' prefixes, so they can be cut to {sizes} dimensions: "
        "`encoder.encode(texts, dimensions=k)` in lm2vec, `dimensions` in the served API, "
        "`SentenceTransformer(path, truncate_dim=k)` with `normalize_embeddings=True` in sentence-transformers.",
        "",
    ]


def _usage_section(config: EncoderConfig) -> list[str]:
    query = f', prompt="{config.query_instruction}"' if config.query_instruction else ""
    return [
        "## Usage",
        "",
        "sentence-transformers:",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("path/to/this/folder")',
        'queries = model.encode_query(["How do I bake bread?"])',
        'documents = model.encode_document(["Bread is baked in an oven."])',
        "print(model.similarity(queries, documents))",
        "```",
        "",
        "transformers (the attention is bidirectional from config.json, no custom code):",
        "",
        "```python",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        'model = AutoModel.from_pretrained("path/to/this/folder")',
        'batch = tokenizer(["Bread is baked in an oven."], return_tensors="pt")',
        f"hidden = model(**batch).last_hidden_state  # then {config.pooling} pooling over the text tokens",
        "```",
        "",
        "lm2vec:",
        "",
        "```python",
        "from lm2vec import LM2Vec",
        "",
        'encoder = LM2Vec.from_pretrained("path/to/this/folder")',
        f'queries = encoder.encode(["How do I bake bread?"]{query}, normalize=True)',
        'documents = encoder.encode(["Bread is baked in an oven."], normalize=True)',
        "```",
        "",
        "Serving (OpenAI-compatible `/v1/embeddings`):",
        "",
        "```bash",
        "lm2vec serve path/to/this/folder",
        "```",
        "",
    ]


def _licence_section(base: Mapping[str, Any]) -> list[str]:
    if not base.get("license"):
        return []
    origin = f"derived from {base['base_model']}" if base.get("base_model") else "derived from its base model"
    terms = f" ({base['license_link']})" if base.get("license_link") else ""
    return [
        "## Licence",
        "",
        f"These weights are {origin} and are provided under and subject to its licence, `{base['license']}`{terms}, "
        "which applies to every copy and derivative of them.",
        "",
    ]
