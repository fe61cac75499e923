"""The HTTP service: OpenAI's /v1/embeddings, /v1/search over an index, /v1/models, /health and /metrics.

FastAPI on uvicorn: the best-kept ASGI stack in Python, and OpenAI's own clients are tested against the same
schema conventions. Bodies are read and validated here (not by FastAPI) so that every refusal, the size limit
included, is an OpenAI-shaped error: `{"error": {"message", "type", "param", "code"}}` with a 4xx status (a 500 of
the same shape where the server fails). Work in proportion to a body's size (parsing, tokenizing, the answer's JSON)
runs in worker threads, never on the event loop, so one client's megabytes do not stall the others.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from lm2vec.errors import LM2VecError
from lm2vec.modeling.encoder import EncoderInput, TokenizedInput
from lm2vec.modeling.matryoshka import check_dimensions, truncate
from lm2vec.serving.batching import DynamicBatcher, shared_memory_free_bytes
from lm2vec.serving.options import ServeOptions

logger = logging.getLogger(__name__)

ENDPOINTS = ("/v1/embeddings", "/v1/search", "/v1/models", "/health", "/metrics")
# Work on bodies above this size (a tokenizer takes tens of ms on 64 KiB) takes turns in one worker thread.
LARGE_BODY_BYTES = 64 << 10
Result = TypeVar("Result")


class ServeError(LM2VecError, ValueError):
    """A server that cannot run as asked (a busy port, limits the model rules out), found before the model loads."""


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"error": error}, status_code=self.status, headers=headers)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(_Strict):
    input: StrictStr | list[StrictStr]
    model: StrictStr
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: StrictStr | None = None
    instruction: StrictStr | None = None  # lm2vec's own: attended to, not pooled


class SearchRequest(_Strict):
    query: StrictStr
    k: StrictInt = Field(default=5, ge=1)
    filter: dict[str, StrictStr | int | float | bool] | None = None
    instruction: StrictStr | None = None  # default: the instruction the model was trained with
    model: StrictStr | None = None


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lm2vec_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("lm2vec_request_seconds", "Request latency", ["endpoint"], registry=self.registry)
        self.tokens = Counter("lm2vec_input_tokens", "Tokens of the inputs embedded", registry=self.registry)
        buckets = [2**i for i in range(11)]
        self.batch_inputs = Histogram(
            "lm2vec_batch_inputs", "Inputs per forward pass", buckets=buckets, registry=self.registry
        )
        self.batch_tokens = Histogram(
            "lm2vec_batch_padded_tokens",
            "Padded tokens per forward pass",
            buckets=[2**i for i in range(4, 18)],
            registry=self.registry,
        )

    def observe_batch(self, inputs: int, padded_tokens: int) -> None:
        self.batch_inputs.observe(inputs)
        self.batch_tokens.observe(padded_tokens)


@dataclass
class Service:
    """What the app serves: an encoder under a name, optionally an index, and the serving limits."""

    name: str
    encoder: Any  # LM2Vec
    options: ServeOptions
    index: Any = None  # SearchIndex


def load_service(
    model: str, index: Path | None, options: ServeOptions, name: str | None = None, device: str | None = None
) -> Service:
    """Load the encoder (and the index, checked to belong to it) and apply the per-input token limit. The model
    source, the index and the limits against the model's configured max_length are checked first, before the
    model loads."""
    from lm2vec import LM2Vec
    from lm2vec.modeling.config import EncoderConfig
    from lm2vec.modeling.sources import check_source
    from lm2vec.serving.index import SearchIndex, check_same_model

    located = check_source(model)
    saved = EncoderConfig.from_folder(located) if isinstance(located, Path) and located.is_dir() else None
    input_token_limit(options, (saved or EncoderConfig()).max_length)  # the max_length from_pretrained will use
    store = SearchIndex(index) if index is not None else None
    encoder = LM2Vec.from_pretrained(model, device=device, backend=options.backend, onnx_file=options.onnx_file)
    if store is not None:
        check_same_model(store.model, model, encoder)
    # encode() truncates here, tokenize() flags what is longer
    encoder.config.max_length = input_token_limit(options, encoder.config.max_length)
    options = replace(options, worker_processes=worker_processes(options, encoder))
    return Service(name or Path(str(model)).name.removeprefix("pkg:"), encoder, options, store)


def worker_processes(options: ServeOptions, encoder) -> bool:
    """Whether the passes run in worker processes: as asked, else where torch runs them on the CPU; they share
    the weights through /dev/shm, so where the weights do not fit there the default falls back to threads and an
    explicit --worker-processes is a ServeError."""
    if not options.encoding_in_processes(encoder):
        return False
    weights = sum(tensor.nbytes for tensor in (*encoder.parameters(), *encoder.buffers()))
    free = shared_memory_free_bytes()
    if free is None or weights <= free:
        return True
    problem = f"the encoder's weights ({weights / 2**20:,.0f} MiB) do not fit /dev/shm ({free / 2**20:,.0f} MiB free)"
    if options.worker_processes:
        raise ServeError(f"{problem}: give it more (docker run --shm-size) or pass --no-worker-processes")
    logger.warning("%s: the forward passes run in a thread of the server instead (slower on the CPU)", problem)
    return False


def input_token_limit(options: ServeOptions, max_length: int) -> int:
    """The most tokens one input may have: `max_input_tokens`, else the model's `max_length`; a ServeError where
    the model rules it out or one batch could not hold such an input."""
    limit = max_length if options.max_input_tokens is None else options.max_input_tokens
    if not 2 <= limit <= max_length:
        raise ServeError(f"max_input_tokens must be in [2, {max_length}] (the model's max_length), got {limit}")
    if options.batch_tokens < limit:
        raise ServeError(
            f"batch_tokens ({options.batch_tokens}) must hold one input of {limit} tokens "
            "(max_input_tokens, else the model's max_length)"
        )
    return limit


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for uvicorn to listen on (port 0: a free one), taken before the model loads: a
    busy port or a bad address is a ServeError at once, and nothing can take the port while the model loads."""
    if not 0 <= port <= 65535:
        raise ServeError(f"port must be in [0, 65535], got {port}")
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    # As uvicorn's own bind: a restart need not wait for the last run's connections to leave TIME_WAIT.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ServeError(f"{host}:{port} is already in use") from None
        raise ServeError(f"cannot bind {host}:{port}: {error.strerror or error}") from None
    return listener


