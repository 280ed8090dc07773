"""Request models in OpenAI's shapes (pydantic), plus our two extensions: `top_k` and `speculative`; and the
helpers that build the response dicts (whose shapes responses.py describes).

Boundary: parsing and validation only. A parameter we do not implement is a 400 naming it (never silently
ignored), except when it carries its neutral value (e.g. `presence_penalty: 0`), which changes nothing.

The same models validate every request (`parse`) and describe it in /openapi.json (server/openapi.py). Where a
rule is checked by hand (a validator, or the handler), the field's schema says so with `WithJsonSchema`, so the
published schema is the rule the server applies.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from drafting.logprobs import MAX_TOP_LOGPROBS
from drafting.request import MAX_DRAFT_TOKENS
from server import errors

MAX_METADATA = 16  # OpenAI's limits on `metadata`: 16 pairs, keys up to 64 characters, values up to 512
MAX_METADATA_KEY, MAX_METADATA_VALUE = 64, 512
MAX_N = 8  # choices per prompt; all choices of a request run at once, batched by the engine
MAX_STOP = 4  # OpenAI's limit on stop sequences

# OpenAI parameters we accept only at a value that changes nothing; anything else is a 400.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "suffix": (None, ""),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),  # "auto" with no tools means no tool use
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}),
    "service_tier": (None, "auto", "default"),
    "reasoning_effort": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "audio": (None,),
    "web_search_options": (None,),
}


def _document_extras(schema: dict[str, Any]) -> None:
    """/openapi.json: the OpenAI parameters accepted at their neutral value only, and no other extra field."""
    _document_neutral(schema, {})


def _document_neutral(schema: dict[str, Any], extra: dict[str, dict]) -> None:
    properties = schema.setdefault("properties", {})
    for name, values in _NEUTRAL.items():
        unique: list[Any] = []
        for value in values:
            if value not in unique:  # 0 and 0.0 are one JSON value
                unique.append(value)
        properties.setdefault(name, {"enum": unique, "default": None, "description": _NEUTRAL_NOTE})
    properties.update(extra)
    schema["additionalProperties"] = False  # any other field is a 400 unsupported_parameter


_NEUTRAL_NOTE = "OpenAI parameter fastdraft does not implement: accepted at its neutral value only, else a 400"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = Field(False, description="send a last chunk with `usage` (and `usage.speculative`)")
    # vLLM's name; accepted, treated like include_usage on the last chunk only
    continuous_usage_stats: bool = Field(False, description="vLLM's name; treated like include_usage")


class SpeculativeOptions(_Strict):
    """Extension: per-request control of speculation (the names match the CLI flags and the engine's)."""

    enabled: bool | None = Field(None, description="null: the server decides (load policy); false forces plain "
                                                    "decoding; true on a server without a proposer is a 400")
    num_draft_tokens: int | None = Field(None, ge=1, le=MAX_DRAFT_TOKENS,
                                         description="draft length k for this request (default: --num-draft-tokens)")
    adaptive: bool | None = Field(None, description="adaptive draft length (default: --adaptive)")


# the rules of `stop`'s validator below, as a schema
_STOP_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1},
                          {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": MAX_STOP},
                          {"type": "null"}]}


class _GenerationParams(BaseModel):
    # extras are checked against _NEUTRAL by check_unsupported(); the schema lists the neutral ones
    model_config = ConfigDict(extra="allow", json_schema_extra=_document_extras)

    model: str = Field(description="the served model's id (GET /v1/models); any other is a 404 model_not_found")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="null: 1.0, as OpenAI; 0: greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="extension: sample from the k most likely tokens (0: all)")
    seed: int | None = Field(None, ge=0, lt=2**63, description="makes sampling reproducible; ignored at temperature 0")
    stop: Annotated[str | list[str] | None, WithJsonSchema(_STOP_SCHEMA)] = Field(
        None, description=f"up to {MAX_STOP} non-empty strings; the text ends before the first one found")
    stream: bool = Field(False, description="server-sent events, one chunk per event, then `data: [DONE]`")
    stream_options: StreamOptions | None = Field(None, description="only with stream: true")
    n: int = Field(1, ge=1, le=MAX_N, description="choices per prompt")
    user: str | None = None
    speculative: SpeculativeOptions | None = Field(None, description="extension: per-request speculation")
    store: bool | None = Field(None, description="false keeps this request out of the server's traffic capture "
                                                 "(--capture-dir); true or null: captured when the server captures")
    metadata: dict[Annotated[str, Field(min_length=1, max_length=MAX_METADATA_KEY)],
                   Annotated[str, Field(max_length=MAX_METADATA_VALUE)]] | None = Field(
        None, max_length=MAX_METADATA, description=f"up to {MAX_METADATA} string pairs (keys up to {MAX_METADATA_KEY} "
        f"characters, values up to {MAX_METADATA_VALUE}), stored with captured traffic; `task` names the task "
        "that training.align --from-traffic reports acceptance for")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else list(value)
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    def check_unsupported(self, extra_neutral: dict[str, tuple[Any, ...]] | None = None) -> None:
        neutral = dict(_NEUTRAL, **(extra_neutral or {}))
        bad = [name for name, value in (self.model_extra or {}).items()
               if name not in neutral or not any(_same(value, ok) for ok in neutral[name])]
        if bad:
            raise errors.unsupported(bad)
        if self.stream_options is not None and not self.stream:
            raise errors.invalid("stream_options is only allowed when stream is true", "stream_options")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and (self.stream_options.include_usage or self.stream_options.continuous_usage_stats))


