"""The HTTP side: Starlette routes for the OpenAI endpoints, /health and /metrics, over one
Scheduler. Requests become Jobs; their events (text pieces, then the end) become a JSON response
or server-sent events. A client that goes away cancels its job; a full queue answers 429 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import openai_api as api
from .metrics import Metrics
from .scheduler import Job, QueueFull, Scheduler

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # 1 MiB: far above any prompt this context holds
# On SIGTERM a running stream gets this long to finish (uvicorn's own graceful timeout is longer):
# sse-starlette would otherwise cut every stream at once.
DRAIN_S = 55


def build_app(engine, model_id: str, parallel: int = 4, max_queue: int = 64, api_key: str | None = None,
              max_tokens_limit: int = 4096, batching: str = "runtime", lookup=None) -> Starlette:  # fmt: skip
    """`engine`: a runtime Engine, or for batching="genai" anything with folder, tokenizer,
    capacity, device and threads (the pipeline loads the model itself). `lookup`: a
    runtime.speculative.PromptLookup (runtime batching, an engine loaded with speculative=True); an
    engine loaded with a draft model guesses with it instead."""
    metrics = Metrics()
    state = {"scheduler": None}
    capacity = engine.capacity or 32768

    def scheduler():
        if state["scheduler"] is None:
            if batching == "genai":
                from .ov_pipeline import GenaiScheduler

                state["scheduler"] = GenaiScheduler(engine, parallel, max_queue, metrics)
            else:
                state["scheduler"] = Scheduler(engine, parallel, max_queue, metrics, lookup)
        return state["scheduler"]

    def refused(e: api.ApiError, endpoint: str) -> JSONResponse:
        metrics.request(endpoint, e.status)
        headers = {"Retry-After": "1"} if e.status == 429 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    async def body_of(request: Request):
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            raise api.ApiError(413, f"the request body is over {MAX_BODY} bytes")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise api.ApiError(413, f"the request body is over {MAX_BODY} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise api.ApiError(400, "the request body is not valid JSON") from None

    def endpoint(kind: str):
        name = "/v1/chat/completions" if kind == "chat" else "/v1/completions"

        async def handle(request: Request) -> Response:
            if not authorized(request):
                return refused(api.ApiError(401, "Incorrect API key provided", code="invalid_api_key",
                                            kind="authentication_error"), name)  # fmt: skip
            try:
                parsed = api.parse(kind, await body_of(request), model_id, engine.tokenizer, capacity, max_tokens_limit)
                job = Job(parsed.prompt, parsed.sampling, parsed.stop, asyncio.get_running_loop(), asyncio.Queue())
                try:
                    scheduler().submit(job)
                except QueueFull:
                    raise api.ApiError(429, f"the server is busy ({max_queue} requests waiting): retry shortly",
                                       code="rate_limit_exceeded", kind="rate_limit_error") from None  # fmt: skip
            except api.ApiError as e:
                return refused(e, name)
            metrics.request(name, 200)
            rid = api.new_id(kind)
            if parsed.stream:
                import anyio
                from sse_starlette.sse import EventSourceResponse

                events = _stream(kind, rid, model_id, job, parsed)
                return EventSourceResponse(events, ping=15, shutdown_event=anyio.Event(), shutdown_grace_period=DRAIN_S)
            return await _whole(kind, rid, model_id, job, parsed, request)

        return handle

    async def models(request: Request) -> Response:
        if not authorized(request):
            return refused(api.ApiError(401, "Incorrect API key provided", code="invalid_api_key",
                                        kind="authentication_error"), "/v1/models")  # fmt: skip
        card = {"id": model_id, "object": "model", "created": int(started), "owned_by": "qwen-edge"}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(request: Request) -> Response:
        s = state["scheduler"]
        return JSONResponse({"status": "ok", "model": model_id, "batching": batching,
                             "active": len(s.active) if s else 0, "waiting": len(s.waiting) if s else 0})  # fmt: skip

    async def metrics_text(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def shutdown() -> None:
        if state["scheduler"] is not None:
            state["scheduler"].close()

    started = time.time()
    routes = [
        Route("/v1/chat/completions", endpoint("chat"), methods=["POST"]),
        Route("/v1/completions", endpoint("completion"), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await shutdown()  # after uvicorn has let in-flight responses finish

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    app.state.scheduler = scheduler
    scheduler()  # start it now: a slow pipeline load belongs to start-up, not to the first request
    return app


async def _whole(kind, rid, model_id, job: Job, parsed, request: Request) -> Response:
    """Wait for the whole answer; a client that disconnects meanwhile cancels the job."""
    pieces = []
    while True:
        try:
            event = await asyncio.wait_for(job.events.get(), timeout=0.5)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancelled.set()
                return Response(status_code=499)
            continue
        if event[0] == "text":
            pieces.append(event[1])
            continue
        reason, message = event[1], event[2] if len(event) > 2 else ""
        if reason == "error":
            err = api.ApiError(500, f"generation failed: {message}", kind="server_error")
            return JSONResponse(err.body(), status_code=500)
        use = api.usage(len(job.prompt), len(job.output), job.reused, job.drafted, job.accepted)
        return JSONResponse(api.response(kind, rid, model_id, "".join(pieces), reason, use))


async def _stream(kind, rid, model_id, job: Job, parsed):
    """Server-sent events as OpenAI sends them; cancelled when the client goes away."""
    try:
        if kind == "chat":
            yield {"data": json.dumps(api.chunk(kind, rid, model_id, None, None, first=True))}
        while True:
            event = await job.events.get()
            if event[0] == "text":
                yield {"data": json.dumps(api.chunk(kind, rid, model_id, event[1], None))}
                continue
            reason, message = event[1], event[2] if len(event) > 2 else ""
            if reason == "error":
                failed = api.ApiError(500, f"generation failed: {message}", kind="server_error")
                yield {"data": json.dumps(failed.body())}
            elif reason != "cancelled":
                yield {"data": json.dumps(api.chunk(kind, rid, model_id, None, reason))}
                if parsed.include_usage:
                    use = api.usage(len(job.prompt), len(job.output), job.reused, job.drafted, job.accepted)
                    yield {"data": json.dumps(api.usage_chunk(kind, rid, model_id, use))}
            yield {"data": "[DONE]"}
            return
    finally:
        job.cancelled.set()  # normal end: a no-op; a disconnect: the scheduler drops the job
