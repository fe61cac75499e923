"""lm2vec serve: the real `openai` client against servers on 127.0.0.1, with a tiny random encoder."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import openai
import pytest
import torch
import uvicorn

from lm2vec import LM2Vec
from lm2vec.serving.app import ServeError, create_app, load_service
from lm2vec.serving.batching import PASS_COST_TOKENS, DynamicBatcher, cheapest_cut
from lm2vec.serving.documents import ChunkingOptions
from lm2vec.serving.index import SearchIndex, WriteOptions, build_index
from lm2vec.serving.options import ServeOptions

WORDS = "the a cat dog sat on mat ran fast slow red blue green house tree car road city river big small".split()
TEXTS = ["the cat sat on the mat .", "a dog ran fast", "music", "the big red car is on the road in the city"]
INSTRUCTION = "retrieve similar text"
REPO = Path(__file__).resolve().parents[1]


def texts_of(seed: int, count: int) -> list[str]:
    """Inputs of mixed lengths (1 to 30 words), different for every seed."""
    generator = np.random.default_rng(seed)
    return [" ".join(generator.choice(WORDS, size=generator.integers(1, 31))) for _ in range(count)]


@contextmanager
def serving(model: Path, index: Path | None = None, **options) -> Iterator[str]:
    """A server on 127.0.0.1 (a free port) in a thread; yields its base URL. Its passes run in a worker thread
    unless asked otherwise (worker processes cost a start-up; the module's `server` runs the default)."""
    options = {"max_input_tokens": 32, "worker_processes": False, **options}
    service = load_service(str(model), index, ServeOptions(**options), device="cpu")
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def request(url: str, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
    """(status, body: parsed if JSON) of one plain HTTP request."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    payload = json.dumps(body).encode() if isinstance(body, dict) else body
    connection.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    is_json = response.getheader("content-type", "").startswith("application/json")
    return response.status, json.loads(data) if is_json else data


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def reference(tiny_llama: Path) -> LM2Vec:
    """An encoder of its own to compute the expected embeddings (the server's runs in its batching thread)."""
    return LM2Vec.from_pretrained(tiny_llama, device="cpu", max_length=32)


@pytest.fixture(scope="module")
def server(tiny_llama: Path) -> Iterator[str]:
    with serving(tiny_llama, max_wait_ms=20, worker_processes=None) as url:
        yield url


def test_openai_client_gets_encode_embeddings(server: str, reference: LM2Vec, tiny_llama: Path) -> None:
    api = client(server)
    assert [model.id for model in api.models.list()] == [tiny_llama.name]
    expected = reference.encode(TEXTS, normalize=True)
    default = api.embeddings.create(input=TEXTS, model=tiny_llama.name)  # the client asks for base64
    floats = api.embeddings.create(input=TEXTS, model=tiny_llama.name, encoding_format="float")
    for response in (default, floats):
        got = np.array([item.embedding for item in sorted(response.data, key=lambda item: item.index)])
        assert got.shape == expected.shape and cosine(got, expected).min() >= 0.9999
    lengths = [len(item.input_ids) for item in reference.tokenize(TEXTS)]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(lengths)
    single = api.embeddings.create(input=TEXTS[0], model=tiny_llama.name, dimensions=32)
    assert cosine(np.array(single.data[0].embedding), expected[0]) >= 0.9999
    instructed = api.embeddings.create(input=TEXTS, model=tiny_llama.name, extra_body={"instruction": INSTRUCTION})
    got = np.array([item.embedding for item in instructed.data])
    assert cosine(got, reference.encode([(INSTRUCTION, t) for t in TEXTS], normalize=True)).min() >= 0.9999
    assert cosine(got, expected).max() < 0.9999  # the instruction changed them: it is attended to


def test_raw_base64_is_little_endian_float32(server: str, reference: LM2Vec, tiny_llama: Path) -> None:
    status, body = request(
        server, "POST", "/v1/embeddings", {"input": "a dog", "model": tiny_llama.name, "encoding_format": "base64"}
    )
    assert status == 200
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert cosine(vector, reference.encode("a dog", normalize=True)) >= 0.9999


def test_concurrent_requests_are_coalesced_and_still_equal_encode(
    server: str, reference: LM2Vec, tiny_llama: Path
) -> None:
    api = client(server)
    batches = [texts_of(seed, 1 + seed % 5) for seed in range(24)]

    def embed(texts: list[str]) -> np.ndarray:
        return np.array([item.embedding for item in api.embeddings.create(input=texts, model=tiny_llama.name).data])

    _, before = request(server, "GET", "/metrics")
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(embed, batches))
    for texts, got in zip(batches, results, strict=True):
        assert cosine(got, reference.encode(texts, normalize=True)).min() >= 0.9999
    _, after = request(server, "GET", "/metrics")
    forward_passes = _metric(after, "lm2vec_batch_inputs_count") - _metric(before, "lm2vec_batch_inputs_count")
    inputs = _metric(after, "lm2vec_batch_inputs_sum") - _metric(before, "lm2vec_batch_inputs_sum")
    assert inputs == sum(len(texts) for texts in batches)
    assert forward_passes < len(batches)  # requests shared forward passes


def _metric(text: bytes, name: str, labels: str = "") -> float:
    prefix = f"{name}{labels} "
    return float(next(line for line in text.decode().splitlines() if line.startswith(prefix)).split()[-1])


def _cost_alone(lengths: list[list[int]]) -> int:
    """Padded tokens and pass costs of encoding each request in a pass of its own."""
    return sum(len(n) * max(n) + PASS_COST_TOKENS for n in lengths)


def _cost(passes: list[tuple[int, int]]) -> int:
    return sum(padded + PASS_COST_TOKENS for _, padded in passes)


def _set_partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _set_partitions(rest):
        yield [[first], *partition]
        for number in range(len(partition)):
            yield [*partition[:number], [first, *partition[number]], *partition[number + 1 :]]


def test_cheapest_cut_is_the_cheapest_of_all_batchings() -> None:
    generator = np.random.default_rng(0)
    for _ in range(60):
        lengths = sorted(generator.integers(1, 80, size=generator.integers(1, 8)).tolist(), reverse=True)
        batch_size, budget = int(generator.integers(1, 5)), int(generator.integers(80, 240))
        starts = cheapest_cut(lengths, batch_size, budget)
        batches = [lengths[a:b] for a, b in zip(starts, [*starts[1:], len(lengths)], strict=True)]
        assert starts[0] == 0 and sum(batches, []) == lengths
        assert all(len(b) <= batch_size and len(b) * max(b) <= budget for b in batches)
        allowed = [
            p for p in _set_partitions(lengths) if all(len(b) <= batch_size and len(b) * max(b) <= budget for b in p)
        ]
        best = min(sum(len(b) * max(b) + PASS_COST_TOKENS for b in p) for p in allowed)
        assert sum(len(b) * max(b) + PASS_COST_TOKENS for b in batches) == best


def test_batcher_gives_encode_embeddings_whatever_the_coalescing(reference: LM2Vec) -> None:
    jobs = [texts_of(100 + seed, 3) for seed in range(8)]
    expected = [reference.encode(texts, normalize=True) for texts in jobs]
    lengths = [[len(item.input_ids) for item in reference.tokenize(texts)] for texts in jobs]
    # A budget of 32 padded tokens cuts the coalesced inputs into many small batches; one of 4096 with a 50 ms
    # wait puts all 24 inputs of the 8 requests into one pool, cut into a few batches by length.
    for budget, wait, size in ((32, 0.0, 32), (64, 0.05, 32), (4096, 0.05, 32), (4096, 0.05, 5)):
        batches: list[tuple[int, int]] = []
        batcher = DynamicBatcher(
            reference,
            batch_tokens=budget,
            max_wait_s=wait,
            batch_size=size,
            on_batch=lambda n, padded, seen=batches: seen.append((n, padded)),
        )
        try:
            futures = [batcher.submit(texts, n) for texts, n in zip(jobs, lengths, strict=True)]
            for future, want in zip(futures, expected, strict=True):
                assert cosine(future.result(timeout=60), want).min() >= 0.9999
        finally:
            batcher.close()
        assert sum(n for n, _ in batches) == 24 and max(padded for _, padded in batches) <= budget
        assert max(n for n, _ in batches) <= size
        if budget == 4096:  # coalesced: fewer passes than requests, and cheaper than a pass per request
            assert len(batches) < len(jobs) and _cost(batches) <= _cost_alone(lengths)


def test_a_request_is_answered_when_its_last_input_is_encoded(reference: LM2Vec) -> None:
    release, calls = threading.Event(), []

    class HeldAfterFirstBatch:  # encode() as the batcher calls it; the second batch waits for `release`
        config = reference.config

        def encode(self, inputs, **options):
            calls.append(len(inputs))
            if len(calls) == 2:
                release.wait(timeout=60)
            return reference.encode(inputs, **options)

    long_texts = [" ".join(WORDS[: 12 + i]) for i in range(3)]  # sorted longest first: the first batch
    short_texts = ["a cat", "the dog", "red car"]
    lengths = [[len(item.input_ids) for item in reference.tokenize(texts)] for texts in (long_texts, short_texts)]
    batcher = DynamicBatcher(HeldAfterFirstBatch(), batch_tokens=4096, max_wait_s=0.05, batch_size=3)
    try:
        first = batcher.submit(long_texts, lengths[0])
        second = batcher.submit(short_texts, lengths[1])
        assert cosine(first.result(timeout=60), reference.encode(long_texts, normalize=True)).min() >= 0.9999
        assert not second.done()  # the first request did not wait for the other's batch
        release.set()
        assert cosine(second.result(timeout=60), reference.encode(short_texts, normalize=True)).min() >= 0.9999
    finally:
        release.set()
        batcher.close()


def test_requests_waiting_together_are_pooled_and_served_oldest_first(reference: LM2Vec) -> None:
    """While a pass runs, arriving requests join one pool: the next passes take its inputs in length order
    (little padding), starting with the oldest request's, so a short request is not passed over by longer ones."""
    release, passes = threading.Event(), []

    class HeldAtFirstBatch:
        config = reference.config

        def encode(self, inputs, **options):
            if not passes:
                release.wait(timeout=60)
            return reference.encode(inputs, **options)

    batcher = DynamicBatcher(
        HeldAtFirstBatch(),
        batch_tokens=4096,
        max_wait_s=0.0,
        batch_size=4,
        on_batch=lambda n, padded: passes.append((n, padded)),
    )
    jobs = [["a cat sat"], ["a dog"], *[texts_of(300 + seed, 3) for seed in range(5)]]
    lengths = [[len(item.input_ids) for item in reference.tokenize(texts)] for texts in jobs]
    answered_at: dict[int, int] = {}
    try:
        futures = [batcher.submit(jobs[0], lengths[0])]  # alone, held in its pass while the others arrive
        time.sleep(0.2)
        for number in range(1, len(jobs)):
            futures.append(batcher.submit(jobs[number], lengths[number]))
            futures[-1].add_done_callback(lambda _, number=number: answered_at.setdefault(number, len(passes)))
        release.set()
        for future, texts in zip(futures, jobs, strict=True):
            assert cosine(future.result(timeout=60), reference.encode(texts, normalize=True)).min() >= 0.9999
    finally:
        release.set()
        batcher.close()
    assert passes[0][0] == 1 and answered_at[1] == 2  # the short second request went first after the held pass
    assert max(n for n, _ in passes) <= 4
    assert _cost(passes[1:]) <= _cost_alone(lengths[1:])


def test_workers_run_passes_at_once_on_their_share_of_the_threads(reference: LM2Vec) -> None:
    """Two workers: the second pass starts while the first runs (each waits at a barrier for the other), each on
    half of torch's threads; a pass that fails fails only its own request (one input a pass here), and every
    answer is encode()'s."""
    both_running = threading.Barrier(2, timeout=30)
    threads_seen: list[int] = []
    threads = torch.get_num_threads()

    class TwoAtOnce:
        config = reference.config

        def encode(self, inputs, **options):
            threads_seen.append(torch.get_num_threads())
            if len(threads_seen) <= 2:
                both_running.wait()  # broken (an error) unless two passes run at once
            if "fails" in inputs:
                raise RuntimeError("this pass fails")
            return reference.encode(inputs, **options)

    jobs = [texts_of(400, 4), texts_of(401, 4), ["fails"], texts_of(402, 3)]
    lengths = [[len(item.input_ids) for item in reference.tokenize(texts)] for texts in jobs]
    batcher = DynamicBatcher(TwoAtOnce(), batch_tokens=4096, max_wait_s=0.05, batch_size=1, workers=2)
    try:
        futures = [batcher.submit(texts, n) for texts, n in zip(jobs, lengths, strict=True)]
        for number in (0, 1, 3):
            got = futures[number].result(timeout=60)
            assert cosine(got, reference.encode(jobs[number], normalize=True)).min() >= 0.9999
        with pytest.raises(RuntimeError, match="this pass fails"):
            futures[2].result(timeout=60)
    finally:
        batcher.close()
        torch.set_num_threads(threads)
    assert not both_running.broken and len(threads_seen) >= 3
    assert set(threads_seen) == {max(1, threads // 2)}


def worker_processes() -> set[int]:
    return {child.pid for child in multiprocessing.active_children()}


def test_worker_processes_share_the_weights_and_give_encodes_vectors(tiny_llama: Path, reference: LM2Vec) -> None:
    """Worker processes (the default for torch on the CPU): all start before the batcher is made, hold the
    encoder's weights in shared memory (one copy, not one a worker), each on its share of torch's threads, give
    encode()'s vectors, and stop with the batcher."""
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu", max_length=32)
    assert not any(parameter.is_shared() for parameter in encoder.parameters())
    before = worker_processes()
    batcher = DynamicBatcher(encoder, batch_tokens=4096, max_wait_s=0.05, batch_size=3, workers=2, processes=True)
    try:
        started = worker_processes() - before
        assert len(started) == 2
        assert all(parameter.is_shared() for parameter in encoder.parameters())
        jobs = [texts_of(500 + seed, 1 + seed % 4) for seed in range(8)]
        lengths = [[len(item.input_ids) for item in reference.tokenize(texts)] for texts in jobs]
        futures = [batcher.submit(texts, n) for texts, n in zip(jobs, lengths, strict=True)]
        for future, texts in zip(futures, jobs, strict=True):
            assert cosine(future.result(timeout=60), reference.encode(texts, normalize=True)).min() >= 0.9999
    finally:
        batcher.close()
    assert not started & worker_processes()


def test_a_killed_worker_process_is_replaced(tiny_llama: Path, reference: LM2Vec) -> None:
    """A worker process that dies (the OOM killer) fails at most the pass it was running; the batcher starts new
    workers and serves on."""
    before = worker_processes()
    batcher = DynamicBatcher(reference, batch_tokens=4096, max_wait_s=0.0, workers=1, processes=True)
    texts = texts_of(600, 3)
    lengths = [len(item.input_ids) for item in reference.tokenize(texts)]
    try:
        (first,) = worker_processes() - before
        os.kill(first, signal.SIGKILL)
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(batcher.submit(texts, lengths).result(timeout=120))
            except BrokenExecutor:
                outcomes.append(None)
        assert outcomes[1] is not None and outcomes[2] is not None  # only a pass sent before the death was noticed
        assert cosine(outcomes[-1], reference.encode(texts, normalize=True)).min() >= 0.9999
        replaced = worker_processes() - before
        assert len(replaced) == 1 and first not in replaced
    finally:
        batcher.close()


def test_worker_processes_need_room_for_the_weights_in_shared_memory(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The weights go to worker processes through /dev/shm (64 MB in a default Docker container): where they do not
    fit, the default serves from a thread and says so, an explicit --worker-processes is refused before serving."""
    import lm2vec.serving.app as app_module

    monkeypatch.setattr(app_module, "shared_memory_free_bytes", lambda: 1000)
    with caplog.at_level(logging.WARNING, logger="lm2vec.serving.app"):
        assert load_service(str(tiny_llama), None, ServeOptions(), device="cpu").options.worker_processes is False
    assert "do not fit /dev/shm (0 MiB free)" in caplog.text
    with pytest.raises(ServeError, match=r"do not fit /dev/shm .*--shm-size.*--no-worker-processes"):
        load_service(str(tiny_llama), None, ServeOptions(worker_processes=True), device="cpu")
    monkeypatch.setattr(app_module, "shared_memory_free_bytes", lambda: 10**12)
    assert load_service(str(tiny_llama), None, ServeOptions(), device="cpu").options.worker_processes is True


def test_torch_passes_run_in_two_worker_processes_on_the_cpu_by_default(reference: LM2Vec) -> None:
    on_gpu = type("OnGpu", (), {"device": torch.device("cuda")})()  # no GPU needed: only the device is read
    assert ServeOptions().encoding_in_processes(reference)  # reference runs on the CPU
    assert not ServeOptions().encoding_in_processes(on_gpu)
    assert not ServeOptions(backend="onnx").encoding_in_processes(reference)  # onnxruntime leaves the GIL
    assert not ServeOptions(worker_processes=False).encoding_in_processes(reference)
    assert ServeOptions(worker_processes=True).encoding_in_processes(on_gpu)
    assert ServeOptions().encoding_workers(in_processes=True) == 2
    assert ServeOptions(backend="onnx").encoding_workers(in_processes=False) == 2  # one onnxruntime call a pass
    assert ServeOptions().encoding_workers(in_processes=False) == 1  # threads: torch takes the GIL per operator
    assert ServeOptions(workers=3).encoding_workers(in_processes=False) == 3


def test_a_request_cancelled_before_its_batch_is_never_encoded(reference: LM2Vec) -> None:
    release, encoded = threading.Event(), []

    class HeldAtFirstBatch:
        config = reference.config

        def encode(self, inputs, **options):
            encoded.extend(inputs)
            release.wait(timeout=60)
            return reference.encode(inputs, **options)

    batcher = DynamicBatcher(HeldAtFirstBatch(), batch_tokens=4096, max_wait_s=0.0, batch_size=8)
    try:
        first = batcher.submit(["a cat"], [len(reference.tokenize(["a cat"])[0].input_ids)])
        time.sleep(0.2)  # the first pass holds the worker
        gone = batcher.submit(texts_of(5, 3), [5, 5, 5])
        kept = batcher.submit(["the dog ran"], [len(reference.tokenize(["the dog ran"])[0].input_ids)])
        assert gone.cancel()
        release.set()
        assert kept.result(timeout=60).shape[0] == 1 and first.result(timeout=60).shape[0] == 1
    finally:
        release.set()
        batcher.close()
    assert encoded == ["a cat", "the dog ran"]


def test_bad_requests_get_openai_shaped_errors(tiny_llama: Path) -> None:
    name = tiny_llama.name
    long_input = " ".join(["cat"] * 40)  # more than max_input_tokens=32
    cases = [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        ({"model": name}, 400, "input"),
        ({"input": "a cat"}, 400, "model"),
        ({"input": "a cat", "model": name, "colour": "red"}, 400, "colour"),
        ({"input": "a cat", "model": "gpt-9"}, 404, "model"),
        ({"input": [], "model": name}, 400, "input"),
        ({"input": "  ", "model": name}, 400, "input"),
        ({"input": [1, 2, 3], "model": name}, 400, "input"),
        ({"input": [[1, 2]], "model": name}, 400, "input"),
        ({"input": 7, "model": name}, 400, "input"),
        ({"input": ["a", 7], "model": name}, 400, "input"),
        ({"input": "a cat", "model": name, "encoding_format": "int8"}, 400, "encoding_format"),
        ({"input": "a cat", "model": name, "dimensions": 16}, 400, "dimensions"),
        ({"input": "a cat", "model": name, "dimensions": "32"}, 400, "dimensions"),
        ({"input": "a cat", "model": name, "dimensions": True}, 400, "dimensions"),
        ({"input": "a cat", "model": name, "instruction": " ".join(["cat"] * 40)}, 400, "instruction"),
        ({"input": ["a cat"] * 5, "model": name}, 400, "input"),
        ({"input": ["a cat", long_input], "model": name}, 400, "input"),
        ({"input": "a " * 600, "model": name}, 413, None),
        ({"query": "a cat"}, 404, None),  # /v1/search without an index
    ]
    with serving(tiny_llama, max_inputs=4, max_body_bytes=1000) as url:
        for body, status, param in cases:
            path = "/v1/search" if isinstance(body, dict) and "query" in body else "/v1/embeddings"
            got, answer = request(url, "POST", path, body)
            assert got == status, (body, answer)
            error = answer["error"]
            assert error["type"] == "invalid_request_error" and error["message"], answer
            assert param is None or error["param"] == param, (body, error)
        assert (
            request(url, "POST", "/v1/embeddings", {"input": ["a cat", long_input], "model": name})[1]["error"]["code"]
            == "context_length_exceeded"
        )
        for method, path, status in (("GET", "/v1/embeddings", 405), ("POST", "/v1/chat/completions", 404)):
            got, answer = request(url, method, path, b"{}")
            assert got == status and answer["error"]["message"]
        with pytest.raises(openai.BadRequestError) as refused:
            client(url).embeddings.create(input="a cat", model=name, dimensions=8)
        assert "dimensions" in refused.value.message
        metrics = request(url, "GET", "/metrics")[1]
        assert _metric(metrics, "lm2vec_requests_total", '{endpoint="/v1/embeddings",status="400"}') >= 10
    with serving(tiny_llama, truncate=True) as url:
        got, answer = request(url, "POST", "/v1/embeddings", {"input": ["a cat", long_input], "model": name})
        assert got == 200 and answer["usage"]["total_tokens"] == 3 + 32


def test_api_key_is_required_when_set(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lm2vec.serving.app as serving_app

    compared = []
    original = serving_app.hmac.compare_digest
    monkeypatch.setattr(serving_app.hmac, "compare_digest", lambda a, b: compared.append(b) or original(a, b))
    with serving(tiny_llama, api_key="s3cret") as url:
        for key in ("wrong", "s3cre", "s3cret-and-more"):
            with pytest.raises(openai.AuthenticationError) as refused:
                client(url, key).embeddings.create(input="a cat", model=tiny_llama.name)
            assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
        assert compared and set(compared) == {b"s3cret"}  # every key went through the constant-time compare
        for path in ("/v1/models", "/metrics"):
            assert request(url, "GET", path)[0] == 401
        assert request(url, "GET", "/health")[0] == 200
        assert client(url, "s3cret").embeddings.create(input="a cat", model=tiny_llama.name).data
    with serving(tiny_llama) as url:  # no key set: any key and none are accepted
        assert client(url, "anything").embeddings.create(input="a cat", model=tiny_llama.name).data
        assert request(url, "GET", "/v1/models")[0] == 200


def test_search_endpoint(tmp_path: Path, tiny_llama: Path, reference: LM2Vec) -> None:
    from lm2vec.data.packaged import bbc_dir

    index = tmp_path / "index"
    articles = [sorted((bbc_dir() / topic).glob("*.txt"))[0] for topic in ("tech", "sports")]
    build_index(articles, str(tiny_llama), index, ChunkingOptions(24, 6), WriteOptions(), echo=lambda _: None)
    passages = SearchIndex(index).passages
    with serving(tiny_llama, index=index) as url:
        got, answer = request(url, "POST", "/v1/search", {"query": passages[3]["text"], "k": 3, "instruction": ""})
        assert got == 200 and [hit["rank"] for hit in answer["data"]] == [1, 2, 3]
        assert answer["data"][0]["text"] == passages[3]["text"] and answer["data"][0]["score"] > 0.9999
        sports = str(articles[1])
        got, answer = request(
            url, "POST", "/v1/search", {"query": passages[3]["text"], "k": 50, "filter": {"source": sports}}
        )
        assert got == 200 and answer["data"] and {hit["source"] for hit in answer["data"]} == {sports}
        for body, param in (
            ({"query": "a cat", "k": 0}, "k"),
            ({"query": "a cat", "k": 101}, "k"),
            ({"query": "a cat", "k": "3"}, "k"),
            ({"query": "a cat", "k": True}, "k"),
            ({"query": ""}, "query"),
            ({"query": " \n "}, "query"),
            ({"query": "a \ud800"}, "query"),
            ({"query": "a cat", "instruction": "cat " * 40}, "instruction"),
            ({"query": "a cat", "filter": {"source": ["x"]}}, "filter"),
        ):
            got, answer = request(url, "POST", "/v1/search", body)
            assert got == 400 and answer["error"]["param"] == param, (body, answer)


def test_a_client_that_disconnects_does_not_stall_others(server: str, reference: LM2Vec, tiny_llama: Path) -> None:
    host, port = server.removeprefix("http://").split(":")
    body = json.dumps({"input": texts_of(7, 64), "model": tiny_llama.name}).encode()
    for _ in range(3):  # a client that sends its request and goes away at once
        with socket.create_connection((host, int(port))) as gone:
            gone.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
    with socket.create_connection((host, int(port))) as half:  # one that never finishes its body
        half.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        started = time.monotonic()
        response = client(server).embeddings.create(input=TEXTS, model=tiny_llama.name, encoding_format="float")
        assert time.monotonic() - started < 10
    got = np.array([item.embedding for item in response.data])
    assert cosine(got, reference.encode(TEXTS, normalize=True)).min() >= 0.9999


def test_lm2vec_serve_command_binds_localhost(tmp_path: Path, tiny_llama: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "LM2VEC_API_KEY": "from-the-environment",
    }
    process = subprocess.Popen(
        # worker threads: the worker processes' start-up is paid by tests/test_serve_faults.py
        [sys.executable, "-m", "lm2vec", "serve", str(tiny_llama), "--port", str(port), "--name", "tiny"]
        + ["--no-worker-processes"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving tiny on http://127.0.0.1:{port}/v1") and "API key on" in line, line
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if request(f"http://127.0.0.1:{port}", "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        with pytest.raises(openai.AuthenticationError):
            client(f"http://127.0.0.1:{port}").embeddings.create(input="a cat", model="tiny")
        url = f"http://127.0.0.1:{port}"
        assert client(url, "from-the-environment").embeddings.create(input="a cat", model="tiny").data
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--max-inputs", "0"], "max_inputs must be at least 1"),
        (["--batch-size", "0"], "batch_size must be at least 1"),
        (["--workers", "0"], "workers must be at least 1"),
        (["--max-wait-ms", "-1"], "max_wait_ms must be in [0, 60000]"),
        (["--max-input-tokens", "1"], "max_input_tokens must be at least 2"),
    ],
)
def test_serve_refuses_bad_options_before_loading_a_model(tmp_path: Path, option: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from lm2vec.cli import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path / "no-such-model"), *option])
    assert result.exit_code == 2 and message in result.output and "no-such-model" not in result.output, result.output


def test_dimensions_are_the_matryoshka_sizes_the_model_was_trained_for(tmp_path: Path, tiny_llama: Path) -> None:
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    encoder.config.matryoshka_dims = [8, 16]
    encoder.save_pretrained(tmp_path / "matryoshka")
    expected = encoder.encode(TEXTS, dimensions=8)
    with serving(tmp_path / "matryoshka") as url:
        api = client(url)
        response = api.embeddings.create(input=TEXTS, model="matryoshka", dimensions=8, encoding_format="float")
        got = np.array([item.embedding for item in sorted(response.data, key=lambda item: item.index)])
        assert got.shape == (4, 8) and cosine(got, expected).min() >= 0.9999
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
        assert len(api.embeddings.create(input="a cat", model="matryoshka", dimensions=32).data[0].embedding) == 32
        for refused in (4, 12, 64):
            with pytest.raises(openai.BadRequestError, match="trained for 8, 16, 32"):
                api.embeddings.create(input="a cat", model="matryoshka", dimensions=refused)


@contextmanager
def uvicorn_errors() -> Iterator[list[str]]:
    """What uvicorn logs as errors ("Exception in ASGI application" and its traceback) while the block runs."""
    logged: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield logged
    finally:
        logger.removeHandler(handler)


def _count(metrics: bytes, endpoint: str, status: int) -> float:
    line = f'lm2vec_requests_total{{endpoint="{endpoint}",status="{status}"}} '
    return next((float(row.split()[-1]) for row in metrics.decode().splitlines() if row.startswith(line)), 0.0)


def test_every_body_shape_is_an_openai_shaped_4xx(tiny_llama: Path) -> None:
    """Lone surrogates (JSON's \\ud800 escapes: not text), nesting deeper than Python's parser goes, an integer of
    more digits than Python converts: each an OpenAI-shaped 400 naming the field where it can, never a 500."""
    name = tiny_llama.name
    deep = b"[" * 100_000 + b"]" * 100_000
    cases = [
        ({"input": "abc \ud800", "model": name}, "input"),
        ({"input": ["fine", "abc \udfff"], "model": name}, "input"),
        ({"input": "abc", "model": name, "instruction": "x \ud800"}, "instruction"),
        ({"input": "abc", "model": name, "\ud800": 1}, None),
        (deep, None),
        (b'{"input": ' + deep + b', "model": "x"}', None),
        (b'{"input": "a", "model": "x", "dimensions": 1' + b"0" * 5000 + b"}", None),
    ]
    with serving(tiny_llama) as url, uvicorn_errors() as errors:
        for body, param in cases:
            got, answer = request(url, "POST", "/v1/embeddings", body)
            assert got == 400 and isinstance(answer, dict), (str(body)[:80], answer)
            assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["message"]
            assert answer["error"]["param"] == param, (str(body)[:80], answer)
        assert request(url, "POST", "/v1/embeddings", {"input": "abc", "model": name})[0] == 200
        metrics = request(url, "GET", "/metrics")[1]
    assert _count(metrics, "/v1/embeddings", 400) == len(cases) and _count(metrics, "/v1/embeddings", 500) == 0
    assert not errors


def test_a_client_gone_mid_body_is_counted_as_499_without_a_traceback(tiny_llama: Path) -> None:
    with serving(tiny_llama) as url, uvicorn_errors() as errors:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as gone:
            gone.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"input": "a cat", '
            )
            time.sleep(0.2)  # the server is reading the body when the client goes
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = request(url, "GET", "/metrics")[1]
            if _count(metrics, "/v1/embeddings", 499) or _count(metrics, "/v1/embeddings", 500):
                break
            time.sleep(0.05)
    assert _count(metrics, "/v1/embeddings", 499) == 1 and _count(metrics, "/v1/embeddings", 500) == 0
    assert not errors


@pytest.mark.parametrize("truncate", [False, True])
def test_big_bodies_leave_the_event_loop_to_other_clients(tiny_llama: Path, reference: LM2Vec, truncate: bool) -> None:
    """A 1 MB input takes the tiny tokenizer about half a second (refused as too long, or cut with --truncate):
    while four are in flight, /health and a small embedding are answered in a fraction of the time one takes
    alone (before, both waited for the event loop to tokenize them: seconds)."""
    name = tiny_llama.name
    big_text = "cat " * 250_000
    big = {"input": big_text, "model": name}
    with serving(tiny_llama, truncate=truncate) as url:
        started = time.monotonic()
        status, answer = request(url, "POST", "/v1/embeddings", big)
        alone = time.monotonic() - started
        assert status == (200 if truncate else 400), answer
        if truncate:  # what was cut away before encoding changes nothing: it is encode()'s embedding
            got = np.array(answer["data"][0]["embedding"])
            assert cosine(got, reference.encode(big_text, normalize=True)) >= 0.9999
        waits = []
        probes = (("GET", "/health", None), ("POST", "/v1/embeddings", {"input": "a dog", "model": name}))
        with ThreadPoolExecutor(max_workers=4) as pool:
            bigs = [pool.submit(request, url, "POST", "/v1/embeddings", big) for _ in range(4)]
            time.sleep(min(alone / 4, 0.5))  # the big requests are being read and tokenized
            while len(waits) < 20 and not all(future.done() for future in bigs):
                for method, path, body in probes:
                    started = time.monotonic()
                    assert request(url, method, path, body)[0] == 200
                    waits.append(time.monotonic() - started)
            assert {future.result()[0] for future in bigs} == {status}
    assert len(waits) >= 2 and max(waits) < alone / 2, (alone, waits)


def test_a_request_the_encoder_fails_on_gets_an_openai_shaped_500(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("the encoder broke")

    with serving(tiny_llama) as url:
        with monkeypatch.context() as patched:
            patched.setattr(LM2Vec, "encode", broken)
            got, answer = request(url, "POST", "/v1/embeddings", {"input": "a cat", "model": tiny_llama.name})
        assert got == 500 and isinstance(answer, dict), answer
        assert answer["error"]["type"] == "server_error" and answer["error"]["message"]
        assert request(url, "POST", "/v1/embeddings", {"input": "a cat", "model": tiny_llama.name})[0] == 200


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--batch-tokens", "10"], "batch_tokens (10) must hold one input of 512 tokens"),
        (["--max-input-tokens", "600"], "max_input_tokens must be in [2, 512]"),
        (["--port", "70000"], "port must be in [0, 65535], got 70000"),
        (["--port", "-1"], "port must be in [0, 65535], got -1"),
        (["--max-wait-ms", "nan"], "max_wait_ms must be in [0, 60000]"),
        (["--shutdown-timeout-s", "0"], "shutdown_timeout_s must be in (0, 3600]"),
        (["--api-key", " key"], "api_key must be printable ASCII"),
        (["--backend", "onnx", "--worker-processes"], "worker_processes runs torch's passes"),
    ],
)
def test_serve_refuses_impossible_values_for_the_model_before_loading_it(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, option: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from lm2vec.cli import app

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(LM2Vec, "from_pretrained", refuse)
    result = CliRunner().invoke(app, ["serve", str(tiny_llama), *option])
    assert result.exit_code == 2 and f"error: {message}" in result.output, result.output
    assert "serving" not in result.output and "Traceback" not in result.output


def test_serve_refuses_a_busy_port_before_loading_the_model(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from lm2vec.cli import app

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(LM2Vec, "from_pretrained", refuse)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(tiny_llama), "--port", str(port)])
    assert result.exit_code == 2 and f"error: 127.0.0.1:{port} is already in use" in result.output, result.output
    assert "serving" not in result.output


def test_serve_help_steers_the_api_key_to_the_environment() -> None:
    from typer.testing import CliRunner

    from lm2vec.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    help_text = " ".join(result.output.replace("│", " ").split())
    assert "shows in `ps`: prefer the LM2VEC_API_KEY environment variable" in help_text, help_text
