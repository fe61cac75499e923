"""lm2vec serve under load, and lm2vec index on the whole BBC News corpus, on 127.0.0.1 with the packaged SmolLM2.

    .venv/bin/python benchmarks/serve.py load  --rounds 2   # 32 clients x 4 requests x 8 STS-B sentences
    .venv/bin/python benchmarks/serve.py index              # index all 2225 BBC articles (--every 10: a tenth)

`load` starts `lm2vec serve pkg:smollm2` in its own process; each round encodes the very texts the clients will
send with offline `encode()` (batch 32, in a fresh process, the server idle) and lets 32 client threads (the real
`openai` client) send their fixed requests at once, alternating which side goes first. Throughput is sentences/s
over the whole load; latency is per request; CPU seconds are each process's own (utime + stime), a measure that
other jobs on the machine disturb less than wall time; peak RSS is VmHWM. The two sides run one after the other in
each round, so their ratio is measured side by side, on whatever else the machine was doing at that moment.

`index` times `build_index` over every BBC article (`lm2vec.data.packaged.bbc_dir`), then searches it with the
unique STS-B dev sentences as queries: FAISS alone, and query encoding plus FAISS (what `lm2vec search` does after
loading). Outputs go to `$LM2VEC_BENCH_DIR/serve` (default `~/.cache/lm2vec-bench/serve`), not into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get("LM2VEC_BENCH_DIR", Path.home() / ".cache" / "lm2vec-bench")) / "serve"
MODEL = "pkg:smollm2"


def sts_sentences() -> list[str]:
    from lm2vec.data.formats import read_sts
    from lm2vec.data.packaged import stsb_dir

    data = read_sts(stsb_dir() / "sts-dev.csv")
    return list(dict.fromkeys(data.sentences1 + data.sentences2))


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50_ms": 1000 * p50, "p95_ms": 1000 * p95, "p99_ms": 1000 * p99}


def vm_hwm_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


# --- load test -------------------------------------------------------------------------------------------------
def start_server(port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "lm2vec", "serve", MODEL, "--port", str(port), "--name", "smollm2"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    server.stdout.readline()  # printed just before uvicorn starts
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start")


def run_clients(port: int, requests: list[list[list[str]]]) -> tuple[float, list[float], np.ndarray]:
    """Every client sends its requests one after the other; (wall seconds, latencies, embeddings in order)."""
    import openai

    barrier = threading.Barrier(len(requests) + 1)
    latencies: list[float] = []
    results: dict[tuple[int, int], np.ndarray] = {}

    def client(number: int) -> None:
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=600)
        barrier.wait()
        for position, texts in enumerate(requests[number]):
            started = time.perf_counter()
            response = api.embeddings.create(input=texts, model="smollm2")
            latencies.append(time.perf_counter() - started)
            results[number, position] = np.array([item.embedding for item in response.data], dtype=np.float32)

    threads = [threading.Thread(target=client, args=(number,)) for number in range(len(requests))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = [results[n, p] for n in range(len(requests)) for p in range(len(requests[n]))]
    return wall, latencies, np.concatenate(ordered)


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def offline_worker(args: argparse.Namespace) -> None:
    """`encode()` of the load test's texts in a fresh process, as `lm2vec encode` would run it."""
    from lm2vec import LM2Vec

    texts = sts_sentences()[: args.count]
    encoder = LM2Vec.from_pretrained(MODEL, device="cpu")
    encoder.encode(texts[:32], batch_size=32)  # warm-up, as the server gets one
    started, cpu = time.perf_counter(), time.process_time()
    embeddings = encoder.encode(texts, batch_size=32, normalize=True)
    result = {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mib": vm_hwm_mib(),
    }
    np.save(OUT / "offline.npy", embeddings)
    (OUT / "offline.json").write_text(json.dumps(result))


