"""MNTP data: training text from any source (`lm2vec.data.readers`' paragraphs), packed into token blocks and read
in a fixed, seeded order."""

from __future__ import annotations

import datasets
import numpy as np
import torch
from transformers import (
    PreTrainedTokenizerBase,
)

from lm2vec.data.readers import load_text_dataset
from lm2vec.training.masking import sample_seed
from lm2vec.training.mntp.options import MNTPConfig


def pack_blocks(
    texts: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, block_size: int, num_proc: int | None = None
) -> datasets.Dataset:
    """Tokenize texts (with the tokenizer's special tokens, EOS between documents) and cut the token stream into
    blocks of exactly `block_size`; the remainder of every 1000 texts is dropped, as in run_mlm."""
    eos = tokenizer.eos_token_id

    def pack(batch: dict) -> dict:
        stream: list[int] = []
        for ids in tokenizer([t for t in batch["text"] if t and t.strip()], add_special_tokens=True)["input_ids"]:
            stream.extend(ids)
            if eos is not None and ids and ids[-1] != eos:
                stream.append(eos)
        n_blocks = len(stream) // block_size
        return {"input_ids": [stream[i * block_size : (i + 1) * block_size] for i in range(n_blocks)]}

    return texts.map(
        pack,
        batched=True,
        batch_size=1000,
        remove_columns=texts.column_names,
        num_proc=num_proc,
        desc=f"Packing into {block_size}-token blocks",
    )


class PackedBlocks(torch.utils.data.Dataset):
    """`length` samples drawn pass after pass over the blocks, each pass in its own seeded order; sample j is
    masked with seed `sample_seed(seed, j)`. The order and the masks are fixed by (seed, j) alone, so the
    Trainer reads it sequentially and a resumed run continues exactly where the checkpoint left off."""

    def __init__(self, blocks: datasets.Dataset, length: int | None, seed: int | str, shuffle: bool = True):
        if len(blocks) == 0:
            raise ValueError("No training blocks: the data has fewer tokens than max_seq_length.")
        self.blocks = blocks
        self.length = length if length is not None else len(blocks)
        self.seed = seed
        self.shuffle = shuffle
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def block_index(self, sample: int) -> int:
        epoch, position = divmod(sample, len(self.blocks))
        if not self.shuffle:
            return position
        if epoch not in self._orders:
            rng = np.random.default_rng(sample_seed(self.seed, -1 - epoch))
            self._orders = {epoch: rng.permutation(len(self.blocks))}
        return int(self._orders[epoch][position])

    def __getitem__(self, sample: int) -> dict:
        if not 0 <= sample < self.length:
            raise IndexError(sample)
        block = self.blocks[self.block_index(sample)]["input_ids"]
        return {"input_ids": block, "mask_seed": sample_seed(self.seed, sample)}


def prepare_data(
    options: MNTPConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Packed training and evaluation blocks."""
    if not options.data:
        raise ValueError("No training data: set `data` (a corpus folder, a text/JSONL/Parquet file, or hf:NAME).")
    train = pack_blocks(
        load_text_dataset(options.data, options.text_field, "train"),
        tokenizer,
        options.max_seq_length,
        options.preprocessing_workers,
    )
    held_out = load_text_dataset(options.validation_data or options.data, options.text_field, "validation")
    if options.validation_data and held_out is None:
        held_out = load_text_dataset(options.validation_data, options.text_field, "train")
    if held_out is not None:
        evaluation = pack_blocks(held_out, tokenizer, options.max_seq_length, options.preprocessing_workers)
    elif options.validation_fraction > 0 and len(train) > 1:
        n_eval = max(1, round(len(train) * options.validation_fraction))
        split = train.train_test_split(test_size=n_eval, seed=options.seed, shuffle=True)
        train, evaluation = split["train"], split["test"]
    else:
        evaluation = None
    if evaluation is not None and options.max_eval_blocks is not None and len(evaluation) > options.max_eval_blocks:
        evaluation = evaluation.select(range(options.max_eval_blocks))
    if evaluation is not None and len(evaluation) == 0:
        evaluation = None
    return train, evaluation
