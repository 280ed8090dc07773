"""Generation for HTTP requests: admission (scheduler), the speculation load policy, running the blocking engine in a
worker thread, token groups -> text (stop strings), metrics, and SSE framing.

Endpoint-specific shapes (completion vs chat chunks) live in completions.py and chat.py; both feed a `Job` to
`run_job()` and format the `ChoiceEvent`s it yields.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from contextlib import AsyncExitStack
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from drafting.errors import ContextLengthError
from drafting.request import GenerationRequest
from drafting.sampling import SamplingParams
from drafting.stats import GenerationStats
from server import errors
from server.logprobs import EmittedToken, LogprobAligner, prompt_token_logprobs
from server.protocol import SpeculativeOptions
from server.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A validated request: one or more prompts (token ids), n choices each, how to sample and when to stop."""

    endpoint: str  # "completions" | "chat"
    prompts: list[list[int]]
    n: int
    max_tokens: int
    sampling: SamplingParams
    stop: list[str]
    speculative: SpeculativeOptions | None
    logprobs: int | None = None  # None: none; n: each token's logprob and its n top alternatives
    prompt_logprobs: bool = False  # also score the prompt's tokens (completions with echo + logprobs)
    store: bool | None = None  # false: never captured (server/capture.py)
    metadata: dict[str, str] | None = None  # stored with a captured choice
    arrival: float = field(default_factory=time.perf_counter)


@dataclass
class ChoiceEvent:
    index: int  # choice index: prompt_index * n + j, as OpenAI numbers them
    text: str
    finish_reason: str | None  # set on the choice's last event only
    tokens: list[EmittedToken] = field(default_factory=list)  # logprobs of the tokens this text released
    scored_prompt: list[EmittedToken] | None = None  # the prompt's tokens and logprobs (once per choice, before its text)