def run_offline(count: int) -> tuple[dict[str, Any], np.ndarray]:
    subprocess.run(
        [sys.executable, __file__, "offline", "--count", str(count)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads((OUT / "offline.json").read_text()), np.load(OUT / "offline.npy")


def load_test(args: argparse.Namespace) -> dict[str, Any]:
    per_client = args.requests * args.batch
    texts = sts_sentences()[: args.clients * per_client]
    requests = [
        [texts[c * per_client + r * args.batch :][: args.batch] for r in range(args.requests)]
        for c in range(args.clients)
    ]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_server(port)
    rounds = []
    try:
        run_clients(port, [[texts[:32]]])  # warm-up: first-request costs are not part of the load
        for number in range(args.rounds):
            if number % 2 == 0:  # alternate which side goes first
                offline, expected = run_offline(len(texts))
            cpu, client_cpu = process_cpu_seconds(server.pid), time.process_time()
            wall, latencies, served = run_clients(port, requests)
            server_cpu = process_cpu_seconds(server.pid) - cpu
            client_cpu = time.process_time() - client_cpu  # the 32 clients share the server's cores
            if number % 2 == 1:
                offline, expected = run_offline(len(texts))
            agreement = (served * expected).sum(-1) / np.linalg.norm(served, axis=-1)
            rounds.append(
                {
                    "offline_sentences_per_s": len(texts) / offline["seconds"],
                    "served_sentences_per_s": len(texts) / wall,
                    **percentiles(latencies),
                    "offline_cpu_seconds": offline["cpu_seconds"],
                    "server_cpu_seconds": server_cpu,
                    "client_cpu_seconds": client_cpu,
                    "offline_peak_rss_mib": offline["peak_rss_mib"],
                    "min_cosine_served_vs_encode": float(agreement.min()),
                }
            )
            rounds[-1]["ratio"] = rounds[-1]["served_sentences_per_s"] / rounds[-1]["offline_sentences_per_s"]
            print(json.dumps(rounds[-1]), flush=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = response.read().decode()
        server_rss = vm_hwm_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    batches = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith(("lm2vec_batch_inputs_sum", "lm2vec_batch_inputs_count"))
    }
    return {
        "sentences": len(texts),
        "clients": args.clients,
        "requests_per_client": args.requests,
        "sentences_per_request": args.batch,
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "server_peak_rss_mib": server_rss,
        "mean_inputs_per_forward_pass": batches["lm2vec_batch_inputs_sum"] / batches["lm2vec_batch_inputs_count"],
    }


# --- index ------------------------------------------------------------------------------------------------------
def index_test(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from lm2vec.data.packaged import bbc_dir
    from lm2vec.serving.documents import ChunkingOptions
    from lm2vec.serving.index import SearchIndex, WriteOptions, build_index, load_index_model

    folder = OUT / "bbc-index"
    if (folder / "lm2vec_index.json").is_file():  # this script's own index of an earlier run
        shutil.rmtree(folder)
    articles = sorted(bbc_dir().glob("*/*.txt"))[:: args.every]  # every article with --every 1
    started, cpu = time.perf_counter(), time.process_time()
    report = build_index(articles, MODEL, folder, ChunkingOptions(), WriteOptions(), device="cpu")
    print(report.summary(folder), flush=True)
    build_seconds, build_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    store = SearchIndex(folder)
    encoder = load_index_model(store.model, "cpu")
    queries = sts_sentences()[: args.queries]
    vectors = encoder.encode(queries, normalize=True)
    faiss_only, end_to_end = [], []
    for query, vector in zip(queries, vectors, strict=True):
        started = time.perf_counter()
        store.search(vector[None], 10)
        faiss_only.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.search(encoder.encode([query], normalize=True), 10)
        end_to_end.append(time.perf_counter() - started)
    tokens = sum(len(ids) for ids in encoder.tokenizer([p["text"] for p in store.passages])["input_ids"])
    return {
        "documents": report.documents,
        "every_nth_article": args.every,
        "passages": len(store),
        "tokens": tokens,
        "index_kind": report.index_kind,
        "build_seconds": build_seconds,
        "passages_per_s": report.encoded / build_seconds,
        # CPU seconds of every thread: what the build costs whatever else shares the machine
        "build_cpu_seconds": build_cpu_seconds,
        "passages_per_cpu_s": report.encoded / build_cpu_seconds,
        "faiss_threads": faiss.omp_get_max_threads(),
        "queries": len(queries),
        "search_faiss_only": percentiles(faiss_only),
        "search_with_query_encoding": percentiles(end_to_end),
        "peak_rss_mib": vm_hwm_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["load", "index", "offline"])
    parser.add_argument("--count", type=int, default=0, help="offline: the worker of `load`, this many texts")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--batch", type=int, default=8, help="sentences per request")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--every", type=int, default=1, help="index: every n-th BBC article (1: the whole corpus)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.part == "offline":
        return offline_worker(args)
    result = load_test(args) if args.part == "load" else index_test(args)
    (OUT / f"{args.part}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
