"""Dynamic batching: inputs of concurrent requests are coalesced and encoded together by `workers` threads.

One thread keeps every waiting input in one pool and gives the next batch to an encoding worker whenever one is
free. A request that finds the pool empty waits up to `max_wait_s` for others to share its batch; otherwise nobody
waits: before each forward pass the pool takes whatever has arrived. The pool, sorted by length, is cut into the
batches that pad least (`cheapest_cut`, at most `batch_size` inputs and `batch_tokens` padded tokens each), and the
batch holding the oldest request's longest input runs next: requests are served in arrival order while each pass
pads little, the less the more is waiting. A request is answered as soon as its last input is encoded. Several
workers run passes at once, torch's threads divided among them (an ONNX session's too). Worker threads pay where
a pass runs outside the GIL (the onnx backend: one onnxruntime call); torch passes take the GIL at every operator,
so on the CPU they run in worker processes, which share the encoder's weights (torch's shared memory: one copy)
and no GIL with the server (benchmarks/README.md, "Serving and search"). Each batch goes through
`LM2Vec.encode`, the one encode path, so a served embedding is what `encode()` gives for the same input whatever it
was batched with (int8 ONNX too: its activations are quantized per token). A request whose client has gone before
any of its inputs is encoded is dropped; one that has started is finished, so no batch ever waits on a client."""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.multiprocessing  # registers the reductions that send tensors to worker processes as shared memory

from lm2vec.modeling.encoder import EncoderInput
from lm2vec.modeling.onnx import OnnxBackbone

# What a forward pass costs beyond its padded tokens, in tokens: SmolLM2-135M on 2 CPU cores takes about 1 ms a
# token plus 20-50 ms a pass (1 x 8 tokens: 52 ms; 32 x 16: 500 ms), so many tiny passes cost more than some padding.
PASS_COST_TOKENS = 32


@dataclass
class _Job:
    inputs: Sequence[EncoderInput]
    lengths: Sequence[int]  # tokens per input, as `LM2Vec.tokenize` counts them
    number: int  # arrival order
    future: Future = field(default_factory=Future)
    started: bool = False
    results: list = field(default_factory=list)
    remaining: int = 0


@dataclass(frozen=True)
class _Input:
    job: _Job
    index: int

    @property
    def length(self) -> int:
        return self.job.lengths[self.index]


