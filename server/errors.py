"""OpenAI-shaped errors: every failure leaves as `{"error": {"message", "type", "param", "code"}}` with its status.

Handlers registered here turn our APIError, FastAPI/Starlette HTTP errors and unexpected exceptions (500, logged
with a traceback: those are bugs) into that shape. In a stream the same body is sent as an SSE event (serving.py).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers
        self.recorded = False  # set once the request metrics counted it

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def unsupported(params: list[str]) -> APIError:
    names = ", ".join(sorted(params))
    return APIError(400, f"unsupported parameter(s): {names} (fastdraft does not implement them; remove them "
                         "or leave them at their neutral value)", "invalid_request_error", params[0], "unsupported_parameter")


def context_length_exceeded(prompt_tokens: int, max_tokens: int, max_context: int, param: str) -> APIError:
    return APIError(400, f"This model's maximum context length is {max_context} tokens; the prompt has {prompt_tokens} "
                         f"tokens and {param} asks for {max_tokens} more ({prompt_tokens + max_tokens} in all). "
                         f"Shorten the prompt or lower {param}.",
                    "invalid_request_error", param, "context_length_exceeded")


def unauthorized() -> APIError:
    return APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                    "authentication_error", None, "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def model_not_found(model: str, served: str) -> APIError:
    return APIError(404, f"The model '{model}' does not exist; this server serves '{served}'.",
                    "invalid_request_error", "model", "model_not_found")


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"request body must be <= {limit} bytes", "invalid_request_error", None, "request_too_large")


def queue_full(waiting: int) -> APIError:
    return APIError(429, f"server is at capacity ({waiting} requests already waiting); retry later",
                    "rate_limit_error", None, "queue_full", headers={"Retry-After": "1"})


def not_ready(detail: str) -> APIError:
    return APIError(503, f"server is not ready: {detail}", "service_unavailable", None, "not_ready",
                    headers={"Retry-After": "5"})


def internal(message: str = "internal server error") -> APIError:
    return APIError(500, message, "server_error", None, "internal_error")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if error.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {error.detail}"
        return APIError(error.status_code, message, kind, None, str(error.status_code)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return validation_error(error.errors()).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal(f"internal server error: {type(error).__name__}").response()


def validation_error(errors: list[dict]) -> APIError:
    """First pydantic error as a 400 that names the field, the rule and the value it got."""
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body",)]
    param = ".".join(loc) or None
    got = first.get("input")
    shown = repr(got) if not isinstance(got, dict) else "an object"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    message = f"{param}: {first.get('msg', 'invalid value')}, got {shown}" if param else first.get("msg", "invalid request")
    return invalid(message, param)
