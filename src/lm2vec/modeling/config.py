"""EncoderConfig: how an encoder turns text into a vector, saved beside its weights as lm2vec_config.json."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lm2vec.modeling.pooling import check_pooling_mode

CONFIG_NAME = "lm2vec_config.json"
PLAIN_TEMPLATE = "{text}"
# Zero-training ways to read a causal LLM (named presets of `EncoderConfig.text_template`): echo embeddings
# (arXiv 2402.15449) repeat the text so that every pooled token of the second copy has seen the whole text;
# PromptEOL (arXiv 2307.16645) asks for the text's meaning in one word and pools the prompt's last token.
TEXT_TEMPLATES = {"echo": "{text} {text}", "prompteol": 'This sentence : "{text}" means in one word:"'}


@dataclass
class EncoderConfig:
    """How text becomes a vector; saved next to the weights as lm2vec_config.json."""

    pooling: str = field(default="mean", metadata={"help": "mean, weighted_mean, last_token or first_token"})
    max_length: int = field(default=512, metadata={"help": "longest input in tokens; longer texts are truncated"})
    instruction_template: str = field(
        default="{instruction}: ",
        metadata={
            "help": (
                "An (instruction, text) input is encoded as template.format(instruction=...) + text; the "
                "instruction's tokens are attended to but never pooled."
            )
        },
    )
    bidirectional: bool = field(
        default=True,
        metadata={"help": "bidirectional attention (LLM2Vec); false keeps the model causal"},
    )
    query_instruction: str = field(
        default="",
        metadata={
            "help": (
                "The instruction the training queries carried; retrieval puts it on queries by default (never on "
                "documents)."
            )
        },
    )
    text_template: str = field(
        default=PLAIN_TEMPLATE,
        metadata={
            "help": (
                'How the text sits in the model\'s input: "{text}", a preset of TEXT_TEMPLATES, or a template with '
                'one or more "{text}"; pooling covers the last copy of the text and whatever follows it.'
            )
        },
    )
    matryoshka_dims: list[int] = field(
        default_factory=list,
        metadata={
            "help": "Prefix sizes the contrastive loss was also computed at: `encode(dimensions=k)` accepts these."
        },
    )

    def __post_init__(self) -> None:
        check_pooling_mode(self.pooling)
        self.text_template = TEXT_TEMPLATES.get(self.text_template, self.text_template)
        if "{text}" not in self.text_template:
            raise ValueError(
                f"text_template must contain '{{text}}' or be one of {', '.join(TEXT_TEMPLATES)}, "
                f"got {self.text_template!r}."
            )
        if any(d < 1 for d in self.matryoshka_dims):
            raise ValueError(f"matryoshka_dims must be positive, got {self.matryoshka_dims}.")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}.")
        if "{instruction}" not in self.instruction_template:
            raise ValueError("instruction_template must contain '{instruction}'.")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> EncoderConfig | None:
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})

    def save(self, folder: Path) -> None:
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")
