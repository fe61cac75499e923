"""LM2Vec: a decoder-only LLM used as a bidirectional text encoder.

One object holds the backbone (an `AutoModel`, no LM head), its tokenizer and an `EncoderConfig`. `tokenize`
and `collate` turn inputs into batches, `forward` turns a batch into embeddings; `encode` runs them over a list
of inputs and training uses the very same `tokenize`/`collate`/`forward`, so pooling cannot drift between the two.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lm2vec.artifacts import atomic_folder
from lm2vec.errors import LM2VecError
from lm2vec.modeling.bidirectional import (
    SUPPORTED_ARCHITECTURES,
    default_attn_implementation,
    set_bidirectional,
    verify_bidirectional,
)
from lm2vec.modeling.card import base_metadata, model_card, write_model_card
from lm2vec.modeling.matryoshka import check_dimensions, truncate
from lm2vec.modeling.pooling import SENTENCE_TRANSFORMERS_MODES, check_pooling_mode, pool
from lm2vec.modeling.sources import resolve_source

logger = logging.getLogger(__name__)

EncoderInput = str | tuple[str, str]
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


@dataclass
class TokenizedInput:
    input_ids: list[int]
    instruction_length: int  # leading tokens (special tokens included) that belong to the instruction
    truncated: bool


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DeviceError(LM2VecError, ValueError):
    """A device torch does not know, or one this machine does not have."""


def check_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch device (None: `default_device()`), refused before any weights load when torch does not
    know it or this machine lacks it (torch would fail only when the loaded model is moved there)."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device {str(device)!r} is not a torch device (cpu, cuda, cuda:1, mps ...)") from None
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {str(device)!r}: MPS is not available on this machine")
    return parsed


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 halves memory and is fast on GPUs; CPUs without bf16 hardware run fp32 several times faster.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class LM2Vec(nn.Module):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: EncoderConfig,
        source: str | None = None,
    ) -> None:
        super().__init__()
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("lm2vec needs a fast tokenizer: instruction tokens are found by character offsets.")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.source = source  # as the user named it (`pkg:gemma3-270m`): the export's card names the base from it
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        *,
        pooling: str | None = None,
        max_length: int | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        bidirectional: bool | None = None,
        text_template: str | None = None,
        adapters: Sequence[str | os.PathLike] = (),
    ) -> LM2Vec:
        """Load an encoder from a model folder, hub id, .gguf file or packaged alias (`pkg:smollm2`).

        Unset options come from the folder's lm2vec_config.json when it has one, else from the defaults.
        `adapters` are LoRA folders merged into the weights in order (MNTP, then SimCSE). With
        `bidirectional=True`, a probe checks that the first token sees the last one, or raises."""
        folder = resolve_source(source)
        saved = EncoderConfig.from_folder(folder) if Path(folder).is_dir() else None
        base = asdict(saved or EncoderConfig())
        overrides = {
            "pooling": pooling,
            "max_length": max_length,
            "bidirectional": bidirectional,
            "text_template": text_template,
        }
        config = EncoderConfig(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

        device = check_device(device)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        model, tokenizer = load_backbone(
            folder,
            dtype=dtype or default_dtype(device),
            device=device,
            attn_implementation=attn_implementation,
            bidirectional=config.bidirectional,
            adapters=adapters,
        )
        tokenizer.padding_side = "right"
        return cls(model, tokenizer, config, source=str(source))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def get_sentence_embedding_dimension(self) -> int:
        return self.model.config.hidden_size

    # --- turning text into batches -------------------------------------------------------------------
    def tokenize(self, inputs: Sequence[EncoderInput], prompt: str | None = None) -> list[TokenizedInput]:
        """Tokenize inputs, marking the unpooled lead (instruction, and any template text before the last copy
        of the text) by character offsets, and appending EOS for last-token pooling of plain text. Texts are
        truncated to max_length tokens, keeping the instruction and the EOS; a templated text is cut itself, so
        that the whole template fits."""
        prefixes, texts = [], []
        for position, item in enumerate(inputs):
            instruction, text = _split_input(item, position, prompt)
            prefixes.append(self.config.instruction_template.format(instruction=instruction) if instruction else "")
            texts.append(text)
        if self.config.text_template != PLAIN_TEMPLATE:
            return [self._tokenize_templated(prefix, text) for prefix, text in zip(prefixes, texts, strict=True)]
        encoded = self.tokenizer(
            [p + t for p, t in zip(prefixes, texts, strict=True)], return_offsets_mapping=True, add_special_tokens=True
        )
        eos = self.tokenizer.eos_token_id
        append_eos = self.config.pooling == "last_token"
        result = []
        for ids, offsets, prefix in zip(encoded["input_ids"], encoded["offset_mapping"], prefixes, strict=True):
            instruction_length = _instruction_length(offsets, len(prefix)) if prefix else 0
            if append_eos and ids and ids[-1] == eos:
                ids = ids[:-1]  # re-added below, after truncation
            if len(ids) == instruction_length:
                ids = [*ids, eos]  # an empty text still gets one token to pool: a defined, finite embedding
            limit = self.config.max_length - int(append_eos)
            truncated = len(ids) > limit
            ids = ids[:limit]
            if append_eos:
                ids = [*ids, eos]
            result.append(TokenizedInput(ids, min(instruction_length, len(ids) - 1), truncated))
        return result

    def _tokenize_templated(self, prefix: str, text: str) -> TokenizedInput:
        """One text in `text_template`: the lead up to the last copy of the text is attended to, not pooled. A
        text too long for max_length loses its last tokens, in every copy, until the template fits."""
        before, after = self.config.text_template.rsplit("{text}", 1)
        copies = self.config.text_template.count("{text}")
        truncated = False
        while True:
            lead = prefix + before.replace("{text}", text)
            encoded = self.tokenizer(lead + text + after, return_offsets_mapping=True, add_special_tokens=True)
            excess = len(encoded["input_ids"]) - self.config.max_length
            if excess <= 0 or not text:
                break
            truncated = True
            text_offsets = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
            keep = max(0, len(text_offsets) - -(-excess // copies))
            text = text[: text_offsets[keep - 1][1]] if keep else ""
        ids = encoded["input_ids"][: self.config.max_length]
        lead_length = min(_instruction_length(encoded["offset_mapping"], len(lead)), len(ids) - 1)
        return TokenizedInput(ids, lead_length, truncated)

    def collate(self, batch: Sequence[TokenizedInput]) -> dict[str, torch.Tensor]:
        """Right-pad a batch; `pool_mask` marks the tokens that pooling may use (not instruction, not padding)."""
        length = max(len(item.input_ids) for item in batch)
        input_ids = torch.full((len(batch), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        pool_mask = torch.zeros((len(batch), length), dtype=torch.bool)
        for row, item in enumerate(batch):
            n = len(item.input_ids)
            input_ids[row, :n] = torch.tensor(item.input_ids)
            attention_mask[row, :n] = 1
            pool_mask[row, item.instruction_length : n] = True
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pool_mask": pool_mask}

    # --- the model ------------------------------------------------------------------------------------
    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add `token_embeddings` and `sentence_embedding` to a collated batch (on the model's device)."""
        hidden = self.model(
            input_ids=features["input_ids"], attention_mask=features["attention_mask"]
        ).last_hidden_state
        sentence = pool(hidden, features["attention_mask"], features["pool_mask"], self.config.pooling)
        return {**features, "token_embeddings": hidden, "sentence_embedding": sentence}

    @torch.inference_mode()
    def encode(
        self,
        inputs: EncoderInput | Sequence[EncoderInput],
        batch_size: int = 32,
        normalize: bool = False,
        convert_to: Literal["numpy", "torch"] = "numpy",
        device: str | torch.device | None = None,
        show_progress_bar: bool | None = None,
        prompt: str | None = None,
        output_value: Literal["sentence_embedding", "token_embeddings"] = "sentence_embedding",
        dimensions: int | None = None,
    ) -> np.ndarray | torch.Tensor | list:
        """Embed inputs (`str` or `(instruction, text)`), batched by length, returned in input order.

        `sentence_embedding` gives an array (n, dim); `token_embeddings` a list with one (tokens, dim) array
        per input, holding the pooled tokens only. A single input gives a single result. `dimensions` (one of
        the Matryoshka sizes the model was trained for) cuts sentence embeddings to that size, renormalised."""
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}.")
        if output_value not in ("sentence_embedding", "token_embeddings"):
            raise ValueError(f"output_value must be 'sentence_embedding' or 'token_embeddings', got {output_value!r}.")
        if dimensions is not None:
            if output_value != "sentence_embedding":
                raise ValueError("dimensions applies to sentence embeddings only.")
            check_dimensions(dimensions, self.config.matryoshka_dims, self.get_sentence_embedding_dimension())
        single = isinstance(inputs, str) or (isinstance(inputs, tuple) and _is_pair(inputs))
        if not single and (isinstance(inputs, bytes | dict) or not isinstance(inputs, Iterable)):
            raise TypeError(
                f"encode takes a str, an (instruction, text) pair or a list of them, got {type(inputs).__name__}."
            )
        items = [inputs] if single else list(inputs)
        if not items and output_value == "sentence_embedding":
            empty = torch.zeros((0, dimensions or self.get_sentence_embedding_dimension()))
            return empty if convert_to == "torch" else empty.numpy()
        if device is not None:
            self.model.to(device)
        self.model.eval()

        tokenized = self.tokenize(items, prompt)
        if n_truncated := sum(item.truncated for item in tokenized):
            logger.warning(
                "%d of %d inputs were truncated to max_length=%d tokens.",
                n_truncated,
                len(items),
                self.config.max_length,
            )
        order = sorted(range(len(items)), key=lambda i: -len(tokenized[i].input_ids))
        starts = range(0, len(order), batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(starts) > 1 and logger.getEffectiveLevel() <= logging.INFO
        results: list = [None] * len(items)
        for start in tqdm(starts, desc="Encoding", disable=not show_progress_bar):
            indices = order[start : start + batch_size]
            batch = {k: v.to(self.device) for k, v in self.collate([tokenized[i] for i in indices]).items()}
            output = self.forward(batch)
            if output_value == "sentence_embedding":
                embeddings = output["sentence_embedding"].float()
                if normalize:
                    embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
                results_batch = list(embeddings.cpu())
            else:
                mask = batch["pool_mask"] & batch["attention_mask"].bool()
                results_batch = [row[m].float().cpu() for row, m in zip(output["token_embeddings"], mask, strict=True)]
                if normalize:
                    results_batch = [torch.nn.functional.normalize(t, dim=-1) for t in results_batch]
            for i, embedding in zip(indices, results_batch, strict=True):
                results[i] = embedding

        if output_value == "token_embeddings":
            converted = [r if convert_to == "torch" else r.numpy() for r in results]
            return converted[0] if single else converted
        stacked = torch.stack(results)
        if dimensions is not None:
            stacked = truncate(stacked, dimensions)
        stacked = stacked if convert_to == "torch" else stacked.numpy()
        return stacked[0] if single else stacked

    # --- export -------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write merged weights, tokenizer, lm2vec_config.json and the sentence-transformers module files, so
        that LM2Vec, plain transformers and sentence-transformers all load the folder as the same encoder.

        The folder is written next to `folder` and renamed into place when complete; an existing `folder` is
        replaced only if it is empty or an lm2vec encoder (has lm2vec_config.json), else ForeignFolderError."""
        if self.config.text_template != PLAIN_TEMPLATE:
            raise ValueError(
                f"text_template {self.config.text_template!r} cannot be exported: sentence-transformers would "
                "embed the plain text; export with the default '{text}'."
            )
        target = Path(folder)
        set_bidirectional(self.model, self.config.bidirectional)  # is_causal lands in config.json
        # vLLM (Gemma-3) and text-embeddings-inference read this flag to run the attention bidirectionally.
        self.model.config.use_bidirectional_attention = self.config.bidirectional
        with atomic_folder(target, replaceable=(target / CONFIG_NAME).is_file()) as folder:
            self.model.save_pretrained(folder)
            tokenizer_for_export(self.tokenizer, self.config).save_pretrained(folder)
            (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
            write_sentence_transformers_files(folder, self.config, self.get_sentence_embedding_dimension())
            base = base_metadata(self.source or self.model.config.name_or_path)
            write_model_card(folder, model_card(self.config, self.get_sentence_embedding_dimension(), base))
        if self.config.query_instruction and self.config.pooling != "last_token":
            self._warn_if_prompt_length_differs()

    def _warn_if_prompt_length_differs(self) -> None:
        """sentence-transformers skips as many tokens as the prompt has alone; a tokenizer that gives the
        template's trailing space its own token there (BPE) makes it skip the first text token too."""
        prompt = self.config.instruction_template.format(instruction=self.config.query_instruction)
        alone = self.tokenizer(prompt)["input_ids"]
        skipped = len(alone) - int(bool(alone) and alone[-1] in self.tokenizer.all_special_ids)
        pooled_from = self.tokenize([(self.config.query_instruction, "a")])[0].instruction_length
        if skipped != pooled_from:
            logger.warning(
                "sentence-transformers will leave %d more token(s) after the query prompt out of pooling than "
                "lm2vec does, so its query vectors differ slightly; LM2Vec.encode gives the trained ones.",
                skipped - pooled_from,
            )


def load_backbone(
    source: str | os.PathLike,
    *,
    lm_head: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    attn_implementation: str | None = None,
    bidirectional: bool = True,
    adapters: Sequence[str | os.PathLike] = (),
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model of `source` (folder, hub id, .gguf file or `pkg:` alias) and its tokenizer: the backbone
    (`AutoModel`), or with `lm_head` the causal LM around it (MNTP trains the backbone and reads the head).

    `adapters` (LoRA folders trained on the backbone) are merged in order; the attention is switched to
    `bidirectional` and, when bidirectional, a probe checks that the first token sees the last one, or raises.
    With `device` the model is moved there and put in eval mode."""
    if adapters and lm_head:
        raise ValueError("Adapters are merged into the backbone; load them without the LM head.")
    folder = resolve_source(source)
    hf_config = AutoConfig.from_pretrained(folder)
    if bidirectional or hf_config.model_type in SUPPORTED_ARCHITECTURES:
        attn_implementation = default_attn_implementation(hf_config.model_type, attn_implementation)
    model_class = AutoModelForCausalLM if lm_head else AutoModel
    model = model_class.from_pretrained(folder, dtype=dtype, attn_implementation=attn_implementation)
    model = merge_adapters(model, adapters)
    set_bidirectional(model, bidirectional)
    if device is not None:
        model.to(device).eval()
    if bidirectional:
        verify_bidirectional(backbone_of(model) if lm_head else model, hf_config.vocab_size)
    return model, AutoTokenizer.from_pretrained(folder)


def backbone_of(causal_lm: PreTrainedModel) -> nn.Module:
    """The backbone (`AutoModel`) inside a causal LM."""
    return getattr(causal_lm, causal_lm.base_model_prefix)


def merge_adapters(model: PreTrainedModel, adapters: Sequence[str | os.PathLike]) -> PreTrainedModel:
    """Apply LoRA adapters (trained on the backbone) one after the other, merging each into the weights."""
    if not adapters:
        return model
    from peft import PeftModel

    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json).")
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model


def tokenizer_for_export(tokenizer: PreTrainedTokenizerBase, config: EncoderConfig) -> PreTrainedTokenizerBase:
    """For last-token pooling the saved tokenizer appends EOS itself, so loaders that know nothing of lm2vec
    (sentence-transformers) pool the same token. `tokenize` drops and re-adds it, so lm2vec is unaffected."""
    if config.pooling != "last_token":
        return tokenizer
    exported = copy.deepcopy(tokenizer)
    probe = tokenizer("a")["input_ids"]
    # transformers rebuilds the post-processor from these two flags and saves them with the tokenizer.
    exported.add_bos_token = bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id
    exported.add_eos_token = True
    return exported


def write_sentence_transformers_files(folder: Path, config: EncoderConfig, dimension: int) -> None:
    """The module files sentence-transformers reads: the transformer at the folder root, then pooling."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "embedding_dimension": dimension,
        "pooling_mode": SENTENCE_TRANSFORMERS_MODES[config.pooling],
        "include_prompt": False,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": config.max_length}) + "\n")
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps(sentence_transformers_prompts(config), indent=2) + "\n"
    )


def sentence_transformers_prompts(config: EncoderConfig) -> dict[str, Any]:
    """config_sentence_transformers.json: with a trained query instruction, `encode` and `encode_query` put it
    in front (as lm2vec does for queries and symmetric tasks), `encode_document` does not."""
    prompts: dict[str, str] = {}
    if config.query_instruction:
        prompts = {"query": config.instruction_template.format(instruction=config.query_instruction), "document": ""}
    return {
        "model_type": "SentenceTransformer",
        "prompts": prompts,
        "default_prompt_name": "query" if prompts else None,
        "similarity_fn_name": "cosine",
    }


def _is_pair(item: object) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(part, str) for part in item)


def _split_input(item: object, position: int, prompt: str | None) -> tuple[str | None, str]:
    if isinstance(item, str):
        instruction, text = prompt, item
    elif _is_pair(item):
        instruction, text = item[0], item[1]
    else:
        raise TypeError(
            f"Input {position} is a {type(item).__name__}; expected a str or an (instruction, text) pair of str."
        )
    for part in (instruction or "", text):
        try:
            part.encode("utf-8")
        except UnicodeEncodeError as error:  # the tokenizer's own error names neither the input nor the cause
            raise ValueError(
                f"Input {position} holds a lone surrogate (U+{ord(part[error.start]):04X} at character "
                f"{error.start}), which is not text; decode the source with errors='replace' or drop it."
            ) from None
    return instruction, text


def _instruction_length(offsets: Sequence[tuple[int, int]], boundary: int) -> int:
    """Leading tokens that end within the instruction prefix; a token straddling the boundary is text."""
    count = 0
    for _, end in offsets:
        if end > boundary:
            break
        count += 1
    return count
