"""Shrunk copies of a model: the same architecture (config class and settings) with two small layers and random
weights, so that a 7-9B model's code path (its dtype, attention implementation, options) runs on a CPU in seconds.
`lm2vec run --dry-run` trains one in place of a GPU recipe's model.

Where the model's own tokenizer is not at hand (a hub model, offline), `byte_tokenizer` stands in: a byte-level
tokenizer without merges (256 byte tokens, so any text in any script tokenizes) with the special tokens of the
model's family, so that what depends on them (Gemma's <mask>, Llama's and Mistral's BOS and missing padding token)
goes as with the real one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

# The shrunk model's sizes: heads of 16 dimensions, grouped-query attention kept (2 key/value heads for 4).
SHRUNK_SIZES = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
}


@dataclass(frozen=True)
class SpecialTokens:
    """A tokenizer family's special tokens, in their vocabulary order; None: the family has no such token."""

    family: str
    bos: str
    eos: str
    unk: str
    pad: str | None = None
    mask: str | None = None

    def in_order(self) -> list[str]:
        return [token for token in (self.pad, self.eos, self.bos, self.unk, self.mask) if token is not None]


GEMMA_TOKENS = SpecialTokens("Gemma", bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>", mask="<mask>")
# Llama's, Mistral's and most others': no padding token (the encoder pads with EOS), no mask token.
LLAMA_TOKENS = SpecialTokens("Llama and Mistral", bos="<s>", eos="</s>", unk="<unk>")


def family_tokens(model_type: str) -> SpecialTokens:
    return GEMMA_TOKENS if model_type.startswith("gemma") else LLAMA_TOKENS


def byte_tokenizer(specials: SpecialTokens) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without merges (one token a UTF-8 byte) that puts `specials.bos` before every
    text, as Gemma's, Llama's and Mistral's tokenizers do."""
    tokens = specials.in_order() + sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=specials.unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bos = (specials.bos, vocab[specials.bos])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{specials.bos} $A", pair=f"{specials.bos} $A $B", special_tokens=[bos]
    )
    named = {"pad_token": specials.pad, "mask_token": specials.mask}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=specials.bos,
        eos_token=specials.eos,
        unk_token=specials.unk,
        **{name: token for name, token in named.items() if token is not None},
    )


def shrunk_config(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """`config`'s class and settings with SHRUNK_SIZES, and the vocabulary and special token ids of `tokenizer`."""
    values = config.to_dict()
    model_type = values.pop("model_type")
    values.pop("layer_types", None)  # one entry a layer: the config class rebuilds it for the new layer count
    values |= SHRUNK_SIZES | {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return AutoConfig.for_model(model_type, **values)


def save_shrunk_model(
    config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, folder: Path, seed: int = 0
) -> None:
    """The causal LM of `config` with seeded random weights, and `tokenizer`, saved into `folder`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


__all__ = [
    "GEMMA_TOKENS",
    "LLAMA_TOKENS",
    "SHRUNK_SIZES",
    "SpecialTokens",
    "byte_tokenizer",
    "family_tokens",
    "save_shrunk_model",
    "shrunk_config",
]