class DynamicBatcher:
    def __init__(
        self,
        encoder,
        batch_tokens: int = 16384,
        max_wait_s: float = 0.005,
        batch_size: int = 32,
        on_batch: Callable[[int, int], None] | None = None,
        workers: int = 1,
        processes: bool = False,
    ) -> None:
        if batch_tokens < encoder.config.max_length:
            raise ValueError(
                f"batch_tokens ({batch_tokens}) must hold one input of max_length ({encoder.config.max_length})"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.encoder, self.batch_tokens, self.max_wait_s = encoder, batch_tokens, max_wait_s
        # More inputs per pass do not run faster on CPUs but pad more: each pass pads to its longest input.
        self.batch_size = batch_size
        self.on_batch = on_batch  # called with (inputs, padded tokens) after each forward pass
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._numbers = itertools.count()
        self._free_workers = threading.Semaphore(workers)
        self._results_lock = threading.Lock()  # two passes may finish inputs of the same request at once
        # torch's threads divided among the workers: each worker thread or process sets its own OpenMP team size;
        # an ONNX session's pool is the session's, so it is sized once for all its concurrent passes.
        self._threads = max(1, torch.get_num_threads() // workers)
        if isinstance(getattr(encoder, "model", None), OnnxBackbone):
            encoder.model.set_num_threads(self._threads)
        self.workers, self.processes = workers, processes
        self._workers = self._start_workers()
        self._thread = threading.Thread(target=self._run, name="lm2vec-batcher", daemon=True)
        self._thread.start()

    def _start_workers(self) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(
                self.workers,
                thread_name_prefix="lm2vec-encode",
                initializer=_start_worker,
                initargs=(self.encoder, self._threads, None),
            )
        # spawn, not fork: a forked child would inherit the server's threads and locks mid-use.
        context = torch.multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self.encoder, self._threads, context.Barrier(self.workers)),
        )
        # One task each: a pool starts its processes on demand; the barrier holds every start-up until all
        # workers are up, so the server answers its first request at full speed.
        for warm_up in [executor.submit(_encode_batch, ["warm-up"]) for _ in range(self.workers)]:
            warm_up.result()
        return executor

    def submit(self, inputs: Sequence[EncoderInput], lengths: Sequence[int]) -> Future:
        """A future of the (len(inputs), dim) normalised embeddings."""
        job = _Job(inputs, lengths, next(self._numbers))
        self._queue.put(job)
        return job.future

    async def embed(self, inputs: Sequence[EncoderInput], lengths: Sequence[int]) -> np.ndarray:
        # Cancelling the awaiting task (a client gone) cancels the job if none of its inputs has been encoded.
        return await asyncio.wrap_future(self.submit(inputs, lengths))

    def close(self) -> None:
        """Encode what is waiting, then stop the workers."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        pool: list[_Input] = []
        stopping = False
        while pool or not stopping:
            if not pool:
                job = self._queue.get()
                if job is None:
                    break
                self._add(pool, job)
                stopping = self._gather(pool, time.monotonic() + self.max_wait_s)
            self._free_workers.acquire()  # the next batch is chosen when it can run, from all that waits by then
            stopping = self._gather(pool, None) or stopping
            batch = self._next_batch(pool)
            if batch:
                self._submit(batch)
            else:
                self._free_workers.release()
        self._workers.shutdown()

    def _submit(self, batch: list[_Input]) -> None:
        inputs = [item.job.inputs[item.index] for item in batch]
        try:
            try:
                future = self._workers.submit(_encode_batch, inputs)
            except BrokenExecutor:  # a worker process died (its pass's requests got the error): start new workers
                self._workers.shutdown(wait=False)
                self._workers = self._start_workers()
                future = self._workers.submit(_encode_batch, inputs)
        except Exception as error:  # no workers could start: this batch's requests get the error
            future = Future()
            future.set_exception(error)
        future.add_done_callback(lambda done: self._deliver(batch, done))

    def _add(self, pool: list[_Input], job: _Job) -> None:
        job.results, job.remaining = [None] * len(job.inputs), len(job.inputs)
        pool.extend(_Input(job, index) for index in range(len(job.inputs)))

    def _gather(self, pool: list[_Input], deadline: float | None) -> bool:
        """Add the requests that arrive until `deadline` while the pool fills less than one batch (None: the ones
        already waiting); True once `close` was called."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and (
                remaining <= 0 or len(pool) >= self.batch_size or sum(item.length for item in pool) >= self.batch_tokens
            ):
                return False
            try:
                job = self._queue.get_nowait() if remaining is None else self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            if job is None:
                return True
            self._add(pool, job)

    def _next_batch(self, pool: list[_Input]) -> list[_Input]:
        """The batch holding the oldest request's longest input, in the cheapest cut of the pool (`cheapest_cut`);
        requests cancelled before their first input was encoded leave the pool."""
        pool[:] = [item for item in pool if not item.job.future.done()]  # cancelled, or failed in another pass
        if not pool:
            return []
        pool.sort(key=lambda item: (-item.length, item.job.number))
        oldest = pool.index(min(pool, key=lambda item: (item.job.number, -item.length)))
        starts = cheapest_cut([item.length for item in pool], self.batch_size, self.batch_tokens)
        start = max(s for s in starts if s <= oldest)
        batch = pool[start : min([s for s in starts if s > oldest] or [len(pool)])]
        for job in {id(item.job): item.job for item in batch}.values():
            if not job.started:
                job.started = job.future.set_running_or_notify_cancel()
        taken = {id(item) for item in batch}
        pool[:] = [item for item in pool if id(item) not in taken and not item.job.future.done()]
        return [item for item in batch if item.job.started]  # a request cancelled just now is dropped

    def _deliver(self, batch: list[_Input], done: Future) -> None:
        """A pass has ended: its requests get their vectors, or the pass's error."""
        self._free_workers.release()
        error = done.exception()
        if error is not None:  # the requests get the error and leave the pool; the workers keep serving
            with self._results_lock:
                for job in {item.job.number: item.job for item in batch}.values():
                    if not job.future.done():
                        job.future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(batch), len(batch) * max(item.length for item in batch))
        with self._results_lock:
            for item, vector in zip(batch, done.result(), strict=True):
                job = item.job
                job.results[item.index] = vector
                job.remaining -= 1
                if job.remaining == 0 and not job.future.done():  # answered now: its client's next request joins
                    job.future.set_result(np.stack(job.results))  # the pool while others encode


# The encoder of this worker thread or process: a pool calls its initializer and its tasks in the same thread.
_worker = threading.local()


def _start_worker(encoder, threads: int, all_started) -> None:
    torch.set_num_threads(threads)
    _worker.encoder = encoder
    if all_started is None:  # a thread of the server
        return
    # A worker process stops with its pool, not on the signals a terminal or a service manager sends the whole
    # process group (the server finishes the passes in flight first), and at once if the server is killed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(multiprocessing.parent_process(),), daemon=True).start()
    all_started.wait()


def _exit_with(server: multiprocessing.process.BaseProcess) -> None:
    multiprocessing.connection.wait([server.sentinel])
    os._exit(1)


def _encode_batch(inputs: list[EncoderInput]) -> np.ndarray:
    """One forward pass, in a worker."""
    return _worker.encoder.encode(inputs, batch_size=len(inputs), normalize=True)


def shared_memory_free_bytes() -> int | None:
    """Free bytes in /dev/shm, where torch puts the tensors it shares with worker processes (64 MB in a default
    Docker container); None where there is no /dev/shm."""
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def cheapest_cut(lengths: Sequence[int], batch_size: int, batch_tokens: int) -> list[int]:
    """Where to cut inputs sorted longest first into batches (each batch's first index) so that their padded
    tokens plus PASS_COST_TOKENS per pass are fewest, each batch within `batch_size` and `batch_tokens`. Cutting
    the sorted order is optimal among all groupings of the inputs, so this pads no more than any other batching."""
    count = len(lengths)
    cost, next_start = [0.0] * (count + 1), [count] * (count + 1)
    for start in range(count - 1, -1, -1):
        cost[start] = math.inf
        for end in range(start + 1, min(count, start + batch_size) + 1):
            padded = (end - start) * lengths[start]
            if padded > batch_tokens and end > start + 1:
                break
            if padded + PASS_COST_TOKENS + cost[end] < cost[start]:
                cost[start], next_start[start] = padded + PASS_COST_TOKENS + cost[end], end
    starts, position = [], 0
    while position < count:
        starts.append(position)
        position = next_start[position]
    return starts
