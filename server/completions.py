"""POST /v1/completions: prompts (text or token ids, one or many) -> OpenAI `text_completion` objects or chunks."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from server import errors, protocol
from server.job import ChoiceEvent, Job, JobOutcome, check_context, sampling_params
from server.logprobs import EmittedToken, completion_logprobs
from server.protocol import CompletionRequest
from server.runtime import Runtime
from server.serving import respond


async def create_completion(runtime: Runtime, request: Request, body: Any) -> Response:
    params: CompletionRequest = protocol.parse(CompletionRequest, body)
    check_model(runtime, params.model)
    prompts, texts = tokenize_prompts(runtime, params.prompt)
    max_tokens = check_context(runtime, prompts, params.max_tokens, "max_tokens", runtime.settings.default_completion_tokens)
    job = Job("completions", prompts, params.n, max_tokens,
              sampling_params(params.temperature, params.top_p, params.top_k, params.seed),
              params.stop or [], params.speculative, params.logprobs,
              prompt_logprobs=params.echo and params.logprobs is not None, store=params.store, metadata=params.metadata)
    formatter = CompletionFormatter(runtime, params, texts if params.echo else None)
    return await respond(runtime, request, job, formatter, params.stream, params.include_usage)


def check_model(runtime: Runtime, model: str) -> None:
    if model != runtime.model_id:
        raise errors.model_not_found(model, runtime.model_id)


def tokenize_prompts(runtime: Runtime, prompt: Any) -> tuple[list[list[int]], list[str]]:
    """Token ids and text of each prompt (OpenAI accepts a string, strings, token ids, or lists of token ids)."""
    tokenizer = runtime.tokenizer
    if isinstance(prompt, str):
        prompt = [prompt]
    elif prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    ids, texts = [], []
    vocab_size = len(tokenizer)
    for item in prompt:
        if isinstance(item, str):
            if not item:
                raise errors.invalid("prompt must not be empty", "prompt")
            ids.append(tokenizer.encode(item))
            texts.append(item)
        else:
            bad = [t for t in item if not 0 <= t < vocab_size]
            if bad:
                raise errors.invalid(f"prompt token ids must be in [0, {vocab_size}), got {bad[0]}", "prompt")
            ids.append(list(item))
            texts.append(tokenizer.decode(item))
    return ids, texts


class CompletionFormatter:
    def __init__(self, runtime: Runtime, params: CompletionRequest, echo_texts: list[str] | None) -> None:
        self.runtime = runtime
        self.params = params
        self.echo_texts = echo_texts
        self.id = protocol.new_id("cmpl")
        self.created = protocol.now()
        self._usage_field = {"usage": None} if params.include_usage else {}

    def _envelope(self, choices: list[dict]) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.runtime.model_id, "choices": choices, **self._usage_field}

    def _echo(self, index: int) -> str:
        return self.echo_texts[index // self.params.n] if self.echo_texts else ""

    def opening(self) -> list[dict]:
        if not self.echo_texts or self.params.logprobs is not None:  # with logprobs the echo waits for its scores
            return []
        count = len(self.echo_texts) * self.params.n
        return [self._envelope([{"index": i, "text": self._echo(i), "logprobs": None, "finish_reason": None}])
                for i in range(count)]

    def _logprobs(self, index: int, tokens: list[EmittedToken], scored_prompt: list[EmittedToken] | None = None) -> dict | None:
        """Generated tokens' offsets count from the start of the choice's text, so past an echoed prompt."""
        if self.params.logprobs is None:
            return None
        if scored_prompt is None:
            return completion_logprobs(tokens, offset=len(self._echo(index)))
        scored = completion_logprobs(scored_prompt)
        for name, values in completion_logprobs(tokens, offset=len(self._echo(index))).items():
            scored[name] += values
        return scored

    def chunk(self, event: ChoiceEvent) -> dict | None:
        if event.scored_prompt is not None:
            return self._envelope([{"index": event.index, "text": self._echo(event.index),
                                    "logprobs": self._logprobs(event.index, [], event.scored_prompt), "finish_reason": None}])
        if not event.text and not event.tokens and event.finish_reason is None:
            return None
        return self._envelope([{"index": event.index, "text": event.text,
                                "logprobs": self._logprobs(event.index, event.tokens), "finish_reason": event.finish_reason}])

    def usage_chunk(self, outcome: JobOutcome) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.runtime.model_id,
                "choices": [], "usage": self._usage(outcome)}

    def _usage(self, outcome: JobOutcome) -> dict:
        return protocol.usage(outcome.prompt_tokens, outcome.completion_tokens,
                              outcome.usage_speculative())

    def response(self, texts: dict[int, str], tokens: dict[int, list[EmittedToken]], outcome: JobOutcome) -> dict:
        choices = [{"index": i, "text": self._echo(i) + texts.get(i, ""),
                    "logprobs": self._logprobs(i, tokens.get(i, []), outcome.scored_prompts.get(i)),
                    "finish_reason": outcome.finish_reasons[i]} for i in range(len(outcome.finish_reasons))]
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.runtime.model_id,
                "choices": choices, "usage": self._usage(outcome)}
