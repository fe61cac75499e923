"""Streamed training data (`streaming = true`): Parquet row groups read a window at a time in an order fixed by the
seed, a resume that continues exactly and reads only its own window, and each rank's batches its own."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler, SequentialSampler

from lm2vec.data import readers
from lm2vec.data.errors import DataError
from lm2vec.data.readers import STREAM_COUNTS, ShuffledWindows, parquet_row_groups
from lm2vec.training.callbacks import read_log
from lm2vec.training.contrastive import SimCSEOptions, train_simcse
from lm2vec.training.contrastive.data import simcse_stream
from lm2vec.training.mntp import train_mntp
from lm2vec.training.mntp.data import streamed_data
from tests.test_mntp import BatchRecorder, Interrupt, lora_weights, tiny_options
from tests.tiny_models import WORDS, tiny_tokenizer

ROWS, ROW_GROUP = 240, 20  # 12 row groups in two files


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory):
    """Two Parquet files of paragraphs, 20 rows a row group; every text names its row (`row17 ...`)."""
    rng = random.Random(1)
    texts = [f"row{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))) for i in range(ROWS)]
    folder = tmp_path_factory.mktemp("stream-data")
    for number, start in enumerate((0, ROWS // 2)):
        table = pa.table({"text": texts[start : start + ROWS // 2]})
        pq.write_table(table, folder / f"part-{number}.parquet", row_group_size=ROW_GROUP)
    return folder


def rows(texts: list[str], window: int) -> list[str]:
    """Samples that are the texts' row names, so a test sees where each came from."""
    return [text.split()[0] for text in texts]


def stream(folder, length: int, seed: int = 0, **settings) -> ShuffledWindows:
    return ShuffledWindows(parquet_row_groups(folder), rows, length, seed, window_rows=50, **settings)