def _same(value: Any, neutral: Any) -> bool:
    return type(value) is type(neutral) and value == neutral if neutral is not None else value is None


_TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
# the rules of `prompt`'s validator and of completions.tokenize_prompts (ids below the vocabulary size), as a schema
_PROMPT_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1},
                            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                            _TOKEN_IDS,
                            {"type": "array", "items": _TOKEN_IDS, "minItems": 1}]}


def _document_completion_extras(schema: dict[str, Any]) -> None:
    _document_neutral(schema, {"best_of": {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_N}, {"type": "null"}], "default": None,
        "description": "accepted when 1 or equal to n (plain sampling); anything else is a 400"}})


class CompletionRequest(_GenerationParams):
    model_config = ConfigDict(extra="allow", json_schema_extra=_document_completion_extras)

    prompt: Annotated[str | list[str] | list[int] | list[list[int]], WithJsonSchema(_PROMPT_SCHEMA)] = Field(
        description="a string, strings, token ids (below the vocabulary size) or lists of token ids; n choices each")
    # 0: score the prompt only (echo + logprobs), as OpenAI allowed
    max_tokens: int | None = Field(None, ge=0, description="at most --max-tokens-limit (default: --default-completion-"
                                                           "tokens); 0 with echo scores the prompt only")
    echo: bool = Field(False, description="the prompt before each choice's text (scored too when logprobs is set)")
    # OpenAI allows 0..5; we allow up to 20
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                 description="each token's log-probability and this many alternatives")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        if isinstance(value, list) and isinstance(value[0], list) and any(not p for p in value):
            raise ValueError("token-id prompts must not be empty")
        return value

    def check_unsupported(self, extra_neutral: dict[str, tuple[Any, ...]] | None = None) -> None:
        # best_of == n (or 1) is plain sampling; a larger best_of would need ranking by logprobs
        super().check_unsupported({"best_of": (None, 1, self.n)})


# text() below accepts text parts only, as a schema
_TEXT_PART = {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
              "required": ["type", "text"]}
_CONTENT_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}, {"type": "null"}]}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str | list[dict[str, Any]] | None, WithJsonSchema(_CONTENT_SCHEMA)] = Field(
        None, description="a string, or text parts (other part types are a 400)")
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise errors.invalid(f"only text content parts are supported, got type {part.get('type')!r}", "messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(_GenerationParams):
    messages: list[ChatMessage] = Field(min_length=1, description="rendered with the model's chat template")
    max_completion_tokens: int | None = Field(None, ge=1, description="at most --max-tokens-limit (default: what "
                                                                      "the context has room for, up to that limit)")
    # deprecated by OpenAI for chat; still sent by many clients
    max_tokens: int | None = Field(None, ge=1, description="older name of max_completion_tokens (which wins)")
    logprobs: bool | None = Field(None, description="each token's log-probability")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                     description="alternatives per token; needs logprobs: true")

    def check_unsupported(self, extra_neutral: dict[str, tuple[Any, ...]] | None = None) -> None:
        super().check_unsupported(extra_neutral)
        if self.top_logprobs and not self.logprobs:  # 0 asks for nothing, so it is allowed alone
            raise errors.invalid(f"top_logprobs requires logprobs to be true, got top_logprobs={self.top_logprobs} "
                                 f"with logprobs={self.logprobs}", "top_logprobs")

    @property
    def engine_logprobs(self) -> int | None:
        """The engine's `logprobs`: None for none, else the number of alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def token_limit(self) -> tuple[int | None, str]:
        """(requested limit, the field it came from) for error messages."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


class ReloadRequest(BaseModel):
    """The body is optional; fields other than `draft` are ignored."""

    draft: str | None = Field(None, description="path or model name of the new draft; default: the draft the server "
                                                "was started with (or last reloaded from)")


def parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise errors.invalid("request body must be a JSON object")
    try:
        # strict: no coercion ("5" is not an integer, false is not 0), so a body passes exactly when it fits the
        # schema /openapi.json publishes (the fuzz test holds the two together)
        request = model.model_validate(_integral_floats_as_ints(body), strict=True)
    except ValidationError as error:
        raise errors.validation_error(error.errors()) from None
    request.check_unsupported()
    return request


def _integral_floats_as_ints(value: Any) -> Any:
    """2.0 -> 2 throughout: JSON has one number type, and JSON Schema counts 2.0 as an integer (a float field
    takes the int back unchanged)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    return value


# --- responses (plain dicts keep the hot streaming path cheap; shapes follow OpenAI's reference and
# server/responses.py, which describes them in /openapi.json)

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, speculative: dict | None) -> dict:
    block = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if speculative is not None:
        block["speculative"] = speculative
    return block


def models_list(model_id: str, created: int, owned_by: str = "fastdraft") -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": owned_by}]}
