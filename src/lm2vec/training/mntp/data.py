"""MNTP data: training text from any source (`lm2vec.data.readers`' paragraphs), packed into token blocks and read
in a fixed, seeded order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import (
    PreTrainedTokenizerBase,
)

from lm2vec.data.errors import DataError
from lm2vec.data.readers import STREAM_COUNTS, ShuffledWindows, load_text_dataset, parquet_row_groups, row_group_texts
from lm2vec.training.masking import sample_seed
from lm2vec.training.mntp.options import MNTPConfig

PACK_TEXTS = 1000  # texts packed together; the remainder of each such batch is dropped


def pack_texts(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block_size: int) -> list[list[int]]:
    """Tokenize texts (with the tokenizer's special tokens, EOS between documents) and cut the token stream into
    blocks of exactly `block_size`, dropping the remainder."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer([t for t in texts if t and t.strip()], add_special_tokens=True)["input_ids"]:
        stream.extend(ids)
        if eos is not None and ids and ids[-1] != eos:
            stream.append(eos)
    return [stream[i * block_size : (i + 1) * block_size] for i in range(len(stream) // block_size)]


def pack_blocks(
    texts: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, block_size: int, num_proc: int | None = None
) -> datasets.Dataset:
    """`pack_texts` on every 1000 texts, as run_mlm packs them."""
    return texts.map(
        lambda batch: {"input_ids": pack_texts(batch["text"], tokenizer, block_size)},
        batched=True,
        batch_size=PACK_TEXTS,
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


def packed_window(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block_size: int) -> np.ndarray:
    """The blocks of a window's texts, packed 1000 texts at a time like `pack_blocks`, as one int32 array (a
    tenth of the memory of lists of Python ints)."""
    blocks = [
        block
        for start in range(0, len(texts), PACK_TEXTS)
        for block in pack_texts(texts[start : start + PACK_TEXTS], tokenizer, block_size)
    ]
    return np.asarray(blocks, dtype=np.int32).reshape(len(blocks), block_size)


class StreamedBlocks(torch.utils.data.Dataset):
    """`PackedBlocks` read from Parquet a window at a time (`ShuffledWindows`), never the whole corpus: the blocks
    of one window in a seeded order, then the next window's; sample j is masked with seed `sample_seed(seed, j)`."""

    def __init__(self, windows: ShuffledWindows, seed: int):
        self.windows, self.seed = windows, seed

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, sample: int) -> dict:
        return {"input_ids": self.windows[sample], "mask_seed": sample_seed(self.seed, sample)}


def streamed_data(
    options: MNTPConfig, tokenizer: PreTrainedTokenizerBase, length: int, record: bool = True
) -> tuple[StreamedBlocks, datasets.Dataset | None]:
    """`length` training samples streamed from `options.data`'s Parquet row groups, and the evaluation blocks: the
    first `max_eval_blocks` of the held-out text (read until there are that many). `record`: this process writes
    the run's window counts."""
    if not options.data:
        raise ValueError("No training data: set `data` (a corpus folder or .parquet files).")
    train = parquet_row_groups(options.data, "paragraphs", options.text_field)
    if not train:
        raise DataError("no training paragraphs", options.data)
    held_out = parquet_row_groups(
        options.validation_data or options.data, "paragraphs", options.text_field, "validation"
    )
    if options.validation_data and held_out is None:
        held_out = parquet_row_groups(options.validation_data, "paragraphs", options.text_field)
    if held_out is None and options.validation_fraction > 0:
        raise DataError(
            "streaming holds out no blocks of the training text: set `validation_data`, use a corpus with a "
            "validation split, or set validation_fraction = 0",
            options.data,
        )
    windows = ShuffledWindows(
        train,
        lambda texts, _: packed_window(texts, tokenizer, options.max_seq_length),
        length,
        options.seed,
        options.stream_window_rows,
        Path(options.output_dir) / STREAM_COUNTS,
        record,
        f"mntp:{tokenizer.name_or_path}:{len(tokenizer)}:{options.max_seq_length}",
    )
    blocks: list[list[int]] = []
    for group in held_out or []:
        if options.max_eval_blocks is not None and len(blocks) >= options.max_eval_blocks:
            break
        blocks += packed_window(row_group_texts(group), tokenizer, options.max_seq_length).tolist()
    blocks = blocks[: options.max_eval_blocks]
    return StreamedBlocks(windows, options.seed), datasets.Dataset.from_dict({"input_ids": blocks}) if blocks else None