def test_order_fixed_by_the_seed_and_every_pass_covers_the_data(parquet_folder) -> None:
    samples = list(stream(parquet_folder, 3 * ROWS))
    assert samples == list(stream(parquet_folder, 3 * ROWS))
    assert samples != list(stream(parquet_folder, 3 * ROWS, seed=1))
    passes = [samples[p * ROWS : (p + 1) * ROWS] for p in range(3)]
    assert all(sorted(part) == sorted(f"row{i}" for i in range(ROWS)) for part in passes)
    assert passes[0] != passes[1]
    # Shuffled within windows of 3 row groups (60 rows >= window_rows 50): not in file order, nor by row group.
    assert passes[0][:ROW_GROUP] != sorted(passes[0][:ROW_GROUP], key=lambda row: int(row[3:]))
    assert len({int(row[3:]) // ROW_GROUP for row in passes[0][:60]}) == 3


def test_a_resume_reads_only_its_own_window(parquet_folder, tmp_path, monkeypatch) -> None:
    counts = tmp_path / STREAM_COUNTS
    straight = stream(parquet_folder, 2 * ROWS, counts_file=counts, record=True)
    expected = [straight[j] for j in range(2 * ROWS)]
    assert sum(json.loads(counts.read_text())["counts"]) == 2 * ROWS

    read: list[int] = []
    real = readers.row_group_texts
    monkeypatch.setattr(readers, "row_group_texts", lambda group: read.append(group.index) or real(group))
    resumed = stream(parquet_folder, 2 * ROWS, counts_file=counts)
    assert [resumed[j] for j in range(300, 2 * ROWS)] == expected[300:]
    assert len(read) == 9  # windows of 3 row groups: sample 300 is in the second pass's second, read with the 2 after

    read.clear()
    uncounted = stream(parquet_folder, 2 * ROWS)  # no counts: the windows before are read (counted), not kept
    assert uncounted[300] == expected[300] and len(read) > 12
    other_settings = stream(parquet_folder, 2 * ROWS, seed=5, counts_file=counts)  # counts of another order
    assert [other_settings[j] for j in range(ROWS)] == list(stream(parquet_folder, ROWS, seed=5))


def test_ranks_read_disjoint_batches_that_together_are_the_one_process_stream(parquet_folder) -> None:
    batch, world_size, steps = 4, 2, 20
    single = list(stream(parquet_folder, steps * batch * world_size))
    per_rank = []
    for rank in range(world_size):
        data = stream(parquet_folder, steps * batch * world_size)
        sampler = BatchSampler(SequentialSampler(data), batch, drop_last=True)
        shard = BatchSamplerShard(sampler, num_processes=world_size, process_index=rank)
        per_rank.append([[data[j] for j in indices] for indices in shard])
    assert all(len(batches) == steps for batches in per_rank)
    ranks = [{row for rows_ in batches for row in rows_} for batches in per_rank]
    assert not ranks[0] & ranks[1]
    interleaved = [row for step in zip(*per_rank, strict=True) for rows_ in step for row in rows_]
    assert interleaved == single


def test_sources_streaming_refuses(parquet_folder, tmp_path) -> None:
    (tmp_path / "texts.txt").write_text("a text\n\nanother\n")
    with pytest.raises(DataError, match="streaming reads .parquet files only"):
        parquet_row_groups(tmp_path / "texts.txt")
    with pytest.raises(DataError, match="streaming reads a corpus folder;"):
        parquet_row_groups(parquet_folder, "sentences")
    with pytest.raises(DataError, match="no 'body' column"):
        parquet_row_groups(parquet_folder, text_field="body")
    assert parquet_row_groups(parquet_folder, split="validation") is None
    options = tiny_options("unused", parquet_folder, tmp_path / "run", streaming=True)
    with pytest.raises(DataError, match="streaming holds out no blocks"):
        streamed_data(options, tiny_tokenizer(), 10)
    with pytest.raises(ValueError, match="stream_window_rows must be at least 1"):
        SimCSEOptions(streaming=True, stream_window_rows=0)


def test_mntp_streamed_resume_after_kill_continues_exactly(tiny_llama, parquet_folder, tmp_path) -> None:
    def options(name):
        return tiny_options(
            tiny_llama,
            parquet_folder,
            tmp_path / name,
            max_steps=6,
            save_steps=2,
            streaming=True,
            stream_window_rows=40,
            validation_fraction=0,
        )

    straight, killed, resumed = BatchRecorder(), BatchRecorder(), BatchRecorder()
    expected = lora_weights(train_mntp(options("straight"), callbacks=[straight]).trainer.model)
    with pytest.raises(KeyboardInterrupt):
        train_mntp(options("killed"), callbacks=[killed, Interrupt(step=3)])  # checkpoint-2 the latest
    trainer = train_mntp(options("killed"), resume=True, callbacks=[resumed]).trainer
    assert sorted(resumed.batches) == [3, 4, 5, 6]
    assert {**{s: killed.batches[s] for s in (1, 2)}, **resumed.batches} == straight.batches
    assert json.loads((tmp_path / "straight" / "mntp_config.json").read_text())["train_blocks"] is None
    for name, weight in lora_weights(trainer.model).items():
        assert weight.allclose(expected[name], rtol=1e-4, atol=1e-6)


def test_simcse_streams_crops_and_trains(tiny_llama, parquet_folder, tmp_path) -> None:
    options = SimCSEOptions(
        model=str(tiny_llama),
        data=str(parquet_folder),
        output_dir=str(tmp_path / "run"),
        positives="crops",
        streaming=True,
        stream_window_rows=40,
        max_steps=2,
        logging_steps=1,
        per_device_batch_size=4,
        max_length=32,
        export=False,
    )
    records = simcse_stream(options, 50, record=False)
    assert [records[j] for j in range(50)] == [simcse_stream(options, 50, record=False)[j] for j in range(50)]
    assert all(record["dataset"] == "crops" and record["query"] and record["positive"] for record in records)
    result = train_simcse(options)
    assert result.global_step == 2 and [r["step"] for r in read_log(tmp_path / "run") if "loss" in r] == [1, 2]
