"""App factory and thin router: auth, readiness, body limits and request accounting around the endpoint handlers.

`create_app(settings)` returns a FastAPI app whose lifespan loads the models in a worker thread, so the port
answers at once: /health says 503 "loading" until the engine is ready (then 200), /live is plain liveness.
Generation is in serving.py (+ completions.py, chat.py); shapes in protocol.py (requests) and responses.py;
errors in errors.py; what /openapi.json and /docs say of each route in openapi.py (the handlers read the raw body,
so FastAPI checks nothing).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from server import dashboard, errors, openapi, protocol, responses
from server.chat import create_chat_completion
from server.completions import create_completion
from server.metrics import CONTENT_TYPE, Metrics
from server.reload import on_sighup, reload_draft
from server.runtime import Runtime
from server.scheduler import Scheduler
from server.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Runtime, Request, Any], Awaitable[Response]]

DESCRIPTION = """OpenAI's completions, chat completions and models API, answered by speculative decoding on CPUs.

Two extensions: `top_k`, and `speculative` (per-request control of drafting); `usage.speculative` reports what
drafting did. Every error is `{"error": {"message", "type", "param", "code"}}` with its HTTP status, and a 400
names the field at fault. OpenAI parameters fastdraft does not implement are accepted at their neutral value only.
"""


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """`runtime` is for tests that bring an already loaded one; normally the lifespan loads it."""
    if runtime is None:
        metrics = Metrics()
        runtime = Runtime(settings, metrics, Scheduler(settings.max_running, settings.max_waiting, metrics.set_scheduler))
    preloaded = runtime.ready

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        loading = None if preloaded else asyncio.create_task(_load(app, runtime))
        try:
            loop.add_signal_handler(signal.SIGHUP, on_sighup, runtime)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP on this OS
            log.warning("SIGHUP reload unavailable here; use POST /admin/reload")
        try:
            yield
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
            await asyncio.to_thread(runtime.close)
            try:
                loop.remove_signal_handler(signal.SIGHUP)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    app = openapi.documented_app(title="fastdraft", summary="OpenAI-compatible speculative-decoding server",
                                 description=DESCRIPTION, lifespan=lifespan)
    app.state.runtime = runtime
    errors.install_handlers(app)
    openapi.install(app, runtime)
    app.include_router(dashboard.router)
    auth = bool(runtime.settings.api_key)

    async def api(endpoint: str, request: Request, handler: Handler) -> Response:
        try:
            check_auth(runtime, request)
            check_ready(runtime)
            body = await read_json(request, runtime.settings.max_body_bytes)
            return await handler(runtime, request, body)
        except errors.APIError as error:
            if not error.recorded:
                runtime.metrics.requests.labels(endpoint, str(error.status), "error").inc()
            raise

    @app.post("/v1/completions", **openapi.operation(
        request=protocol.CompletionRequest, example=openapi.COMPLETION_EXAMPLE,
        response=responses.CompletionResponse, chunk=responses.CompletionChunk,
        errors=openapi.GENERATION_ERRORS, auth=auth))
    async def completions(request: Request) -> Response:
        """Text completion of one or more prompts (OpenAI's legacy completions API)."""
        return await api("completions", request, create_completion)

    @app.post("/v1/chat/completions", **openapi.operation(
        request=protocol.ChatCompletionRequest, example=openapi.CHAT_EXAMPLE,
        response=responses.ChatCompletionResponse, chunk=responses.ChatCompletionChunk,
        errors=openapi.GENERATION_ERRORS, auth=auth))
    async def chat_completions(request: Request) -> Response:
        """Chat completion: the messages go through the model's chat template."""
        return await api("chat", request, create_chat_completion)

    @app.get("/v1/models", **openapi.operation(response=responses.ModelList, errors=(401,), auth=auth))
    async def models(request: Request) -> JSONResponse:
        """The one model this server serves."""
        check_auth(runtime, request)
        return JSONResponse(protocol.models_list(runtime.model_id, runtime.created))

    @app.post("/admin/reload", **openapi.operation(
        request=protocol.ReloadRequest, body_required=False, response=responses.ReloadResponse,
        errors=(400, 401, 409, 413, 500, 503), auth=auth))
    async def admin_reload(request: Request) -> JSONResponse:
        """Reload the draft model (as SIGHUP does); a draft that fails to load is refused and the old one kept."""
        check_auth(runtime, request)
        body = await read_json(request, runtime.settings.max_body_bytes, allow_empty=True) or {}
        spec = body.get("draft") if isinstance(body, dict) else None
        if spec is not None and not isinstance(spec, str):
            raise errors.invalid(f"draft must be a path or model name (a string), got {type(spec).__name__}", "draft")
        return JSONResponse(await reload_draft(runtime, spec))

    @app.get("/health", responses={200: {"model": responses.Health, "description": "ready"},
                                   503: {"model": responses.Health, "description": "loading, or failed to load"}})
    async def health() -> JSONResponse:
        """Readiness: 200 once the models are loaded. Needs no API key."""
        if runtime.ready:
            return JSONResponse({"status": "ok", **runtime.describe()})
        detail = {"status": runtime.state}
        if runtime.error:
            detail["error"] = runtime.error
        return JSONResponse(detail, status_code=503)

    @app.get("/live", responses={200: {"description": "the process answers", "content": {"application/json": {
        "schema": {"type": "object", "properties": {"status": {"const": "alive"}}, "required": ["status"]}}}}})
    async def live() -> JSONResponse:
        """Liveness: 200 whenever the process answers, loaded or not."""
        return JSONResponse({"status": "alive"})

    @app.get("/metrics", response_class=PlainTextResponse, responses={200: {
        "description": "Prometheus text format (the metrics are listed in the README)"}})
    async def metrics() -> Response:
        """Prometheus metrics. Needs no API key."""
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

    return app


async def _load(app: FastAPI, runtime: Runtime) -> None:
    try:
        await asyncio.to_thread(runtime.load)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        runtime.state, runtime.error = "failed", f"{type(error).__name__}: {error}"
        log.critical("loading the models failed: %s; shutting down", runtime.error, exc_info=error)
        shutdown = getattr(app.state, "request_shutdown", None)  # set by server/cli.py; exits non-zero on "failed"
        if shutdown is not None:
            shutdown()
        else:
            os.kill(os.getpid(), signal.SIGTERM)


def check_auth(runtime: Runtime, request: Request) -> None:
    key = runtime.settings.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise errors.unauthorized()


def check_ready(runtime: Runtime) -> None:
    if not runtime.ready:
        raise errors.not_ready(runtime.error or "models are still loading (see /health)")


async def read_json(request: Request, limit: int, allow_empty: bool = False) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise errors.body_too_large(limit)
    if not body and allow_empty:
        return None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise errors.invalid(f"request body is not valid JSON: {error}") from None
