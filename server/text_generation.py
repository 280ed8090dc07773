"""One choice's generation bridged from the engine's thread to the event loop: token groups in, text and logprobs
out (incremental detokenizing, stop strings), live metrics, capture, and cancellation when the consumer leaves.

Boundary: one prompt, one choice; the job loop over prompts and choices is serving.py's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from drafting.detokenize import IncrementalDetokenizer
from drafting.errors import ContextLengthError
from drafting.request import GenerationRequest
from drafting.sampling import SamplingParams
from drafting.stats import GenerationStats
from server import errors
from server.job import Job
from server.logprobs import EmittedToken, LogprobAligner, prompt_token_logprobs
from server.runtime import Runtime

log = logging.getLogger(__name__)


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
        started = time.perf_counter()
        record = capture_record(
            endpoint=self.job.endpoint, metadata=self.job.metadata, models=self._models,
            vocab_size=runtime.engine.target.vocab_size, finish_reason=self.finish_reason,
            sampling=self.request.sampling, prompt_ids=self.request.prompt_ids, output_ids=output_ids,
            target_top=target_top, top_logprobs=self.request.capture_top_logprobs)
        runtime.metrics.capture_seconds.labels("record").inc(time.perf_counter() - started)
        runtime.capture.offer(record)

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
