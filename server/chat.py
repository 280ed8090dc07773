"""POST /v1/chat/completions: messages -> the target's chat template -> OpenAI `chat.completion` objects or chunks."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from server import errors, protocol
from server.completions import check_model
from server.job import ChoiceEvent, Job, JobOutcome, check_context, sampling_params
from server.logprobs import EmittedToken, chat_logprobs
from server.protocol import ChatCompletionRequest
from server.runtime import Runtime
from server.serving import respond


async def create_chat_completion(runtime: Runtime, request: Request, body: Any) -> Response:
    params: ChatCompletionRequest = protocol.parse(ChatCompletionRequest, body)
    check_model(runtime, params.model)
    prompt = render_chat(runtime, params)
    limit, param = params.token_limit
    max_tokens = check_context(runtime, [prompt], limit, param, None)
    job = Job("chat", [prompt], params.n, max_tokens,
              sampling_params(params.temperature, params.top_p, params.top_k, params.seed),
              params.stop or [], params.speculative, params.engine_logprobs, store=params.store, metadata=params.metadata)
    return await respond(runtime, request, job, ChatFormatter(runtime, params), params.stream, params.include_usage)


def render_chat(runtime: Runtime, params: ChatCompletionRequest) -> list[int]:
    tokenizer = runtime.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise errors.invalid(f"model '{runtime.model_id}' has no chat template; use /v1/completions", "messages")
    messages = []
    for message in params.messages:
        entry = {"role": "system" if message.role == "developer" else message.role, "content": message.text()}
        if message.name:
            entry["name"] = message.name
        messages.append(entry)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


class ChatFormatter:
    def __init__(self, runtime: Runtime, params: ChatCompletionRequest) -> None:
        self.runtime = runtime
        self.params = params
        self.id = protocol.new_id("chatcmpl")
        self.created = protocol.now()
        self._usage_field = {"usage": None} if params.include_usage else {}

    def _envelope(self, choices: list[dict]) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.runtime.model_id, "system_fingerprint": None, "choices": choices, **self._usage_field}

    def opening(self) -> list[dict]:
        return [self._envelope([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}]) for i in range(self.params.n)]

    def _logprobs(self, tokens: list[EmittedToken]) -> dict | None:
        return chat_logprobs(tokens) if self.params.logprobs else None

    def chunk(self, event: ChoiceEvent) -> dict | None:
        if event.finish_reason is not None or event.text or event.tokens:
            delta = {"content": event.text} if event.text else {}
        else:
            return None
        return self._envelope([{"index": event.index, "delta": delta, "logprobs": self._logprobs(event.tokens),
                                "finish_reason": event.finish_reason}])

    def _usage(self, outcome: JobOutcome) -> dict:
        return protocol.usage(outcome.prompt_tokens, outcome.completion_tokens,
                              outcome.usage_speculative())

    def usage_chunk(self, outcome: JobOutcome) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.runtime.model_id, "system_fingerprint": None, "choices": [], "usage": self._usage(outcome)}

    def response(self, texts: dict[int, str], tokens: dict[int, list[EmittedToken]], outcome: JobOutcome) -> dict:
        choices = [{"index": i, "message": {"role": "assistant", "content": texts.get(i, ""), "refusal": None},
                    "logprobs": self._logprobs(tokens.get(i, [])), "finish_reason": outcome.finish_reasons[i]}
                   for i in range(len(outcome.finish_reasons))]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.runtime.model_id,
                "system_fingerprint": None, "choices": choices, "usage": self._usage(outcome)}