@dataclass
class JobOutcome:
    """Filled while run_job() runs; read after it ends."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    stats: GenerationStats = field(default_factory=GenerationStats)
    speculative: bool = False
    finish_reasons: list[str] = field(default_factory=list)
    scored_prompts: dict[int, list[EmittedToken]] = field(default_factory=dict)  # choice index -> its scored prompt
    models: dict = field(default_factory=dict)  # Runtime.describe() when the request was admitted

    def usage_speculative(self) -> dict:
        s = self.stats
        return {
            "enabled": self.speculative, "proposer": self.models.get("proposer") if self.speculative else None,
            "draft": self.models.get("draft") if self.speculative else None,
            "drafts": s.drafts, "draft_tokens": s.draft_tokens, "accepted_tokens": s.accepted_tokens,
            "accepted_per_position": list(s.accepted_per_position),
            "reached_per_position": list(s.reached_per_position),
            "acceptance_per_position": [round(x, 4) for x in s.acceptance_per_position],
            "acceptance_rate": round(s.alpha, 4), "mean_accepted_length": round(s.mean_accepted_length, 4),
            "draft_time_s": round(s.draft_time_s, 4), "target_time_s": round(s.target_time_s, 4),
        }

    @property
    def finish_reason(self) -> str:
        """One label for the whole request (metrics): length if any choice was cut, else stop."""
        return "length" if "length" in self.finish_reasons else "stop"


def check_context(runtime: Runtime, prompts: list[list[int]], max_tokens: int | None, param: str,
                  default: int | None) -> int:
    """The max_tokens to run with, after the limit and context checks (400s naming the field and the limit)."""
    limit = runtime.settings.max_tokens_limit
    if max_tokens is not None and max_tokens > limit:
        raise errors.invalid(f"{param} must be <= {limit}, got {max_tokens}", param)
    max_context = runtime.engine.max_context
    longest = max(len(p) for p in prompts)
    if max_tokens is None:
        room = max_context - longest
        if room < 1:
            raise errors.context_length_exceeded(longest, 1, max_context, param)
        return min(default or limit, limit, room)
    if longest + max_tokens > max_context:
        raise errors.context_length_exceeded(longest, max_tokens, max_context, param)
    return max_tokens


def sampling_params(temperature: float | None, top_p: float | None, top_k: int | None, seed: int | None) -> SamplingParams:
    # OpenAI's default temperature is 1.0
    return SamplingParams(temperature=1.0 if temperature is None else float(temperature),
                          top_p=1.0 if top_p is None else float(top_p), top_k=top_k or 0, seed=seed)


def choose_speculation(runtime: Runtime, options: SpeculativeOptions | None) -> bool:
    """Whether this request may speculate. The load policy itself (if --spec-max-running is set: no drafting
    while more requests run) is applied by the engine at every step, so a long request stops drafting as soon
    as others arrive and resumes when they leave."""
    if options is not None and options.enabled is False:
        return False
    if not runtime.has_proposer:
        if options is not None and options.enabled:
            raise errors.invalid("speculative.enabled is true but this server runs without a draft "
                                 "(started with --no-draft)", "speculative.enabled")
        return False
    return True


async def admit(runtime: Runtime, request: Request) -> AsyncExitStack:
    """Wait (FIFO) for a running slot; the returned stack releases it. 429 when the queue is full."""
    stack = AsyncExitStack()
    waited = await unless_disconnected(request, lambda: stack.enter_async_context(runtime.scheduler.slot()))
    runtime.metrics.queue_wait.observe(waited)
    return stack


async def run_job(runtime: Runtime, job: Job, outcome: JobOutcome) -> AsyncIterator[ChoiceEvent]:
    """Generate every choice in turn (the caller holds a running slot); yields text as tokens are verified."""
    for prompt_index, prompt_ids in enumerate(job.prompts):
        scored = None
        for j in range(job.n):
            sampling = job.sampling
            if sampling.seed is not None and j:
                # distinct but reproducible seeds for the n choices of one prompt
                sampling = dataclasses.replace(sampling, seed=sampling.seed + j)
            # the prompt is scored once, by its first choice
            choice = TextGeneration(runtime, prompt_ids, job, sampling, outcome.speculative,
                                    score_prompt=job.prompt_logprobs and j == 0, count_prompt=j == 0)
            index = prompt_index * job.n + j
            if scored is not None:
                outcome.scored_prompts[index] = scored
                yield ChoiceEvent(index, "", None, scored_prompt=scored)
            async for text, tokens in choice:
                if choice.scored_prompt is not None and scored is None:
                    scored = outcome.scored_prompts[index] = choice.scored_prompt
                    yield ChoiceEvent(index, "", None, scored_prompt=scored)
                if text or tokens:
                    yield ChoiceEvent(index, text, None, tokens)
            if j == 0:
                outcome.prompt_tokens += len(prompt_ids)  # usage counts a prompt once, as OpenAI does, whatever n
            outcome.completion_tokens += choice.completion_tokens
            outcome.finish_reasons.append(choice.finish_reason)
            if choice.stats is not None:
                outcome.stats.merge(choice.stats)
            yield ChoiceEvent(index, "", choice.finish_reason)


class Formatter(Protocol):
    """Endpoint-specific shapes (completions.py, chat.py)."""

    def opening(self) -> list[dict]: ...  # chunks sent before any generated text (chat role, echoed prompt)
    def chunk(self, event: ChoiceEvent) -> dict | None: ...  # None: nothing worth sending
    def usage_chunk(self, outcome: JobOutcome) -> dict: ...
    def response(self, texts: dict[int, str], tokens: dict[int, list[EmittedToken]], outcome: JobOutcome) -> dict: ...


async def respond(runtime: Runtime, request: Request, job: Job, formatter: Formatter, stream: bool,
                  include_usage: bool) -> Response:
    """Admit, generate, and answer as one JSON body or as an SSE stream; records the request's metrics."""
    outcome = JobOutcome(speculative=choose_speculation(runtime, job.speculative))
    try:
        stack = await admit(runtime, request)
    except ClientGone:
        record_request(runtime, job, 499, "cancelled")
        return Response(status_code=499)
    outcome.models = runtime.describe()
    if not stream:
        tokens: dict[int, list[EmittedToken]] = collections.defaultdict(list)

        async def collect() -> dict[int, str]:
            texts: dict[int, list[str]] = collections.defaultdict(list)
            async for event in run_job(runtime, job, outcome):
                texts[event.index].append(event.text)
                tokens[event.index].extend(event.tokens)
            return {index: "".join(parts) for index, parts in texts.items()}

        try:
            texts = await unless_disconnected(request, collect)
        except ClientGone:
            record_request(runtime, job, 499, "cancelled")
            return Response(status_code=499)
        except errors.APIError as error:
            record_request(runtime, job, error.status, "error")
            error.recorded = True
            raise
        except Exception:
            record_request(runtime, job, 500, "error")
            raise
        finally:
            await stack.aclose()
        record_request(runtime, job, 200, outcome.finish_reason)
        return JSONResponse(formatter.response(texts, tokens, outcome))

    async def body() -> AsyncIterator[bytes]:
        status, reason = 200, "error"
        try:
            for chunk in formatter.opening():
                yield sse(chunk)
            async for event in run_job(runtime, job, outcome):
                chunk = formatter.chunk(event)
                if chunk is not None:
                    yield sse(chunk)
            if include_usage:
                yield sse(formatter.usage_chunk(outcome))
            reason = outcome.finish_reason
        except errors.APIError as error:  # after the stream started: an error event, then [DONE]
            status = error.status
            yield sse(error.body())
        except (asyncio.CancelledError, GeneratorExit):
            status, reason = 499, "cancelled"
            raise
        except Exception:
            log.exception("stream failed")
            status = 500
            yield sse(errors.internal().body())
        finally:
            record_request(runtime, job, status, reason)
        yield DONE

    return JobStreamResponse(body(), on_close=stack.aclose)


