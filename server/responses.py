"""The response shapes, as pydantic models for /openapi.json: what the handlers send, described.

Nothing builds these on the request path: completions.py, chat.py and protocol.py build plain dicts (cheap on the
hot streaming path) in these shapes, which follow OpenAI's reference plus our `usage.speculative`. The schema fuzz
test (tests/test_api_schema.py) checks every response a real server sends against them, so the two cannot drift.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FinishReason = Literal["stop", "length"]


class ErrorDetail(BaseModel):
    message: str = Field(description="what was wrong, naming the field and the limit")
    type: str = Field(description="invalid_request_error, authentication_error, not_found, rate_limit_error, "
                                  "service_unavailable or server_error")
    param: str | None = Field(description="the request field at fault (dotted for nested fields), if one")
    code: str | None = Field(description="machine-readable reason, e.g. context_length_exceeded, model_not_found, "
                                         "unsupported_parameter, request_too_large, queue_full, not_ready")


class ErrorResponse(BaseModel):
    """Every error, with its HTTP status; in a stream, one event like this and then `data: [DONE]`."""

    error: ErrorDetail


class ModelIdentity(BaseModel):
    name: str
    revision: str


class SpeculativeUsage(BaseModel):
    """Extension: what speculation did for this request (all choices together)."""

    enabled: bool = Field(description="whether this request could speculate")
    proposer: str | None = Field(description="draft, prompt-lookup or draft+lookup; null when not enabled")
    draft: ModelIdentity | None = Field(None, description="the draft model when the request started (a reload "
                                                          "during it applies from the next request); null without one")
    drafts: int = Field(description="draft-and-verify steps")
    draft_tokens: int = Field(description="tokens proposed")
    accepted_tokens: int = Field(description="proposed tokens the target accepted")
    accepted_per_position: list[int] = Field(description="accepted tokens at each draft position")
    reached_per_position: list[int] = Field(description="drafts whose verification reached each position")
    acceptance_per_position: list[float] = Field(description="accepted / reached, per position")
    acceptance_rate: float = Field(description="alpha: accepted over reached positions")
    mean_accepted_length: float = Field(description="tokens emitted per verify step (accepted + 1)")
    draft_time_s: float
    target_time_s: float


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    speculative: SpeculativeUsage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None] = Field(description="null for an echoed prompt's first token")
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int = Field(description="prompt index * n + choice")
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunkChoice(CompletionChoice):
    finish_reason: FinishReason | None = Field(description="set on the choice's last chunk only")


class CompletionChunk(BaseModel):
    """One `data:` event of a streamed completion; the last one (with include_usage) has no choices."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = Field(None, description="with stream_options.include_usage: null until the last chunk")


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] = Field(description="the token's UTF-8 bytes")


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]
    refusal: None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = Field(None, description="on each choice's first chunk only")
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None = Field(description="set on the choice's last chunk only")


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a streamed chat completion; the last one (with include_usage) has no choices."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(None, description="with stream_options.include_usage: null until the last chunk")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    """200 once the models are ready (with what is served); 503 with status loading or failed (and the error)."""

    status: Literal["ok", "loading", "failed"]
    target: ModelIdentity | None = None
    draft: ModelIdentity | None = None
    proposer: str | None = None
    error: str | None = None


class ReloadResponse(BaseModel):
    status: Literal["reloaded"]
    previous: ModelIdentity | None
    target: ModelIdentity | None
    draft: ModelIdentity | None
    proposer: str | None
