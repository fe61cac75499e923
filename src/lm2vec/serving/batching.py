"""Dynamic batching: inputs of concurrent requests are coalesced and encoded together by one worker thread.

The worker takes the first waiting request, then whatever else arrives within `max_wait_s` until `batch_tokens`
tokens or `round_inputs` inputs are waiting (a round), sorts the round's inputs by length and cuts them into
batches of at most `batch_size` inputs whose padded size stays within the budget. A request is answered as soon
as its last input is encoded, so its client's next request joins the next round while this one still encodes.
Each batch goes through `LM2Vec.encode`, the one encode path, so a served embedding is what `encode()` gives for
the same input whatever it was batched with. A request whose client has gone before its batch starts is dropped;
one that has started is finished, so no batch ever waits on a client."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from lm2vec.modeling.encoder import EncoderInput


@dataclass
class _Job:
    inputs: Sequence[EncoderInput]
    lengths: Sequence[int]  # tokens per input, as `LM2Vec.tokenize` counts them
    future: Future = field(default_factory=Future)


class DynamicBatcher:
    def __init__(self, encoder, batch_tokens: int = 16384, max_wait_s: float = 0.005, batch_size: int = 32,
                 on_batch: Callable[[int, int], None] | None = None, round_inputs: int = 128) -> None:  # fmt: skip
        if batch_tokens < encoder.config.max_length:
            raise ValueError(f"batch_tokens ({batch_tokens}) must hold one input of max_length "
                             f"({encoder.config.max_length})")  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.encoder, self.batch_tokens, self.max_wait_s = encoder, batch_tokens, max_wait_s
        # More inputs per pass do not run faster on CPUs but pad more: each pass pads to its longest input.
        self.batch_size = batch_size
        # A round of all waiting inputs pads least but answers everyone at its end, and the model then idles
        # while the clients send again; a few batches a round keep it busy at little extra padding.
        self.round_inputs = round_inputs
        self.on_batch = on_batch  # called with (inputs, padded tokens) after each forward pass
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lm2vec-batcher", daemon=True)
        self._thread.start()

    def submit(self, inputs: Sequence[EncoderInput], lengths: Sequence[int]) -> Future:
        """A future of the (len(inputs), dim) normalised embeddings."""
        job = _Job(inputs, lengths)
        self._queue.put(job)
        return job.future

    async def embed(self, inputs: Sequence[EncoderInput], lengths: Sequence[int]) -> np.ndarray:
        # Cancelling the awaiting task (a client gone) cancels the job if its batch has not started.
        return await asyncio.wrap_future(self.submit(inputs, lengths))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            jobs, waiting, count = [job], sum(job.lengths), len(job.inputs)
            deadline = time.monotonic() + self.max_wait_s
            while (waiting < self.batch_tokens and count < self.round_inputs
                   and (remaining := deadline - time.monotonic()) > 0):  # fmt: skip
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this round
                    break
                jobs.append(job)
                waiting, count = waiting + sum(job.lengths), count + len(job.inputs)
            self._encode([job for job in jobs if job.future.set_running_or_notify_cancel()])

    def _encode(self, jobs: list[_Job]) -> None:
        items = [(job, i) for job in jobs for i in range(len(job.inputs))]
        items.sort(key=lambda item: -item[0].lengths[item[1]])
        batches: list[list[tuple[_Job, int]]] = []
        for item in items:
            # Sorted longest first: a batch's padded size is its first input's length times its size.
            current = batches[-1] if batches else []
            longest = current[0][0].lengths[current[0][1]] if current else 0
            if current and len(current) < self.batch_size and (len(current) + 1) * longest <= self.batch_tokens:
                current.append(item)
            else:
                batches.append([item])
        results: dict[int, list] = {id(job): [None] * len(job.inputs) for job in jobs}
        remaining = {id(job): len(job.inputs) for job in jobs}
        try:
            for batch in batches:
                inputs = [job.inputs[i] for job, i in batch]
                vectors = self.encoder.encode(inputs, batch_size=len(batch), normalize=True)
                if self.on_batch is not None:
                    self.on_batch(len(batch), len(batch) * batch[0][0].lengths[batch[0][1]])
                for (job, i), vector in zip(batch, vectors, strict=True):
                    results[id(job)][i] = vector
                    remaining[id(job)] -= 1
                    if remaining[id(job)] == 0:
                        # answered now, not after the whole round: its client's next request can join the
                        # next round while this one is still encoding, so the model does not idle between rounds
                        job.future.set_result(np.stack(results[id(job)]))
        except Exception as error:  # the requests get the error; the worker keeps serving
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
