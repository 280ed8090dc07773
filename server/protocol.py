"""Request and response models in OpenAI's shapes (pydantic), plus our two extensions: `top_k` and `speculative`.

Boundary: parsing and validation only. A parameter we do not implement is a 400 naming it (never silently
ignored), except when it carries its neutral value (e.g. `presence_penalty: 0`), which changes nothing.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drafting.logprobs import MAX_TOP_LOGPROBS
from drafting.request import MAX_DRAFT_TOKENS
from server import errors

MAX_N = 8  # choices per request; each runs in the request's one engine session, one after the other
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
    "store": (None, False),
    "metadata": (None, {}),
    "service_tier": (None, "auto", "default"),
    "reasoning_effort": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "audio": (None,),
    "web_search_options": (None,),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's name; accepted, treated like include_usage on the last chunk only


class SpeculativeOptions(_Strict):
    """Extension: per-request control of speculation (the names match the CLI flags and the engine's)."""

    enabled: bool | None = None  # None: the server decides (load policy); False forces plain decoding
    num_draft_tokens: int | None = Field(None, ge=1, le=MAX_DRAFT_TOKENS)
    adaptive: bool | None = None


class _GenerationParams(BaseModel):
    model_config = ConfigDict(extra="allow")  # extras are checked against _NEUTRAL by check_unsupported()

    model: str
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    user: str | None = None
    speculative: SpeculativeOptions | None = None

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


class CompletionRequest(_GenerationParams):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)  # 0: score the prompt only (echo + logprobs), as OpenAI allowed
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)  # OpenAI allows 0..5; we allow up to 20

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


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
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
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)  # deprecated by OpenAI for chat; still sent by many clients
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

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


def parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise errors.invalid("request body must be a JSON object")
    try:
        request = model.model_validate(body)
    except ValidationError as error:
        raise errors.validation_error(error.errors()) from None
    request.check_unsupported()
    return request


# --- responses (plain dicts keep the hot streaming path cheap; shapes follow OpenAI's reference)

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