class JobStreamResponse(StreamingResponse):
    """An SSE response that always closes its generator (cancelling the engine) and releases its running slot,
    even when the client disconnects before the first chunk."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            finally:
                await self._on_close()


def record_request(runtime: Runtime, job: Job, status: int, finish_reason: str) -> None:
    metrics = runtime.metrics
    metrics.requests.labels(job.endpoint, str(status), finish_reason).inc()
    metrics.e2e.labels(job.endpoint).observe(time.perf_counter() - job.arrival)


class TextGeneration:
    """One choice: the engine iterated in a worker thread, token groups turned into text, metrics recorded live.

    Iterate it for (text piece, the tokens whose text is now released, with their logprobs if the job asked);
    afterwards read finish_reason ("stop" | "length"), completion_tokens and stats.
    Leaving the iteration early (client gone, error) sets the cancel event: the engine stops within one step.
    """

    def __init__(self, runtime: Runtime, prompt_ids: list[int], job: Job, sampling: SamplingParams, speculative: bool,
                 score_prompt: bool = False, count_prompt: bool = True) -> None:
        options = job.speculative
        self.runtime = runtime
        self.job = job
        capture = runtime.capture
        self.captured: tuple[list[int], list] | None = None  # (output ids, target top) when this choice is captured
        if capture is not None and capture.wants(job.store):
            self.captured, self._models = ([], []), runtime.describe()  # the models at the start of the choice
        self.request = GenerationRequest(
            prompt_ids=list(prompt_ids), max_new_tokens=job.max_tokens, sampling=sampling,
            stop_token_ids=runtime.stop_token_ids, speculative=speculative,
            num_draft_tokens=options.num_draft_tokens if options else None,
            adaptive=options.adaptive if options else None, logprobs=job.logprobs, prompt_logprobs=score_prompt,
            capture_top_logprobs=capture.top_logprobs if self.captured is not None else 0)
        self.scored_prompt: list[EmittedToken] | None = None  # set from the first group when score_prompt
        self.cancel = threading.Event()
        self.finish_reason: str | None = None
        self.completion_tokens = 0
        self.stats: GenerationStats | None = None
        self.speculation = "enabled" if speculative else "disabled"  # the ttft label: known before any token
        self.count_prompt = count_prompt  # the first choice of a prompt counts it on /metrics; the rest reuse it

    async def __aiter__(self) -> AsyncIterator[tuple[str, list[EmittedToken]]]:
        from drafting.detokenize import IncrementalDetokenizer

        runtime, metrics = self.runtime, self.runtime.metrics
        detokenizer = IncrementalDetokenizer(runtime.tokenizer, self.job.stop)
        aligner = LogprobAligner(runtime.tokenizer) if self.job.logprobs is not None else None
        queue: asyncio.Queue = asyncio.Queue()
        self._start_worker(asyncio.get_running_loop(), queue)
        if self.count_prompt:
            metrics.prompt_tokens.inc(len(self.request.prompt_ids))
        first_token_at = None
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Finished):
                    self.stats = item.stats
                    break
                if isinstance(item, BaseException):
                    raise _engine_error(item)
                group = item
                if group.step is not None:
                    metrics.record_step(group.step)
                if self.captured is not None and group.target_top is not None:
                    self.captured[0].extend(group.token_ids)  # every token the target emitted, past a stop string too
                    self.captured[1].extend(group.target_top)
                if group.prompt_logprobs is not None:
                    self.scored_prompt = prompt_token_logprobs(runtime.tokenizer, self.request.prompt_ids, group.prompt_logprobs)
                    yield "", []
                if self.finish_reason is not None:
                    continue  # a stop string already ended this choice: drain until the engine confirms
                if group.token_ids and first_token_at is None:
                    first_token_at = time.perf_counter()
                    metrics.ttft.labels(self.speculation).observe(first_token_at - self.job.arrival)
                self.completion_tokens += len(group.token_ids)
                metrics.generation_tokens.inc(len(group.token_ids))
                if aligner is not None:
                    aligner.add([lp for lp in group.logprobs or [] if lp.token_id not in runtime.stop_token_ids])
                text = detokenizer.push([t for t in group.token_ids if t not in runtime.stop_token_ids])
                if detokenizer.stopped:
                    self.finish_reason = "stop"
                    self.cancel.set()
                elif group.finish_reason is not None:
                    self.finish_reason = "length" if group.finish_reason == "length" else "stop"
                    text += detokenizer.flush()
                tokens = []
                if aligner is not None:
                    ended = group.finish_reason is not None and not detokenizer.stopped  # all text is released
                    tokens = aligner.release(detokenizer.text, final=ended)
                if text or tokens:
                    yield text, tokens
            if self.finish_reason is None:  # the engine ended without a reason we know: report what it was
                raise errors.internal("generation ended without a finish reason")
            if self.captured is not None and self.captured[0]:
                self._offer_capture()
            if first_token_at is not None and self.completion_tokens > 1:
                mode = "speculative" if self.stats is not None and self.stats.drafts else "plain"
                metrics.tpot.labels(mode).observe((time.perf_counter() - first_token_at) / (self.completion_tokens - 1))
        finally:
            self.cancel.set()  # no-op after a normal end; stops the engine when the consumer went away

    def _offer_capture(self) -> None:
        from server.capture import capture_record

        runtime, (output_ids, target_top) = self.runtime, self.captured
        runtime.capture.offer(capture_record(
            endpoint=self.job.endpoint, metadata=self.job.metadata, models=self._models,
            vocab_size=runtime.engine.target.vocab_size, finish_reason=self.finish_reason,
            sampling=self.request.sampling, prompt_ids=self.request.prompt_ids, output_ids=output_ids,
            target_top=target_top, top_logprobs=self.request.capture_top_logprobs))

    def _start_worker(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        engine, request, cancel = self.runtime.engine, self.request, self.cancel

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed: the server is shutting down
                cancel.set()

        def work() -> None:
            try:
                generation = engine.start(request, cancel=cancel)
                for group in generation:
                    put(group)
                put(_Finished(generation.stats))
            except BaseException as error:  # delivered to the event loop, which decides what the client sees
                put(error)

        threading.Thread(target=work, name="fastdraft-generation", daemon=True).start()


@dataclass
class _Finished:
    stats: GenerationStats


def _engine_error(error: BaseException) -> errors.APIError:
    """What the client sees of an engine failure: a context overflow is its request's fault (400); anything else
    got past validation, so it is ours: a 500 with a generic message, the traceback in the server's log."""
    if isinstance(error, ContextLengthError):
        return errors.context_length_exceeded(error.prompt_tokens, error.max_new_tokens, error.max_context, "max_tokens")
    log.error("engine failed", exc_info=error)
    return errors.internal("the engine failed on this request; the server log has the details")


# --- client disconnects and SSE

async def until_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Callable[[], Any]) -> Any:
    """Run `work()` (a coroutine function) but cancel it when the client goes away; returns its result."""
    task = asyncio.ensure_future(work())
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise ClientGone()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


class ClientGone(Exception):
    """The client disconnected before the response was complete."""


def sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n".encode()


DONE = sse("[DONE]")
