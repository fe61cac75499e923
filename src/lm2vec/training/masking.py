"""Masking for masked next-token prediction (MNTP): packed blocks in, masked inputs and labels out.

Every sample carries its own mask seed, so the masks of a sample depend on nothing but (seed, sample number):
the same after a resume, on any number of processes, in any dataloader worker.

Labels sit at the masked token's own position (`labels[i] = original token i`, -100 elsewhere); the model reads
the prediction for position i from its output at position i-1 (see `MNTPModel`). Position 0 has no position
before it, so it is never masked, and neither are special tokens (BOS, EOS, padding, the mask token itself).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
STRATEGIES = ("bert", "all")
# The paper's stand-in for tokenizers without a mask token (llm2vec's `mask_token_type="blank"`).
DEFAULT_STAND_IN = "_"


def mask_token_for(tokenizer: PreTrainedTokenizerBase, stand_in: str | None = None) -> tuple[str, int]:
    """The mask token and its id: `stand_in` if given, else the tokenizer's own mask token, else "_".

    Gemma tokenizers have `<mask>`; Llama, Mistral, Qwen and SmolLM2 tokenizers have none and get "_"."""
    if stand_in is None and tokenizer.mask_token is not None and tokenizer.mask_token_id is not None:
        return tokenizer.mask_token, int(tokenizer.mask_token_id)
    token = stand_in if stand_in is not None else DEFAULT_STAND_IN
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        ids = [tokenizer.convert_tokens_to_ids(token)]
    if ids[0] is None or (ids[0] == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"Mask stand-in {token!r} is not a token of this tokenizer; set mask_token to one that is.")
    return token, int(ids[0])


def sample_seed(seed: int, sample: int) -> int:
    """A 63-bit generator seed for one sample, well mixed so neighbouring samples get unrelated masks."""
    digest = hashlib.blake2b(f"{seed}:{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    special_ids: Sequence[int],
    vocab_size: int,
    mask_prob: float,
    strategy: str,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask one or more rows of token ids; returns (masked input ids, labels).

    Each eligible token is masked with probability `mask_prob`. `bert`: of the masked tokens 80% become the mask
    token, 10% a random token, 10% stay as they are; `all`: every masked token becomes the mask token."""
    if strategy not in STRATEGIES:
        raise ValueError(f"mask strategy must be one of {STRATEGIES}, got {strategy!r}.")
    ids = input_ids.clone()
    eligible = ~torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))
    eligible[..., 0] = False
    masked = (torch.rand(ids.shape, generator=generator) < mask_prob) & eligible
    labels = torch.where(masked, ids, torch.full_like(ids, IGNORE_INDEX))
    if strategy == "all":
        ids[masked] = mask_token_id
        return ids, labels
    replace = (torch.rand(ids.shape, generator=generator) < 0.8) & masked
    randomise = (torch.rand(ids.shape, generator=generator) < 0.5) & masked & ~replace
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, dtype=ids.dtype)
    ids[replace] = mask_token_id
    ids[randomise] = random_ids[randomise]
    return ids, labels


@dataclass
class MNTPCollator:
    """Stacks packed blocks (`input_ids`, `mask_seed`) and masks each with its own seeded generator."""

    mask_token_id: int
    special_ids: tuple[int, ...]
    vocab_size: int
    mask_prob: float = 0.2
    strategy: str = "bert"

    @classmethod
    def for_tokenizer(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        vocab_size: int,
        mask_prob: float = 0.2,
        strategy: str = "bert",
        stand_in: str | None = None,
    ) -> MNTPCollator:
        """`vocab_size`: the model's (random replacements are drawn below min(it, len(tokenizer)))."""
        _, mask_id = mask_token_for(tokenizer, stand_in)
        special = sorted({*tokenizer.all_special_ids, mask_id})
        return cls(mask_id, tuple(special), min(vocab_size, len(tokenizer)), mask_prob, strategy)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must be between 0 and 1, got {self.mask_prob}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"mask strategy must be one of {STRATEGIES}, got {self.strategy!r}.")

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows, labels = [], []
        for feature in features:
            generator = torch.Generator().manual_seed(int(feature["mask_seed"]))
            ids, row_labels = mask_tokens(
                torch.as_tensor(feature["input_ids"], dtype=torch.long),
                mask_token_id=self.mask_token_id,
                special_ids=self.special_ids,
                vocab_size=self.vocab_size,
                mask_prob=self.mask_prob,
                strategy=self.strategy,
                generator=generator,
            )
            rows.append(ids)
            labels.append(row_labels)
        input_ids = torch.stack(rows)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": torch.stack(labels)}
