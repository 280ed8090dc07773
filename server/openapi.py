"""The API described: what /openapi.json says of each route (request body, responses, errors, auth), and /docs and
/redoc served from a pinned package's copy of Swagger UI and ReDoc, so the pages work with no network.

The handlers read and check the raw body themselves (app.read_json: the size limit and bad JSON; protocol.parse:
the fields, as 400s that name them), so FastAPI validates nothing: `operation()` only tells it what to publish,
and `install()` adds what FastAPI cannot see: the request models and this server's own values (the served
model's id, --max-tokens-limit, whether an API key is needed). Boundary: documentation only; nothing here runs
while a request is served.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from server import protocol, responses

# What each error status means here; the body is always responses.ErrorResponse.
ERRORS: dict[int, str] = {
    400: "invalid request: not JSON, a field of the wrong type or out of range (named in `param`), an "
         "unsupported parameter, or a prompt and max_tokens too long for the context",
    401: "missing or wrong API key: send `Authorization: Bearer <key>`",
    404: "the request names another model than the one served",
    409: "a draft reload is already running",
    413: "the request body is larger than --max-body-bytes",
    429: "the queue is full (--max-waiting): retry after Retry-After seconds",
    500: "internal error (a bug, logged with its traceback)",
    503: "the models are still loading, or failed to load (see /health): retry after Retry-After seconds",
}
_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": "Bearer"},
    429: {"Retry-After": "seconds to wait"},
    503: {"Retry-After": "seconds to wait"},
}
GENERATION_ERRORS = (400, 401, 404, 413, 429, 500, 503)

# Request body examples (the served model's id is added by install()): what Swagger UI's "Try it out" sends.
COMPLETION_EXAMPLE = {"prompt": "def fibonacci(n):", "max_tokens": 16, "temperature": 0}
CHAT_EXAMPLE = {"messages": [{"role": "user", "content": "List three colours of the rainbow."}],
                "max_completion_tokens": 16, "speculative": {"num_draft_tokens": 3}}

# Models no route's `responses` names (FastAPI does not see them): added to components.schemas by install().
_REQUEST_MODELS = (protocol.CompletionRequest, protocol.ChatCompletionRequest, protocol.ReloadRequest)
_CHUNK_MODELS = (responses.CompletionChunk, responses.ChatCompletionChunk)
_BEARER = "bearer"


def documented_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc load their scripts from the fastapi-offline package, not a CDN (and
    whose Swagger UI does not send the schema to swagger.io's online validator)."""
    return FastAPIOffline(swagger_ui_parameters={"validatorUrl": None}, **kwargs)


def operation(*, request: type[BaseModel] | None = None, body_required: bool = True, example: dict | None = None,
              response: type[BaseModel] | None = None, chunk: type[BaseModel] | None = None,
              errors: tuple[int, ...] = (), auth: bool = False) -> dict[str, Any]:
    """Keyword arguments for a route decorator: `request` is the JSON body the handler parses itself, `response`
    the 200 body, `chunk` (if it streams) the model of each server-sent event, `errors` the error statuses."""
    described: dict[int, dict[str, Any]] = {}
    if response is not None:
        described[200] = {"model": response, "description": "the result"}
    if chunk is not None:
        described[200]["description"] = "the result; with `stream: true`, server-sent events instead"
        described[200]["content"] = {"text/event-stream": {"schema": _events(chunk)}}
    for status in errors:
        if status == 401 and not auth:
            continue
        described[status] = {"model": responses.ErrorResponse, "description": ERRORS[status]}
        if status in _HEADERS:
            described[status]["headers"] = {name: {"description": text, "required": True, "schema": {"type": "string"}}
                                            for name, text in _HEADERS[status].items()}
    extra: dict[str, Any] = {}
    if request is not None:
        media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{request.__name__}"}}
        if example is not None:
            media["example"] = example
        extra["requestBody"] = {"required": body_required, "content": {"application/json": media}}
    if auth:
        extra["security"] = [{_BEARER: []}]
    return {"responses": described, "openapi_extra": extra}


def _events(chunk: type[BaseModel]) -> dict[str, Any]:
    """One server-sent event (as OpenAPI 3.2 reads an event stream's schema): its `data` is a JSON chunk, or
    the error that ended the stream after it started, or the closing `[DONE]`."""
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{chunk.__name__}"},
                         {"$ref": "#/components/schemas/ErrorResponse"}]}
    return {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "string", "description": f"a {chunk.__name__}; an ErrorResponse if the request failed after the "
                                         "stream started; `[DONE]` last",
        "if": {"const": "[DONE]"}, "else": {"contentMediaType": "application/json", "contentSchema": payload}}}}


def install(app: FastAPI, runtime: Any) -> None:
    """Make `app.openapi()` publish the full schema for `runtime` (server/runtime.py). It is rebuilt until the
    models are ready (the served model's id may change when they load), then kept."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        _add_models(components.setdefault("schemas", {}))
        _fill_in(schema, runtime.model_id, runtime.settings.max_tokens_limit)
        if runtime.settings.api_key:
            components["securitySchemes"] = {_BEARER: {"type": "http", "scheme": "bearer",
                                                       "description": "the server's --api-key"}}
        if runtime.ready:
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_models(schemas: dict[str, Any]) -> None:
    models = [(m, "validation") for m in _REQUEST_MODELS] + [(m, "serialization") for m in _CHUNK_MODELS]
    _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    for name, definition in definitions.get("$defs", {}).items():
        if name in schemas:  # a model a route's responses named too: FastAPI's rendering of it stays
            assert schemas[name].get("properties", {}).keys() == definition.get("properties", {}).keys(), name
        else:
            schemas[name] = definition


def _fill_in(schema: dict[str, Any], model_id: str, max_tokens_limit: int) -> None:
    """This server's values: the model's id as the example of `model` and in each body example, and
    --max-tokens-limit as the maximum of the token limits (and of the examples' ones)."""
    schemas = schema["components"]["schemas"]
    for name, fields in (("CompletionRequest", ("max_tokens",)),
                         ("ChatCompletionRequest", ("max_tokens", "max_completion_tokens"))):
        properties = schemas[name]["properties"]
        properties["model"]["examples"] = [model_id]
        for field in fields:
            for branch in properties[field].get("anyOf", [properties[field]]):
                if branch.get("type") == "integer":
                    branch["maximum"] = max_tokens_limit
    for path in schema["paths"].values():
        for op in path.values():
            media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if "example" in media and media["schema"]["$ref"].endswith("CompletionRequest"):  # chat's too
                example = {"model": model_id, **media["example"]}
                for field in ("max_tokens", "max_completion_tokens"):
                    if field in example:
                        example[field] = min(example[field], max_tokens_limit)
                media["example"] = example
