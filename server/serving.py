"""The job loop: admit a Job, generate its choices, and answer as one JSON body or as an SSE stream, recording the
request's metrics.

Endpoint-specific shapes (completion vs chat chunks) live in completions.py and chat.py; both build a `Job`
(job.py) and hand it to `respond()` with a `Formatter`. One choice's generation is text_generation.py's;
waiting for a slot is admission.py's; the wire framing is sse.py's.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from contextlib import aclosing
from typing import AsyncIterator, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from server import errors
from server.admission import ClientGone, admit, unless_disconnected
from server.job import ChoiceEvent, Job, JobOutcome, choose_speculation
from server.logprobs import EmittedToken
from server.runtime import Runtime
from server.sse import DONE, JobStreamResponse, sse
from server.text_generation import TextGeneration

log = logging.getLogger(__name__)


async def run_job(runtime: Runtime, job: Job, outcome: JobOutcome) -> AsyncIterator[ChoiceEvent]:
    """Generate the choices of every prompt together (the caller holds a running slot): the engine batches them
    into its steps, so n choices or a list of prompts cost about what one does on a machine with room in its
    batch. At most the engine's batch limit run at once; the rest start, in order, as those end. Yields text as
    tokens are verified; choices interleave, each choice's events in order."""
    choices = [(prompt_index, j) for prompt_index in range(len(job.prompts)) for j in range(job.n)]
    outcome.finish_reasons = [""] * len(choices)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    batch_room = asyncio.Semaphore(runtime.engine.config.max_running)  # wakes its waiters first come, first served
    # echo with logprobs: a prompt is scored once, by its first choice; the others wait for it, then reuse it
    scored_prompts = {p: loop.create_future() for p in range(len(job.prompts))} if job.prompt_logprobs else {}

    async def run_choice(prompt_index: int, j: int) -> None:
        index, prompt_ids, sampling = prompt_index * job.n + j, job.prompts[prompt_index], job.sampling
        if sampling.seed is not None and j:
            # distinct but reproducible seeds for the n choices of one prompt
            sampling = dataclasses.replace(sampling, seed=sampling.seed + j)
        scorer = job.prompt_logprobs and j == 0
        if job.prompt_logprobs and not scorer:
            scored = outcome.scored_prompts[index] = await scored_prompts[prompt_index]
            events.put_nowait(ChoiceEvent(index, "", None, scored_prompt=scored))
        choice = TextGeneration(runtime, prompt_ids, job, sampling, outcome.speculative, score_prompt=scorer,
                                count_prompt=j == 0)
        async for text, tokens in choice:
            if scorer and choice.scored_prompt is not None and not scored_prompts[prompt_index].done():
                outcome.scored_prompts[index] = choice.scored_prompt
                scored_prompts[prompt_index].set_result(choice.scored_prompt)
                events.put_nowait(ChoiceEvent(index, "", None, scored_prompt=choice.scored_prompt))
            if text or tokens:
                events.put_nowait(ChoiceEvent(index, text, None, tokens))
        if scorer and not scored_prompts[prompt_index].done():
            raise errors.internal("the prompt was not scored")
        if j == 0:
            outcome.prompt_tokens += len(prompt_ids)  # usage counts a prompt once, as OpenAI does, whatever n
        outcome.completion_tokens += choice.completion_tokens
        outcome.finish_reasons[index] = choice.finish_reason
        if choice.stats is not None:
            outcome.stats.merge(choice.stats)
        events.put_nowait(ChoiceEvent(index, "", choice.finish_reason))  # its last event

    async def reporting(prompt_index: int, j: int) -> None:
        try:
            async with batch_room:
                await run_choice(prompt_index, j)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the consumer, which stops every choice
            events.put_nowait(error)

    tasks = [asyncio.create_task(reporting(prompt_index, j)) for prompt_index, j in choices]
    try:
        running = len(tasks)
        while running:
            item = await events.get()
            if isinstance(item, BaseException):
                raise item
            if item.finish_reason is not None:
                running -= 1
            yield item
    finally:  # the client left, or a choice failed: stop the others (each cancels its engine sequence)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
            async with aclosing(run_job(runtime, job, outcome)) as events:
                async for event in events:
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
            async with aclosing(run_job(runtime, job, outcome)) as events:
                async for event in events:
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


def record_request(runtime: Runtime, job: Job, status: int, finish_reason: str) -> None:
    metrics = runtime.metrics
    metrics.requests.labels(job.endpoint, str(status), finish_reason).inc()
    metrics.e2e.labels(job.endpoint).observe(time.perf_counter() - job.arrival)