def create_app(service: Service) -> FastAPI:
    metrics = Metrics()
    options = service.options
    encoder = service.encoder
    state: dict[str, DynamicBatcher] = {}
    large_bodies = asyncio.Semaphore(1)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        in_processes = options.encoding_in_processes(encoder)
        state["batcher"] = DynamicBatcher(
            encoder,
            options.batch_tokens,
            options.max_wait_ms / 1000,
            options.batch_size,
            on_batch=metrics.observe_batch,
            workers=options.encoding_workers(in_processes),
            processes=in_processes,
        )
        yield
        await asyncio.to_thread(state["batcher"].close)

    app = FastAPI(title="lm2vec", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        return APIError(error.status_code, str(error.detail), code=code).response()

    @app.exception_handler(Exception)
    async def server_error(_request: Request, _error: Exception) -> JSONResponse:
        # Starlette raises the error again after this answer: the server log keeps its traceback.
        return APIError(
            500, "The server failed on this request; its log says why.", code="internal_error", kind="server_error"
        ).response()

    app.add_middleware(_CountRequests, metrics=metrics)

    def authorize(request: Request) -> None:
        if options.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        # compare_digest takes as long whatever the key's first wrong byte: nothing to learn from timing.
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), options.api_key.encode()):
            raise APIError(
                401, "Incorrect or missing API key: send `Authorization: Bearer KEY`.", code="invalid_api_key"
            )

    async def off_loop(size: int, work: Callable[..., Result], *args: Any) -> Result:
        """`work(*args)` in a worker thread, so that the event loop keeps answering. Work on a body over
        LARGE_BODY_BYTES takes turns in one lane: big bodies never hold every worker thread, small ones pass them."""
        if size <= LARGE_BODY_BYTES:
            return await asyncio.to_thread(work, *args)
        async with large_bodies:
            return await asyncio.to_thread(work, *args)

    async def read_body(request: Request, schema: type[BaseModel]) -> tuple[Any, int]:
        """The body as `schema`, and its size in bytes. Whatever is wrong with a body is an APIError: too large
        (413), its client gone before its end (499), or not a request (400, `_parse_body`)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > options.max_body_bytes:
            raise _too_large(options.max_body_bytes)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > options.max_body_bytes:
                    raise _too_large(options.max_body_bytes)
        except ClientDisconnect:
            raise _client_gone() from None
        return await off_loop(len(body), _parse_body, body, schema), len(body)

    def check_model(requested: str | None) -> None:
        if requested is not None and requested != service.name:
            raise APIError(
                404,
                f"The model {requested!r} does not exist; this server serves {service.name!r}.",
                param="model",
                code="model_not_found",
            )

    def tokenize_request(texts: list[str], instruction: str | None, param: str) -> tuple[list[EncoderInput], list[int]]:
        """The inputs as the batcher gets them and their token counts. An instruction that leaves no room for
        text is refused, so is an input over the limit unless --truncate: then it is cut to what is kept of it."""
        limit = encoder.config.max_length
        if instruction:
            alone = encoder.tokenize([(instruction, "")])[0]
            # A templated model keeps a template that overflows with no text at all untruncated: its length says.
            if alone.truncated or len(alone.input_ids) >= limit:
                raise APIError(
                    400,
                    f"instruction is too long: it leaves no room for text in {limit} tokens; shorten it.",
                    param="instruction",
                    code="context_length_exceeded",
                )
        items: list[EncoderInput] = [(instruction, text) for text in texts] if instruction else list(texts)
        tokenized = encoder.tokenize(items)
        if not options.truncate:
            for position, item in enumerate(tokenized):
                if item.truncated:
                    raise APIError(
                        400,
                        f"{param}[{position}] is longer than {limit} tokens; shorten it (this "
                        "server refuses rather than truncates).",
                        param=param,
                        code="context_length_exceeded",
                    )
        lengths = [len(item.input_ids) for item in tokenized]
        metrics.tokens.inc(sum(lengths))
        kept = [
            _cut_to_what_is_kept(encoder, item, tokens) if tokens.truncated else item
            for item, tokens in zip(items, tokenized, strict=True)
        ]
        return kept, lengths

    async def embed(request: Request, items: list, lengths: list[int]) -> np.ndarray:
        """Embeddings from the batcher; if the client goes first its job is cancelled (dropped if not started)."""
        work = asyncio.ensure_future(state["batcher"].embed(items, lengths))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not work.done():
            work.cancel()
            raise _client_gone()
        return work.result()  # an encoder's error is the 500 answer, `server_error`

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        authorize(request)
        body, size = await read_body(request, EmbeddingRequest)
        check_model(body.model)
        if body.dimensions is not None:
            try:
                check_dimensions(
                    body.dimensions, encoder.config.matryoshka_dims, encoder.get_sentence_embedding_dimension()
                )
            except ValueError as error:
                raise APIError(400, str(error), param="dimensions") from None
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise APIError(400, "input must not be an empty list.", param="input")
        if len(texts) > options.max_inputs:
            raise APIError(
                400, f"{len(texts)} inputs in one request; the limit is {options.max_inputs}.", param="input"
            )
        for position, text in enumerate(texts):
            if not text.strip():
                raise APIError(400, f"input[{position}] is empty.", param="input")
        items, lengths = await off_loop(size, tokenize_request, texts, body.instruction, "input")
        vectors = await embed(request, items, lengths)
        return await off_loop(size, _embeddings_answer, vectors, body, lengths, service.name)

    @app.post("/v1/search")
    async def search(request: Request) -> JSONResponse:
        authorize(request)
        if service.index is None:
            raise APIError(
                404, "No index is loaded: start the server with `lm2vec serve MODEL --index INDEX`.", code="no_index"
            )
        body, size = await read_body(request, SearchRequest)
        check_model(body.model)
        if not body.query.strip():
            raise APIError(400, "query is empty.", param="query")
        if body.k > options.max_k:
            raise APIError(400, f"k={body.k} is above the limit of {options.max_k}.", param="k")
        instruction = encoder.config.query_instruction if body.instruction is None else body.instruction
        items, lengths = await off_loop(size, tokenize_request, [body.query], instruction, "query")
        vectors = await embed(request, items, lengths)
        hits = await asyncio.to_thread(service.index.search, vectors, body.k, body.filter)
        usage = {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}
        return JSONResponse(
            {"object": "list", "data": [asdict(hit) for hit in hits[0]], "model": service.name, "usage": usage}
        )

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authorize(request)
        model = {"id": service.name, "object": "model", "created": 0, "owned_by": "lm2vec"}
        return JSONResponse({"object": "list", "data": [model]})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "index": service.index is not None})

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        authorize(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _CountRequests:
    """Pure ASGI middleware (no body buffering, disconnects pass through): requests and latency per endpoint. A
    request cancelled before its answer began (uvicorn cancels those still running shutdown_timeout_s after a
    SIGTERM) is answered 503, where it would be a traceback in the log and a plain-text 500."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), None

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except asyncio.CancelledError:
            if status is not None:
                raise
            shutting_down = APIError(
                503, "The server is shutting down; send the request again.", code="shutting_down", kind="server_error"
            )
            await shutting_down.response()(scope, receive, send_and_note)
        finally:
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status or 500)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")


