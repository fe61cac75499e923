"""LM2Vec: a decoder-only LLM used as a bidirectional text encoder, and its encode loop.

One object holds the backbone (an `AutoModel`, no LM head), its tokenizer and an `EncoderConfig`. `tokenize`
and `collate` turn inputs into batches, `forward` turns a batch into embeddings; `encode` runs them over a list
of inputs and training uses the very same `tokenize`/`collate`/`forward`, so pooling cannot drift between the two.
Its config is `lm2vec.modeling.config`, its loading `lm2vec.modeling.loading`; `save_pretrained` writes the
sentence-transformers files of `lm2vec.modeling.sentence_transformers_files` and the card of `lm2vec.modeling.card`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm2vec.artifacts import atomic_folder
from lm2vec.modeling.bidirectional import set_bidirectional
from lm2vec.modeling.card import base_metadata, model_card, write_model_card
from lm2vec.modeling.config import CONFIG_NAME, PLAIN_TEMPLATE, EncoderConfig
from lm2vec.modeling.int8_tolerance import INT8_MIN_COSINE
from lm2vec.modeling.loading import check_adapter_merge, check_device, default_dtype, load_backbone
from lm2vec.modeling.matryoshka import check_dimensions, truncate
from lm2vec.modeling.onnx import QUANTIZED_FILE, OnnxBackendError, check_backend, load_onnx_backbone, write_onnx_files
from lm2vec.modeling.pooling import pool
from lm2vec.modeling.pruning import check_prune_fraction
from lm2vec.modeling.sentence_transformers_files import tokenizer_for_export, write_sentence_transformers_files
from lm2vec.modeling.sources import resolve_source

logger = logging.getLogger(__name__)

EncoderInput = str | tuple[str, str]


@dataclass
class TokenizedInput:
    input_ids: list[int]
    instruction_length: int  # leading tokens (special tokens included) that belong to the instruction
    truncated: bool


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
        adapter_weights: Sequence[float] | None = None,
        merge_method: str = "linear",
        merge_density: float | None = None,
        prune_layers: float = 0.0,
        backend: str = "torch",
        onnx_file: str = QUANTIZED_FILE,
    ) -> LM2Vec:
        """Load an encoder from a model folder, hub id, .gguf file or packaged alias (`pkg:smollm2`).

        Unset options come from the folder's lm2vec_config.json when it has one, else from the defaults.
        `adapters` are LoRA folders merged into the weights in order (MNTP, then SimCSE), each delta scaled by its
        `adapter_weights` entry (default 1) or combined by `merge_method` (`lm2vec.modeling.loading.merge_adapters`);
        weights that do not fit the adapters raise AdapterMergeError before anything loads. `prune_layers` drops that
        share of the top decoder layers (adapters trained on a pruned model prune it as they were trained, and a
        share that does not fit them raises PruneError before anything loads: `lm2vec.modeling.pruning`). With
        `bidirectional=True`, a probe checks that the first token sees the last one, or raises.

        `backend="onnx"` runs `onnx_file` of an encoder folder exported with ONNX files (`lm2vec.modeling.onnx`) on
        the CPU in place of the torch backbone; tokenizing and pooling stay these."""
        check_backend(source, backend, onnx_file)
        check_adapter_merge(adapters, adapter_weights, merge_method, merge_density)
        check_prune_fraction(prune_layers)
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
        if backend == "onnx":
            torch_options = {"adapters": adapters, "device": device, "dtype": dtype, "prune_layers": prune_layers}
            return cls._from_onnx(folder, onnx_file, config, source, **torch_options)

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
            adapter_weights=adapter_weights,
            merge_method=merge_method,
            merge_density=merge_density,
            prune_layers=prune_layers,
        )
        tokenizer.padding_side = "right"
        return cls(model, tokenizer, config, source=str(source))

    @classmethod
    def _from_onnx(
        cls, folder, onnx_file: str, config: EncoderConfig, source, adapters, device, dtype, prune_layers
    ) -> LM2Vec:
        """The ONNX backend's encoder: its graph fixes the weights, their dtype, the attention and the device."""
        saved = EncoderConfig.from_folder(folder)
        fixed = {
            "adapters": bool(adapters),
            "prune_layers": bool(prune_layers),
            "device": device is not None and torch.device(device).type != "cpu",
            "dtype": dtype not in (None, torch.float32, "float32"),
            "bidirectional": saved is not None and saved.bidirectional != config.bidirectional,
        }
        if changed := [name for name, differs in fixed.items() if differs]:
            raise OnnxBackendError(
                f"the onnx backend runs {onnx_file} as exported (fp32 or int8 weights, on the CPU); it cannot "
                f"change its {', '.join(changed)}"
            )
        model, tokenizer = load_onnx_backbone(folder, onnx_file, config.bidirectional)
        tokenizer.padding_side = "right"
        return cls(model, tokenizer, config, source=str(source))

    @property
    def device(self) -> torch.device:
        # An ONNX backbone has no torch parameters: its session runs on the CPU.
        return next(self.model.parameters(), torch.empty(0)).device

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
            cut = text_offsets[keep - 1][1] if keep else 0
            # The byte tokens of one character (byte fallback) share its offsets: where the cut would keep the
            # whole text, that last character goes too, or the loop would never end.
            text = text[: cut if cut < len(text) else text_offsets[keep - 1][0]]
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
    def save_pretrained(
        self, folder: str | os.PathLike, onnx: bool = False, int8_min_cosine: float = INT8_MIN_COSINE
    ) -> None:
        """Write merged weights, tokenizer, lm2vec_config.json and the sentence-transformers module files, so
        that LM2Vec, plain transformers and sentence-transformers all load the folder as the same encoder; with
        `onnx`, also its ONNX graphs, fp32 and int8 (`lm2vec.modeling.onnx.write_onnx_files`, checked; the int8
        file's lowest layers stay fp32 where its vectors fall below `int8_min_cosine` to fp32's).

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
            self.config.save(folder)
            write_sentence_transformers_files(folder, self.config, self.get_sentence_embedding_dimension())
            base = base_metadata(self.source or self.model.config.name_or_path)
            write_model_card(folder, model_card(self.config, self.get_sentence_embedding_dimension(), base))
            if onnx:
                write_onnx_files(self.model, folder, self.config.bidirectional, int8_min_cosine)
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
