"""lm2vec serve under load, and lm2vec index on the whole BBC News corpus, on 127.0.0.1 with the packaged SmolLM2.

    .venv/bin/python benchmarks/serve.py load  --rounds 2   # 32 clients x 4 requests x 8 STS-B sentences
    .venv/bin/python benchmarks/serve.py load --model ENCODER_FOLDER --backends torch onnx   # int8 ONNX beside torch
    .venv/bin/python benchmarks/serve.py index              # index all 2225 BBC articles (--every 10: a tenth)

`load` starts `lm2vec serve MODEL --backend B` in its own process for each of `--backends` (onnx runs
`--onnx-file` of an encoder folder written by `lm2vec convert SOURCE OUT --onnx`); each round, for each backend,
encodes the very texts the clients will send with offline `encode()` of the same backend (batch 32, in a fresh
process, the servers idle) and lets 32 client threads (the real `openai` client) send their fixed requests at
once, alternating which side goes first. Throughput is sentences/s over the whole load; latency is per request;
CPU seconds are each process's own (utime + stime; the server's with its worker processes), a measure that other
jobs on the machine disturb less than wall time; padded tokens are what the forward passes ran (offline:
`encode()`'s batches of 32 of the length-sorted texts; served: `/metrics`); peak RSS is VmHWM; the server's memory
with its worker processes is their summed PSS after the load (shared memory counted once). The two sides run one
after the other in each round, so their ratio is measured side by side, on whatever else the machine was doing at
that moment.

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
def start_server(port: int, args: argparse.Namespace, backend: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lm2vec", "serve", args.model, "--port", str(port), "--name", "smollm2"]
    command += ["--backend", backend, "--onnx-file", args.onnx_file, *args.serve_args.split()]
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


def process_tree(pid: int) -> list[int]:
    """`pid` and the processes it started, theirs too (the server's encoding worker processes)."""
    tree = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            tree += process_tree(int(child))
    return tree


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its running descendants."""
    total = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pss_mib(pid: int) -> float:
    """Proportional set size of `pid` and its descendants: memory they share (the model in shared memory) counts
    once, split among them."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def offline_worker(args: argparse.Namespace) -> None:
    """`encode()` of the load test's texts in a fresh process, as `lm2vec encode` would run it."""
    from lm2vec import LM2Vec

    texts = sts_sentences()[: args.count]
    encoder = LM2Vec.from_pretrained(args.model, device="cpu", backend=args.backends[0], onnx_file=args.onnx_file)
    encoder.encode(texts[:32], batch_size=32)  # warm-up, as the server gets one
    lengths = sorted((len(item.input_ids) for item in encoder.tokenize(texts)), reverse=True)
    started, cpu = time.perf_counter(), time.process_time()
    embeddings = encoder.encode(texts, batch_size=32, normalize=True)
    result = {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mib": vm_hwm_mib(),
        "passes": -(-len(texts) // 32),
        "padded_tokens": sum(len(lengths[start : start + 32]) * lengths[start] for start in range(0, len(texts), 32)),
    }
    np.save(OUT / "offline.npy", embeddings)
    (OUT / "offline.json").write_text(json.dumps(result))


def run_offline(count: int, args: argparse.Namespace, backend: str) -> tuple[dict[str, Any], np.ndarray]:
    subprocess.run(
        [sys.executable, __file__, "offline", "--count", str(count), "--model", args.model, "--backends", backend]
        + ["--onnx-file", args.onnx_file],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads((OUT / "offline.json").read_text()), np.load(OUT / "offline.npy")


def server_metrics(port: int) -> dict[str, float]:
    """The batcher's counters from /metrics: forward passes, their inputs and padded tokens so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        text = response.read().decode()
    names = ("lm2vec_batch_inputs_sum", "lm2vec_batch_inputs_count", "lm2vec_batch_padded_tokens_sum")
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith(names)}


def load_round(
    args: argparse.Namespace, backend: str, port: int, server: subprocess.Popen, requests: list, served_first: bool
) -> dict[str, Any]:
    """One backend's offline `encode()` and served load on the same texts, in the order asked."""
    count = sum(len(texts) for client in requests for texts in client)
    if not served_first:
        offline, expected = run_offline(count, args, backend)
    before, cpu, client_cpu = server_metrics(port), process_cpu_seconds(server.pid), time.process_time()
    wall, latencies, served = run_clients(port, requests)
    server_cpu = process_cpu_seconds(server.pid) - cpu
    client_cpu = time.process_time() - client_cpu  # the 32 clients share the server's cores
    after = server_metrics(port)
    if served_first:
        offline, expected = run_offline(count, args, backend)
    agreement = (served * expected).sum(-1) / np.linalg.norm(served, axis=-1)
    passes = after["lm2vec_batch_inputs_count"] - before["lm2vec_batch_inputs_count"]
    result = {
        "backend": backend,
        "served_first": served_first,
        "offline_sentences_per_s": count / offline["seconds"],
        "served_sentences_per_s": count / wall,
        **percentiles(latencies),
        "offline_cpu_seconds": offline["cpu_seconds"],
        "server_cpu_seconds": server_cpu,
        "client_cpu_seconds": client_cpu,
        "offline_passes": offline["passes"],
        "served_passes": passes,
        "offline_padded_tokens": offline["padded_tokens"],
        "served_padded_tokens": after["lm2vec_batch_padded_tokens_sum"] - before["lm2vec_batch_padded_tokens_sum"],
        "offline_peak_rss_mib": offline["peak_rss_mib"],
        "min_cosine_served_vs_encode": float(agreement.min()),
        "load_average_1min": os.getloadavg()[0],
    }
    result["ratio"] = result["served_sentences_per_s"] / result["offline_sentences_per_s"]
    return result


def load_test(args: argparse.Namespace) -> dict[str, Any]:
    per_client = args.requests * args.batch
    texts = sts_sentences()[: args.clients * per_client]
    requests = [
        [texts[c * per_client + r * args.batch :][: args.batch] for r in range(args.requests)]
        for c in range(args.clients)
    ]
    servers: dict[str, tuple[int, subprocess.Popen]] = {}
    rounds: dict[str, list[dict[str, Any]]] = {backend: [] for backend in args.backends}
    try:
        for backend in args.backends:  # all up before the first round: an idle server costs no CPU
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            servers[backend] = port, start_server(port, args, backend)
            run_clients(port, [[texts[:32]]])  # warm-up: first-request costs are not part of the load
        for number in range(args.rounds):
            for backend, (port, server) in servers.items():
                # alternate which side goes first
                rounds[backend].append(load_round(args, backend, port, server, requests, number % 2 == 1))
                print(json.dumps(rounds[backend][-1]), flush=True)
        batches = {backend: server_metrics(port) for backend, (port, _) in servers.items()}
        server_rss = {backend: vm_hwm_mib(server.pid) for backend, (_, server) in servers.items()}
        server_pss = {backend: pss_mib(server.pid) for backend, (_, server) in servers.items()}
        server_processes = {backend: len(process_tree(server.pid)) for backend, (_, server) in servers.items()}
    finally:
        for _, server in servers.values():
            server.terminate()
            server.wait(timeout=60)
    return {
        "model": args.model,
        "onnx_file": args.onnx_file if "onnx" in args.backends else None,
        "serve_args": args.serve_args,
        "sentences": len(texts),
        "clients": args.clients,
        "requests_per_client": args.requests,
        "sentences_per_request": args.batch,
        "backends": {
            backend: {
                "rounds": rounds[backend],
                "median_ratio": statistics.median(r["ratio"] for r in rounds[backend]),
                "worst_ratio": min(r["ratio"] for r in rounds[backend]),
                "server_peak_rss_mib": server_rss[backend],  # the serving process alone
                "server_pss_mib_after_load": server_pss[backend],  # its worker processes included
                "server_processes": server_processes[backend],
                "mean_inputs_per_forward_pass": batches[backend]["lm2vec_batch_inputs_sum"]
                / batches[backend]["lm2vec_batch_inputs_count"],
            }
            for backend in args.backends
        },
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
    parser.add_argument("--model", default=MODEL, help="load: the encoder served (onnx: a folder with ONNX files)")
    parser.add_argument("--backends", nargs="+", choices=["torch", "onnx"], default=["torch"])
    parser.add_argument("--onnx-file", default="onnx/model_qint8_avx2.onnx", help="the onnx backend's file")
    parser.add_argument("--serve-args", default="", help="load: more `lm2vec serve` options, e.g. '--workers 1'")
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
