"""The HTTP service: OpenAI's /v1/embeddings, /v1/search over an index, /v1/models, /health and /metrics.

FastAPI on uvicorn: the best-kept ASGI stack in Python, and OpenAI's own clients are tested against the same
schema conventions. Bodies are read and validated here (not by FastAPI) so that every refusal, the size limit
included, is an OpenAI-shaped error: `{"error": {"message", "type", "param", "code"}}` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.exceptions import HTTPException

from lm2vec.modeling.matryoshka import check_dimensions, truncate
from lm2vec.serving.batching import DynamicBatcher
from lm2vec.serving.options import ServeOptions

ENDPOINTS = ("/v1/embeddings", "/v1/search", "/v1/models", "/health", "/metrics")


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:  # fmt: skip
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
    dimensions: int | None = None
    user: StrictStr | None = None
    instruction: StrictStr | None = None  # lm2vec's own: attended to, not pooled


class SearchRequest(_Strict):
    query: StrictStr = Field(min_length=1)
    k: int = Field(default=5, ge=1)
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
        self.batch_inputs = Histogram("lm2vec_batch_inputs", "Inputs per forward pass", buckets=buckets,
                                      registry=self.registry)  # fmt: skip
        self.batch_tokens = Histogram("lm2vec_batch_padded_tokens", "Padded tokens per forward pass",
                                      buckets=[2**i for i in range(4, 18)], registry=self.registry)  # fmt: skip

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


def load_service(model: str, index: Path | None, options: ServeOptions, name: str | None = None,
                 device: str | None = None) -> Service:  # fmt: skip
    """Load the encoder (and the index, checked to belong to it) and apply the per-input token limit."""
    from lm2vec import LM2Vec
    from lm2vec.serving.index import SearchIndex, check_same_model

    encoder = LM2Vec.from_pretrained(model, device=device)
    store = None
    if index is not None:
        store = SearchIndex(index)
        check_same_model(store.model, model, encoder)
    limit = options.max_input_tokens
    if limit is not None:
        if not 2 <= limit <= encoder.config.max_length:
            raise ValueError(f"max_input_tokens must be in [2, {encoder.config.max_length}] (the model's "
                             f"max_length), got {limit}")  # fmt: skip
        encoder.config.max_length = limit  # encode() truncates here, tokenize() flags what is longer
    return Service(name or Path(str(model)).name.removeprefix("pkg:"), encoder, options, store)


def create_app(service: Service) -> FastAPI:
    metrics = Metrics()
    options = service.options
    encoder = service.encoder
    state: dict[str, DynamicBatcher] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state["batcher"] = DynamicBatcher(encoder, options.batch_tokens, options.max_wait_ms / 1000,
                                          options.batch_size, on_batch=metrics.observe_batch)  # fmt: skip
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

    app.add_middleware(_CountRequests, metrics=metrics)

    def authorize(request: Request) -> None:
        if options.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        # compare_digest takes as long whatever the key's first wrong byte: nothing to learn from timing.
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), options.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send `Authorization: Bearer KEY`.",
                           code="invalid_api_key")  # fmt: skip

    async def read_body(request: Request, schema: type[BaseModel]) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > options.max_body_bytes:
            raise _too_large(options.max_body_bytes)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > options.max_body_bytes:
                raise _too_large(options.max_body_bytes)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
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

    def check_model(requested: str | None) -> None:
        if requested is not None and requested != service.name:
            raise APIError(404, f"The model {requested!r} does not exist; this server serves {service.name!r}.",
                           param="model", code="model_not_found")  # fmt: skip

    def token_lengths(items: list, param: str) -> list[int]:
        tokenized = encoder.tokenize(items)
        if not options.truncate:
            for position, item in enumerate(tokenized):
                if item.truncated:
                    raise APIError(400, f"{param}[{position}] is longer than {encoder.config.max_length} tokens; "
                                   "shorten it (this server refuses rather than truncates).", param=param,
                                   code="context_length_exceeded")  # fmt: skip
        lengths = [len(item.input_ids) for item in tokenized]
        metrics.tokens.inc(sum(lengths))
        return lengths

    async def embed(request: Request, items: list, lengths: list[int]) -> np.ndarray:
        """Embeddings from the batcher; if the client goes first its job is cancelled (dropped if not started)."""
        work = asyncio.ensure_future(state["batcher"].embed(items, lengths))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not work.done():
            work.cancel()
            raise APIError(499, "The client closed the connection.", code="client_closed_request")
        return work.result()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        authorize(request)
        body: EmbeddingRequest = await read_body(request, EmbeddingRequest)
        check_model(body.model)
        if body.dimensions is not None:
            try:
                check_dimensions(body.dimensions, encoder.config.matryoshka_dims,
                                 encoder.get_sentence_embedding_dimension())  # fmt: skip
            except ValueError as error:
                raise APIError(400, str(error), param="dimensions") from None
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise APIError(400, "input must not be an empty list.", param="input")
        if len(texts) > options.max_inputs:
            raise APIError(400, f"{len(texts)} inputs in one request; the limit is {options.max_inputs}.",
                           param="input")  # fmt: skip
        for position, text in enumerate(texts):
            if not text.strip():
                raise APIError(400, f"input[{position}] is empty.", param="input")
        items = [(body.instruction, text) for text in texts] if body.instruction else texts
        lengths = token_lengths(items, "input")
        vectors = await embed(request, items, lengths)
        if body.dimensions is not None:
            vectors = truncate(vectors, body.dimensions)
        data = [{"object": "embedding", "index": i, "embedding": _encode_vector(vector, body.encoding_format)}
                for i, vector in enumerate(vectors)]  # fmt: skip
        usage = {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}
        return JSONResponse({"object": "list", "data": data, "model": service.name, "usage": usage})

    @app.post("/v1/search")
    async def search(request: Request) -> JSONResponse:
        authorize(request)
        if service.index is None:
            raise APIError(404, "No index is loaded: start the server with `lm2vec serve MODEL --index INDEX`.",
                           code="no_index")  # fmt: skip
        body: SearchRequest = await read_body(request, SearchRequest)
        check_model(body.model)
        if body.k > options.max_k:
            raise APIError(400, f"k={body.k} is above the limit of {options.max_k}.", param="k")
        instruction = encoder.config.query_instruction if body.instruction is None else body.instruction
        items = [(instruction, body.query) if instruction else body.query]
        lengths = token_lengths(items, "query")
        vectors = await embed(request, items, lengths)
        hits = await asyncio.to_thread(service.index.search, vectors, body.k, body.filter)
        usage = {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}
        return JSONResponse({"object": "list", "data": [asdict(hit) for hit in hits[0]], "model": service.name,
                             "usage": usage})  # fmt: skip

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
    """Pure ASGI middleware (no body buffering, disconnects pass through): requests and latency per endpoint."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # OpenAI's: little-endian float32 bytes, base64
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
