"""The HTTP side of the ML backend protocol that Label Studio 1.23 speaks (see README).

Handlers stay thin: /predict runs one batch through the preloaded model, /webhook
only validates and enqueues, everything else answers from Redis at once.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import __version__, metrics
from backend.config import Settings
from backend.errors import BroadenError
from backend.queue import producer
from backend.runtime import Runtime
from backend.store.state import ProjectMirror, ProjectState
from backend.web.schemas import (
    JobStatusRequest,
    JobStatusResponse,
    PredictRequest,
    PredictResponse,
    SetupRequest,
    SetupResponse,
    WebhookRequest,
    WebhookResponse,
)

if TYPE_CHECKING:  # the HTTP layer is typed against the predictor, never imports torch itself
    from backend.model.predictor import Predictor

log = logging.getLogger(__name__)
basic = HTTPBasic(auto_error=False)
NOT_CONNECTED = (
    "project {project} is not set up with this backend (never set up, or its ML settings in Label Studio "
    "do not point here): connect it on the project's Model page (or run `broaden backfill --project {project}`)"
)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. The runtime (Redis, encoders) is built once in the lifespan unless given."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        # Short timeouts: a request must not hang on a Redis that stopped answering.
        r = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        app.state.runtime = Runtime.build(settings, r)
        yield
        r.close()

    # The API docs are served by _add_routes, behind the same basic auth as the endpoints.
    app = FastAPI(
        title="broaden", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.metrics, request_seconds = metrics.registry(lambda: app.state.runtime.redis)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_body_mb * 2**20))
    app.add_middleware(RequestMetrics, histogram=request_seconds)  # outside BodyLimit: its 413s count too
    _add_error_handlers(app)
    _add_routes(app, settings)
    return app


class RequestMetrics:
    """Each request's latency, by method, route (its template, so ids do not multiply the series)
    and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # the router sets it on this scope
            self.histogram.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)


class BodyLimit:
    """Refuse a request body over `max_bytes` with a 413, whether or not it declares its length:
    the body is read (as FastAPI would) up to the limit, then handed on."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_big = declared.isdigit() and int(declared) > self.max_bytes
        chunks, size, more = [], 0, not too_big
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            too_big = size > self.max_bytes
            more = message.get("more_body", False) and message["type"] == "http.request" and not too_big
        body = b"".join(chunks)
        if too_big:
            detail = f"the request body is over {self.max_bytes} bytes (BROADEN_MAX_BODY_MB)"
            await _error(413, "payload too large", detail)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


def _check_auth(settings: Settings) -> Callable[[HTTPBasicCredentials | None], None]:
    def check(creds: Annotated[HTTPBasicCredentials | None, Depends(basic)]) -> None:
        if not settings.basic_auth_user or settings.basic_auth_pass is None:
            return
        ok = creds is not None and hmac.compare_digest(
            creds.username.encode(), settings.basic_auth_user.encode()
        ) & hmac.compare_digest(creds.password.encode(), settings.basic_auth_pass.get_secret_value().encode())
        if not ok:
            raise _Unauthorized()

    return check


class _Unauthorized(BroadenError):
    status_code = 401

    def __init__(self) -> None:
        super().__init__("basic auth credentials are missing or wrong (set them on the Model page)")


def _add_routes(app: FastAPI, settings: Settings) -> None:
    auth = [Depends(_check_auth(settings))]

    @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=auth, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="broaden API")

    @app.get("/", dependencies=auth)
    @app.get("/health", dependencies=auth)
    async def health(rt: RuntimeDep) -> dict[str, Any]:
        enc = rt.predictor.encoders
        return {
            "status": "UP",
            "model_class": "VLMAE",
            "fusion": settings.fusion,
            "encoders": {"image": enc.image.id, "text": enc.text.id, "audio": enc.audio.id}
            | ({"speech": enc.speech.id} if enc.speech else {}),
        }

    @app.post("/setup", dependencies=auth)
    def setup(body: SetupRequest, rt: RuntimeDep) -> SetupResponse:
        version = rt.predictor.setup(body.project, body.label_config)
        if ProjectState(rt.redis, body.project).mark_connected() == 1:
            producer.connected(rt.redis, body.project)  # its existing tasks are ranked now, not at the first label
        return SetupResponse(model_version=version)

    @app.post("/predict", dependencies=auth)
    def predict(body: PredictRequest, rt: RuntimeDep) -> PredictResponse:
        started = time.perf_counter()
        p: Predictor = rt.predictor
        config = p.config_for(body.project, body.label_config)
        tasks = [t.model_dump() for t in body.tasks]
        results, deferred = p.predict(tasks, config, body.project, budget_s=settings.predict_budget_s)
        if deferred and body.project is not None:
            # Too many unseen media for one request: a worker pre-labels the rest in the background.
            ProjectMirror(rt.redis, body.project).add_hints(deferred)
            producer.sync(rt.redis, body.project)
        log.info(
            "predict project=%s tasks=%d empty=%d deferred=%d in %.3fs",
            body.project,
            len(tasks),
            sum(not r.result for r in results),
            len(deferred),
            time.perf_counter() - started,
        )
        return PredictResponse(results=results)

    # No auth here: Label Studio sends webhooks without credentials. So a webhook counts only for a
    # project Label Studio has set up with this backend (/setup, which connecting it calls), and its
    # payload is only a hint: jobs read the truth back from Label Studio's API.
    @app.post("/webhook")
    def webhook(body: WebhookRequest, rt: RuntimeDep) -> WebhookResponse:
        if body.project is not None and not ProjectState(rt.redis, body.project).connected():
            log.info("webhook %s for project %s ignored: not set up with this backend", body.action, body.project)
            return WebhookResponse(status="ignored", reason=NOT_CONNECTED.format(project=body.project))
        job_id = producer.event(rt.redis, body.action, body.project, body.task_ids())
        return WebhookResponse(status="queued" if job_id else "ignored", job_id=job_id)

    @app.get("/metrics", dependencies=auth, include_in_schema=False)
    def prometheus(request: Request) -> Response:
        """Prometheus text format: request latencies, queue depths, jobs, projects (backend/metrics.py)."""
        return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/versions", dependencies=auth)
    def versions(rt: RuntimeDep, project: int | None = None) -> dict[str, Any]:
        current = ProjectState(rt.redis, project).model_version() if project is not None else None
        return {"versions": [current] if current else [], "model_dir": None}

    @app.post("/job_status", dependencies=auth)
    def job_status(body: JobStatusRequest, rt: RuntimeDep) -> JobStatusResponse:
        state = producer.status(rt.redis, body.job)
        return JobStatusResponse(job=state.job, status=state.status, meta=state.meta)


def _error(status: int, error: str, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail})


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "malformed JSON", "the request body is not valid JSON")
        # loc + message only: never echo the payload back
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in errors]
        return _error(422, "invalid payload", detail)

    @app.exception_handler(BroadenError)
    async def broaden_error(_: Request, exc: BroadenError) -> JSONResponse:
        return _error(exc.status_code, type(exc).__name__, str(exc))

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("redis unavailable: %s", type(exc).__name__)
        return _error(503, "RedisUnavailable", "broaden's Redis did not answer; retry shortly")

    @app.middleware("http")
    async def last_resort(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            return await call_next(request)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return _error(500, "internal error", "see the backend's log")
