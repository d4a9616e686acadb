"""The web application (FastAPI): a JSON API under /api/, its OpenAPI description at
/openapi.json, and the page (static/index.html) at /.

Why FastAPI: request models with their limits are declared once (pydantic) and give
both the validation and the OpenAPI description; it is small, runs on any ASGI
server (uvicorn here), and its TestClient tests every route in-process. Swagger UI
(/docs) is switched off because it loads its scripts from a CDN; the page here loads
nothing from outside.

Errors: every failure of a request is a 4xx whose JSON body is {"error": "<one line>"}:
422 for a value out of range, a missing or unknown key, a wrong type or a body that is
not JSON; 400 for what the library refuses (sentencemim.errors.UserError); 404 for the
map or neighbours without --index; 413 for a body over the size limit; 429 over the
rate limit (with Retry-After).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import UserError
from .ops import LENGTH_NAMES, NoIndex, Service

STATIC = Path(__file__).resolve().parent / "static"
MAX_WORDS = 100  # per typed sentence
MAX_CHARS = 2000


def _text(s: str) -> str:
    if not s.strip():
        raise ValueError("empty text: type a sentence")
    if len(s.split()) > MAX_WORDS:
        raise ValueError(f"too long: {len(s.split())} words (at most {MAX_WORDS})")
    return s


Text = Annotated[str, Field(max_length=MAX_CHARS), AfterValidator(_text)]
Seed = Annotated[int, Field(ge=0, le=2 ** 31 - 1, description="seeds sampled codes and sampled decoding")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Decoding(Strict):
    method: Literal["greedy", "sample", "beam"] = "greedy"
    max_len: int = Field(50, ge=1, le=200, description="tokens per sentence at most")
    temperature: float = Field(1.0, gt=0, le=10, description="sample only")
    top_k: int = Field(0, ge=0, le=100000, description="sample only: keep the k likeliest tokens (0 = all)")
    top_p: float = Field(1.0, gt=0, le=1, description="sample only: nucleus mass")
    beam_size: int = Field(5, ge=1, le=20, description="beam only")
    length_penalty: float = Field(0.0, ge=0, le=5, description="beam only: log-prob / length^alpha")
    ban_unk: bool = Field(False, description="never produce <unk>")


class ReconstructRequest(Strict):
    sentences: list[Text] = Field(min_length=1, max_length=20)
    mode: Literal["mean", "sample", "perturb"] = Field(
        "mean", description="z = posterior mean, z ~ q(z|x), or z ~ N(mu, (scale sigma)^2)")
    scale: float = Field(10.0, ge=0, le=1000, description="perturb: times the posterior std (paper: 10)")
    seed: Seed = 0
    decoding: Decoding = Decoding()


class InterpolateRequest(Strict):
    a: Text
    b: Text
    steps: int = Field(10, ge=2, le=50, description="points, both ends included (paper: 10)")
    codes: Literal["sample", "mean"] = Field("sample", description="sampled codes (the paper's) or posterior means")
    seed: Seed = 0
    decoding: Decoding = Decoding()


class SampleRequest(Strict):
    n: int = Field(5, ge=1, le=50)
    std: float = Field(0.1, ge=0, le=10, description="z ~ N(0, std^2 I); the paper uses 0.1")
    seed: Seed = 0
    decoding: Decoding = Decoding()


class AnswerRequest(Strict):
    question: Text
    lengths: list[Literal["short", "medium", "long"]] = Field(list(LENGTH_NAMES), min_length=1, max_length=3)
    sample: bool = Field(True, description="z ~ q(z|Q^unk) as in the paper, else its mean")
    seed: Seed = 0
    max_len: int = Field(0, ge=0, le=200, description="0 = question length + 30")


class RankRequest(Strict):
    question: Text
    answers: list[Text] = Field(min_length=2, max_length=30)
    variant: Literal["sample", "mean", "ae"] = "sample"
    seed: Seed = 0


class NeighborsRequest(Strict):
    text: Text
    k: int = Field(5, ge=1, le=50)
    metric: Literal["l2", "cosine"] = "l2"


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    """The first problem of a request, on one line: 'decoding.top_p: Input should be ...'."""
    errs = exc.errors()
    if not errs:
        return "invalid request"
    e = errs[0]
    if e.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))})"
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    msg = e.get("msg", "invalid value").removeprefix("Value error, ")
    where = ".".join(loc) if loc else "request body"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{where}: {msg}{more}"


class Limits:
    """Request size and rate limits, as pure ASGI middleware (before any parsing).

    Size: a body over `max_body` bytes is refused with 413, whether or not it declares
    its Content-Length. Rate: a token bucket per client address for /api/ routes,
    `rate` requests per second with bursts of `burst`; over it, 429 with Retry-After."""

    def __init__(self, app, max_body: int = 64 * 1024, rate: float = 10.0, burst: int = 20):
        self.app, self.max_body, self.rate, self.burst = app, max_body, rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, time)
        self.lock = threading.Lock()

    def _take(self, client: str) -> float:
        """0 if the request may pass, else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                self.buckets[client] = (tokens, now)
                return (1 - tokens) / self.rate
            self.buckets[client] = (tokens - 1, now)
            if len(self.buckets) > 10000:  # forget idle clients
                self.buckets = {c: v for c, v in self.buckets.items() if now - v[1] < 60}
            return 0.0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].startswith("/api/"):
            client = (scope.get("client") or ("?", 0))[0]
            wait = self._take(client)
            if wait:
                return await _error(429, f"rate limit: at most {self.rate:g} requests per second "
                                         f"(bursts of {self.burst}) per client; retry in {wait:.1f} s",
                                    {"Retry-After": str(math.ceil(wait))})(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = _error(413, f"request body too large (limit {self.max_body} bytes)")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await too_large(scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        # read the whole (bounded) body first, then replay it to the application
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.max_body:
                return await too_large(scope, receive, send)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def create_app(service: Service, max_body: int = 64 * 1024, rate: float = 10.0, burst: int = 20) -> FastAPI:
    app = FastAPI(title="sentencemim", version=__version__, docs_url=None, redoc_url=None,
                  description="The latent space of one SentenceMIM model: reconstruct, interpolate, sample, "
                              "question answering, nearest neighbours and a 2-D map of an indexed corpus.")
    app.add_middleware(Limits, max_body=max_body, rate=rate, burst=burst)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(422, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError):
        return _error(404 if isinstance(exc, NoIndex) else 400, str(exc))

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info", summary="the model and the index")
    def info():
        return service.info()

    @app.post("/api/reconstruct", summary="decode sentences from their mean, sampled or perturbed codes")
    def reconstruct(r: ReconstructRequest):
        return service.reconstruct(r.sentences, r.mode, r.scale, r.seed, r.decoding.model_dump())

    @app.post("/api/interpolate", summary="decode equispaced codes between two sentences")
    def interpolate(r: InterpolateRequest):
        return service.interpolate(r.a, r.b, r.steps, r.codes, r.seed, r.decoding.model_dump())

    @app.post("/api/sample", summary="decode codes drawn from N(0, std^2 I)")
    def sample(r: SampleRequest):
        return service.sample(r.n, r.std, r.seed, r.decoding.model_dump())

    @app.post("/api/qa/answer", summary="generate short / medium / long answers (paper sec. 4.6)")
    def qa_answer(r: AnswerRequest):
        return service.qa_answer(r.question, list(dict.fromkeys(r.lengths)), r.sample, r.seed, r.max_len)

    @app.post("/api/qa/rank", summary="rank candidate answers by the paper's latent score")
    def qa_rank(r: RankRequest):
        return service.qa_rank(r.question, r.answers, r.variant, r.seed)

    @app.post("/api/neighbors", summary="nearest indexed sentences to a typed one (needs --index)")
    def neighbors(r: NeighborsRequest):
        return service.neighbors(r.text, r.k, r.metric)

    @app.get("/api/map", summary="the indexed sentences projected to 2-D (needs --index)")
    def latent_map():
        return service.latent_map()

    return app