def _client_gone() -> APIError:
    return APIError(499, "The client closed the connection.", code="client_closed_request")


def _parse_body(body: bytes | bytearray, schema: type[BaseModel]) -> Any:
    """`body` as `schema`, or the APIError (400) that says what is wrong with it."""
    try:
        data = json.loads(body)
        _refuse_lone_surrogates(data)
    except RecursionError:
        raise APIError(400, "The body nests deeper than JSON is parsed here.", code="invalid_json") from None
    except ValueError as error:  # not JSON, not UTF-8, or an integer of more digits than Python converts
        raise APIError(400, f"The body is not valid JSON ({error}).", code="invalid_json") from None
    if isinstance(data, dict) and isinstance(data.get("input"), list) and data["input"]:
        if all(isinstance(item, int) or isinstance(item, list) for item in data["input"]):
            raise APIError(400, "Token arrays are not supported: send the input as text.", param="input")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        param = str(first["loc"][0]) if first["loc"] else None  # the top-level field, as OpenAI names it
        raise APIError(400, f"Invalid request: {where}: {first['msg']}.", param=param) from None


def _refuse_lone_surrogates(data: Any) -> None:
    """JSON's unpaired \\ud800-\\udfff escapes decode to lone surrogates, which are not text: no tokenizer and no
    JSON answer (an error quoting them included) takes them. An APIError names the top-level field holding one."""
    if _is_text(data):
        return
    fields = data.items() if isinstance(data, dict) else []
    param = next((key for key, value in fields if _is_text(key) and not _is_text(value)), None)
    raise APIError(
        400,
        f"{param or 'The body'} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not text.",
        param=param,
    )


def _is_text(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _cut_to_what_is_kept(encoder, item: EncoderInput, tokenized: TokenizedInput) -> EncoderInput:
    """A truncated input cut to a prefix of its text that tokenizes exactly as the whole does (checked), so the
    batcher's encode() does not tokenize megabytes again only to drop them; the input itself if none is found."""
    instruction, text = item if isinstance(item, tuple) else (None, item)
    keep = 8 * encoder.config.max_length  # characters: most tokens are shorter
    while keep < len(text):
        cut = (instruction, text[:keep]) if instruction else text[:keep]
        if encoder.tokenize([cut])[0] == tokenized:
            return cut
        keep *= 4
    return item


def _embeddings_answer(vectors: np.ndarray, body: EmbeddingRequest, lengths: list[int], model: str) -> JSONResponse:
    """OpenAI's answer to `body`: built in a worker thread, as it takes time in proportion to the inputs."""
    if body.dimensions is not None:
        vectors = truncate(vectors, body.dimensions)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(vector, body.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}
    return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # OpenAI's: little-endian float32 bytes, base64
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
