"""The `lm2vec serve` options: `ServeOptions`, apart from the app so that the CLI builds its options without
importing FastAPI."""

from __future__ import annotations

from dataclasses import dataclass, field

from lm2vec.options import Options


@dataclass
class ServeOptions(Options):
    api_key: str | None = field(
        default=None,
        metadata={
            "help": "require `Authorization: Bearer KEY`; none: no key. A key given here shows in `ps`: prefer the "
            "LM2VEC_API_KEY environment variable",
            "envvar": "LM2VEC_API_KEY",
        },
    )
    max_inputs: int = field(default=256, metadata={"help": "most inputs in one request"})
    max_input_tokens: int | None = field(
        default=None,
        metadata={"help": "most tokens per input; none: the encoder's max_length"},
    )
    truncate: bool = field(default=False, metadata={"help": "truncate longer inputs instead of refusing the request"})
    max_body_bytes: int = field(default=4 << 20, metadata={"help": "largest request body in bytes"})
    batch_tokens: int = field(default=16384, metadata={"help": "token budget of one coalesced batch (padded)"})
    batch_size: int = field(default=32, metadata={"help": "most inputs in one forward pass"})
    workers: int | None = field(
        default=None,
        metadata={
            "help": "forward passes run at once, torch's threads divided among them; none: 2 with worker processes "
            "or the onnx backend (a pass is one onnxruntime call, free of the GIL), else 1 (torch passes in threads "
            "of the server take the GIL at every operator)"
        },
    )
    worker_processes: bool | None = field(
        default=None,
        metadata={
            "help": "run the forward passes in worker processes, which share the encoder's weights (one copy) but not "
            "the server's GIL; none: with the torch backend on the CPU"
        },
    )
    max_wait_ms: float = field(
        default=5.0,
        metadata={"help": "how long a request that finds the server idle waits for others to share its batch, in ms"},
    )
    max_k: int = field(default=100, metadata={"help": "most passages one search may ask for"})
    shutdown_timeout_s: float = field(
        default=10.0,
        metadata={"help": "on SIGTERM, how long requests in flight may take to finish before they are cancelled"},
    )
    backend: str = field(
        default="torch",
        metadata={"help": "torch, or onnx: run the model folder's ONNX file (`lm2vec convert --onnx`) on the CPU"},
    )
    onnx_file: str = field(
        default="onnx/model_qint8_avx2.onnx", metadata={"help": "the ONNX file the onnx backend runs, in the folder"}
    )

    def encoding_in_processes(self, encoder) -> bool:
        """`worker_processes`, or whether torch runs the passes on the CPU: its passes take the GIL at every
        operator, so in the server's threads they wait for the event loop and for each other (benchmarks/README.md);
        an onnxruntime pass leaves the GIL, and on a GPU it is held only while kernels are queued."""
        if self.worker_processes is not None:
            return self.worker_processes
        return self.backend == "torch" and encoder.device.type == "cpu"

    def encoding_workers(self, in_processes: bool) -> int:
        """`workers`, or 2 where passes run free of the GIL (two one-thread passes at once beat one two-thread pass
        on 2 cores: no OpenMP hand-offs), else 1."""
        return self.workers or (2 if in_processes or self.backend == "onnx" else 1)

    def checks(self) -> list[tuple[bool, str]]:
        from lm2vec.modeling.onnx import BACKENDS

        key = self.api_key
        blank_key = key is not None and not key.strip()
        return [
            *super().checks(),
            *(
                (getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}.")
                for name in ("max_inputs", "max_body_bytes", "batch_tokens", "batch_size", "max_k")
            ),
            (self.workers is None or self.workers >= 1, f"workers must be at least 1, got {self.workers}."),
            (
                not (self.worker_processes and self.backend == "onnx"),
                "worker_processes runs torch's passes; the onnx backend's already run free of the GIL in threads.",
            ),
            # Written so that NaN fails too; a longer wait than these is no batching window but a stalled server.
            (0 <= self.max_wait_ms <= 60_000, f"max_wait_ms must be in [0, 60000], got {self.max_wait_ms}."),
            (
                0 < self.shutdown_timeout_s <= 3600,
                f"shutdown_timeout_s must be in (0, 3600], got {self.shutdown_timeout_s}.",
            ),
            (
                self.max_input_tokens is None or self.max_input_tokens >= 2,
                f"max_input_tokens must be at least 2, got {self.max_input_tokens}.",
            ),
            (self.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}."),
            (not blank_key, "api_key is empty: give a key, or none for a service without one."),
            # A client's header is read as ASCII and stripped: any other key could never match.
            (
                key is None or blank_key or (key.isascii() and key.isprintable() and key == key.strip()),
                "api_key must be printable ASCII without leading or trailing spaces.",
            ),
        ]
