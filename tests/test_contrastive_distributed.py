"""Two CPU processes (gloo, DDP) give the loss and the gradients of one process holding the whole global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

RECORDS = [
    {"query": q, "positive": p, "negatives": [n]}
    for q, p, n in [
        ("the cat sat on the mat", "a cat on a mat", "the car is red"),
        ("a dog ran fast", "the dog ran", "music"),
        ("a man plays guitar", "the man plays music", "a small house"),
        ("the river is big", "a big river", "the child sat"),
        ("a small blue house", "the house is blue", "a dog ran"),
        ("the woman plays piano", "piano music", "the city road"),
        ("the big red car", "a red car", "a green tree"),
        ("the child sat on the road", "a child on a road", "the cat is big"),
    ]
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loss_and_gradients(folder, records, cached: bool, ddp: bool):
    from lm2vec.training.contrastive import ContrastiveCollator, ContrastiveOptions, batch_loss
    from tests.test_contrastive import tiny_encoder

    torch.manual_seed(0)
    encoder = tiny_encoder(folder, seed=0)
    options = ContrastiveOptions(mini_batch_size=3 if cached else 0, cached=cached)
    backbone = encoder.model
    if ddp:
        backbone = torch.nn.parallel.DistributedDataParallel(encoder.model)
    backbone.train()
    features = ContrastiveCollator(encoder, num_hard_negatives=1)(records)
    loss = batch_loss(encoder, backbone, features, options)
    loss.backward()
    gradients = {n: p.grad.detach().clone() for n, p in encoder.model.named_parameters() if p.requires_grad}
    return loss.detach(), gradients


def _worker(rank: int, world: int, port: int, work, folder: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results[rank] = work(folder)
    finally:
        dist.destroy_process_group()


def in_two_processes(work, folder) -> dict:
    """`work(folder)`'s result in each of two gloo processes, by rank."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), work, str(folder), results), nprocs=2, join=True)
        return dict(results)


def _ddp_losses_and_gradients(folder: str) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    half = len(RECORDS) // world
    results = {}
    for cached in (False, True):
        loss, gradients = _loss_and_gradients(folder, RECORDS[rank * half : (rank + 1) * half], cached, ddp=True)
        dist.all_reduce(loss)  # DDP averages the gradients; the logged loss is the processes' mean
        results[cached] = (float(loss) / world, {k: v.numpy() for k, v in gradients.items()})
    return results


def test_two_processes_match_one_process_on_the_global_batch(tiny_llama) -> None:
    """Plain and cached (GradCache, DDP no_sync on all but the last sub-batch) losses."""
    results = in_two_processes(_ddp_losses_and_gradients, tiny_llama)
    for cached in (False, True):
        expected_loss, expected = _loss_and_gradients(tiny_llama, RECORDS, cached, ddp=False)
        for rank in (0, 1):
            loss, gradients = results[rank][cached]
            assert loss == pytest.approx(float(expected_loss), rel=1e-5)
            for name, gradient in expected.items():
                assert gradient.abs().max() > 0
                torch.testing.assert_close(torch.from_numpy(gradients[name]), gradient, atol=1e-6, rtol=1e-4)


def _mine(folder: str) -> tuple[list[list[str]], torch.Tensor, int]:
    """The records' mined negatives, the corpus' vectors and how many texts this process encoded itself."""
    from lm2vec import LM2Vec
    from lm2vec.training.mining import MiningOptions, encoded, mine_hard_negatives

    encoder = LM2Vec.from_pretrained(folder, device="cpu", max_length=64)
    calls = []
    real_encode = encoder.encode
    encoder.encode = lambda texts, **kw: calls.append(len(texts)) or real_encode(texts, **kw)
    records = [{**r, "negatives": [], "instruction": "q"} for r in RECORDS]
    corpus = [r["positive"] for r in RECORDS] + [r["negatives"][0] for r in RECORDS] + ["one more text"]
    mined = mine_hard_negatives(encoder, records, corpus, MiningOptions(num_negatives=2, batch_size=4))
    texts_encoded = sum(calls)
    return [r["negatives"] for r in mined], encoded(encoder, corpus, 4), texts_encoded


def test_processes_mine_a_share_each_and_pick_the_negatives_of_one_process(tiny_llama) -> None:
    results = in_two_processes(_mine, tiny_llama)
    negatives, vectors, encoded_alone = _mine(str(tiny_llama))
    assert encoded_alone == 8 + 17  # the queries and the corpus (the positives are in it)
    assert any(negatives)
    for rank in (0, 1):
        rank_negatives, rank_vectors, encoded_by_rank = results[rank]
        torch.testing.assert_close(rank_vectors, vectors, atol=1e-5, rtol=1e-4)
        assert rank_negatives == negatives
        assert encoded_by_rank == 13 - rank  # shares of the 8 queries and the 17 corpus texts: 4 + 9, 4 + 8
