"""The `lm2vec serve` options: `ServeOptions`, apart from the app so that the CLI builds its options without
importing FastAPI."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeOptions:
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
    max_wait_ms: float = field(
        default=5.0,
        metadata={"help": "how long a request that finds the server idle waits for others to share its batch, in ms"},
    )
    max_k: int = field(default=100, metadata={"help": "most passages one search may ask for"})
    shutdown_timeout_s: float = field(
        default=10.0,
        metadata={"help": "on SIGTERM, how long requests in flight may take to finish before they are cancelled"},
    )

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_body_bytes", "batch_tokens", "batch_size", "max_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        # Written so that NaN fails too; a longer wait than these is no batching window but a stalled server.
        if not 0 <= self.max_wait_ms <= 60_000:
            raise ValueError(f"max_wait_ms must be in [0, 60000], got {self.max_wait_ms}.")
        if not 0 < self.shutdown_timeout_s <= 3600:
            raise ValueError(f"shutdown_timeout_s must be in (0, 3600], got {self.shutdown_timeout_s}.")
        if self.max_input_tokens is not None and self.max_input_tokens < 2:
            raise ValueError(f"max_input_tokens must be at least 2, got {self.max_input_tokens}.")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty: give a key, or none for a service without one.")
        # A client's header is read as ASCII and stripped: any other key could never match.
        if self.api_key is not None and not (
            self.api_key.isascii() and self.api_key.isprintable() and self.api_key == self.api_key.strip()
        ):
            raise ValueError("api_key must be printable ASCII without leading or trailing spaces.")
