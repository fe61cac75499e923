"""`lm2vec serve` as a process of its own, under faults: SIGTERM under load, kill -9 under load and a restart, a
stdout nobody reads any more with a client stalled mid-body. The tiny random encoder, served as "tiny", and a
small index."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lm2vec.serving.documents import ChunkingOptions
from lm2vec.serving.index import SearchIndex, WriteOptions, build_index
from tests.test_faults import is_gone

REPO = Path(__file__).resolve().parents[1]
WORDS = "the a cat dog sat on mat ran fast slow red blue green house tree car road city river big small".split()
TEXTS = ["the cat sat on the mat .", "a dog ran fast", "music", "the big red car is on the road in the city"]
DIMENSION = 32  # the tiny encoder's


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(model: Path, port: int, log: Path, *options: str) -> subprocess.Popen:
    """`lm2vec serve MODEL` on 127.0.0.1:PORT, its stderr in `log`; returned once its first line is printed and
    /health answers."""
    environment = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with log.open("a") as stderr:
        command = [
            sys.executable,
            "-m",
            "lm2vec",
            "serve",
            str(model),
            "--port",
            str(port),
            "--name",
            "tiny",
            "--max-input-tokens",
            "32",
            *options,
        ]
        process = subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True
        )
    line = process.stdout.readline()
    assert line.startswith("serving ") and f"127.0.0.1:{port}" in line, (line, log.read_text())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if call(port, "GET", "/health")[0] == 200:
                return process
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the server did not answer /health: {log.read_text()}")


def call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            method, path, body=json.dumps(body) if body else None, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def embed(port: int, texts: list[str]) -> np.ndarray:
    status, answer = call(port, "POST", "/v1/embeddings", {"input": texts, "model": "tiny", "encoding_format": "float"})
    assert status == 200, answer
    return np.array([item["embedding"] for item in answer["data"]])


def attempt(port: int, texts: list[str]) -> str:
    """One embedding request: "answered" (200, one well-formed embedding per text), "refused" (no connection, the
    connection closed before any byte of an answer, or 503), else what was wrong with the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        try:
            connection.request(
                "POST",
                "/v1/embeddings",
                body=json.dumps({"input": texts, "model": "tiny"}),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
        except ConnectionError:  # refused, reset or closed before the status line (RemoteDisconnected)
            return "refused"
        try:
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            return f"half-written answer ({error!r})"
    finally:
        connection.close()
    if response.status == 503:
        return "refused"
    try:
        data = json.loads(body)["data"]
        well_formed = len(data) == len(texts) and all(len(item["embedding"]) == DIMENSION for item in data)
    except (ValueError, KeyError, TypeError):
        well_formed = False
    return "answered" if response.status == 200 and well_formed else f"status {response.status}: {body[:200]!r}"


class Load:
    """`clients` threads, each sending up to `requests` embedding requests one after the other and stopping at
    the first that is not answered."""

    def __init__(self, port: int, clients: int = 4, requests: int = 40) -> None:
        self.answered = threading.Semaphore(0)
        self._pool = ThreadPoolExecutor(max_workers=clients)
        self._clients = [self._pool.submit(self._client, port, seed, requests) for seed in range(clients)]

    def _client(self, port: int, seed: int, requests: int) -> list[str]:
        generator = np.random.default_rng(seed)
        outcomes: list[str] = []
        for _ in range(requests):
            texts = [" ".join(generator.choice(WORDS, size=generator.integers(1, 31))) for _ in range(1 + seed)]
            outcomes.append(attempt(port, texts))
            if outcomes[-1] != "answered":
                break
            self.answered.release()
        return outcomes

    def wait_for_answers(self, count: int) -> None:
        for _ in range(count):
            assert self.answered.acquire(timeout=30), "the load got no answers"

    def outcomes(self) -> list[str]:
        results = [outcome for client in self._clients for outcome in client.result(timeout=60)]
        self._pool.shutdown()
        return results


def children(pid: int) -> set[int]:
    """The processes `pid` started that are still running: its encoding workers and multiprocessing's helper."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def wait_until_gone(pids: set[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not all(is_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(is_gone(pid) for pid in pids)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def index(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lm2vec.data.packaged import bbc_dir

    folder = tmp_path_factory.mktemp("index") / "index"
    articles = [sorted((bbc_dir() / topic).glob("*.txt"))[0] for topic in ("tech", "sports")]
    build_index(articles, str(tiny_llama), folder, ChunkingOptions(24, 6), WriteOptions(), echo=lambda _: None)
    return folder


def test_sigterm_under_load_answers_or_refuses_cleanly_and_exits_0(tiny_llama: Path, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    process = start(tiny_llama, port, log)
    try:
        workers = children(process.pid)
        assert workers, "no encoding worker processes"
        load = Load(port)
        load.wait_for_answers(8)
        os.killpg(process.pid, signal.SIGTERM)  # to the whole group, as systemd stops a service: workers too
        assert process.wait(timeout=30) == 0, log.read_text()
        assert wait_until_gone(workers), "the encoding workers outlived their server"
    finally:
        process.kill()
        process.wait()
    outcomes = load.outcomes()
    assert set(outcomes) <= {"answered", "refused"}, [o for o in outcomes if o not in ("answered", "refused")]
    assert outcomes.count("answered") >= 8
    assert "Traceback" not in log.read_text(), log.read_text()


def test_kill_9_under_load_then_a_restart_serves_the_same_vectors_and_index(
    tiny_llama: Path, index: Path, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    before = file_hashes(index)
    passage = SearchIndex(index).passages[3]["text"]
    query = {"query": passage, "k": 3, "instruction": ""}
    process = start(tiny_llama, port, log, "--index", str(index))
    try:
        first_vectors = embed(port, TEXTS)
        first_hits = call(port, "POST", "/v1/search", query)[1]["data"]
        workers = children(process.pid)
        load = Load(port)
        load.wait_for_answers(8)
        process.kill()
        process.wait(timeout=30)
        assert wait_until_gone(workers), "the encoding workers outlived their killed server"
    finally:
        process.kill()
        process.wait()
    load.outcomes()  # a killed server may leave answers half-written: nothing to check in them
    process = start(tiny_llama, port, log, "--index", str(index))  # the same port, free again at once
    try:
        assert cosine(embed(port, TEXTS), first_vectors).min() >= 0.9999
        status, answer = call(port, "POST", "/v1/search", query)
        assert status == 200 and [hit["id"] for hit in answer["data"]] == [hit["id"] for hit in first_hits]
        vector = embed(port, [passage])
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert file_hashes(index) == before
    hits = SearchIndex(index).search(vector, 1)[0]
    assert hits[0].text == passage and hits[0].score > 0.9999


def test_sigterm_stops_a_server_whose_stdout_reader_has_gone(tiny_llama: Path, tmp_path: Path) -> None:
    """With nobody reading its stdout any more, an idle keep-alive connection and a client stalled mid-body, a
    SIGTERM still stops the server: at once for what is idle, after --shutdown-timeout-s for the stalled body."""
    port, log = free_port(), tmp_path / "serve.log"
    process = start(tiny_llama, port, log, "--shutdown-timeout-s", "2", "--no-worker-processes")
    try:
        process.stdout.close()  # the reader goes: from now on a write to stdout is a broken pipe
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        idle.request("GET", "/health")
        assert idle.getresponse().read()
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"input": '
            )
            time.sleep(0.2)
            stopping = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0, log.read_text()
        assert time.monotonic() - stopping < 10
        idle.close()
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in log.read_text(), log.read_text()
