"""The speculative decoding loop: prefill, propose, verify, roll back, repeat.

Boundary: token ids in, verified token groups out. The engine owns a pool of target KV sessions (one
per concurrent generation) and a proposer (draft model, prompt lookup, or none for plain decoding). It
knows nothing about tokenizers, text, stop strings or HTTP.

Invariant of the loop: the target's cache holds the context minus its last token, so each step feeds
[last token] + draft and gets k+1 rows of logits in one call; rejected draft tokens are masked out.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from drafting.adaptive import AdaptiveDraftLength, FixedDraftLength
from drafting.errors import ContextLengthError
from drafting.kv_session import KVSession
from drafting.logprobs import TokenLogprob, token_logprobs
from drafting.ov_model import StatefulCausalLM
from drafting.proposer import DraftStop, Proposer, ProposerSession
from drafting.rejection import verify
from drafting.request import GenerationRequest, GenerationResult, TokenGroup
from drafting.sampling import SamplingParams, probabilities, sample
from drafting.stats import GenerationStats, StepStats


PROMPT_SCORE_CHUNK = 256  # prompt tokens per call when the request scores its prompt


@dataclass
class EngineConfig:
    num_draft_tokens: int = 5  # k when the request does not say
    adaptive: bool = False  # adaptive draft length when the request does not say
    max_sessions: int = 4  # generations that may run at once (each holds a target KV cache)
    # Drafting is turned off while more than this many generations run (None: never). Concurrent
    # generations already keep the cores busy, and verifying k+1 tokens then costs real compute.
    speculative_max_concurrency: int | None = None


class _Slot:
    """One target KV cache plus the proposer session that goes with it."""

    def __init__(self, target: StatefulCausalLM):
        self.target: KVSession = target.new_session()
        self.proposer: Proposer | None = None
        self.proposer_session: ProposerSession | None = None

    def session_for(self, proposer: Proposer) -> ProposerSession:
        if self.proposer is not proposer:
            if self.proposer_session is not None:
                self.proposer_session.close()
            self.proposer, self.proposer_session = proposer, proposer.new_session()
        return self.proposer_session


class Engine:
    def __init__(self, target: StatefulCausalLM, proposer: Proposer | None = None,
                 config: EngineConfig | None = None, eos_token_ids: frozenset[int] = frozenset()):
        self.target = target
        self.proposer = proposer
        self.config = config or EngineConfig()
        self.eos_token_ids = eos_token_ids  # the model's defaults, for callers that build requests
        self._slots: queue.LifoQueue[_Slot] = queue.LifoQueue()  # LIFO: the warmest cache first
        for _ in range(self.config.max_sessions):
            self._slots.put(_Slot(target))
        self._active = 0
        self._lock = threading.Lock()

    @property
    def max_context(self) -> int:
        return self.target.max_context

    @property
    def proposer_name(self) -> str | None:
        return self.proposer.name if self.proposer else None

    @property
    def active(self) -> int:
        return self._active

    def forget_cached_prefixes(self) -> None:
        """Empty every idle session's KV caches (target and draft): the next request pays its whole prefill.

        For benchmarks: prefix reuse would otherwise let a prompt run again skip its prefill, which flatters
        every configuration but the first to see that prompt.
        """
        idle = []
        while True:
            try:
                idle.append(self._slots.get_nowait())
            except queue.Empty:
                break
        for slot in idle:
            slot.target.reset()
            if slot.proposer_session is not None:
                slot.proposer_session.close()
            self._slots.put(slot)

    def set_proposer(self, proposer: Proposer | None) -> None:
        """Swap the proposer; generations already running keep the one they started with."""
        self.proposer = proposer

    def start(self, request: GenerationRequest, cancel: threading.Event | None = None,
              timeout: float | None = None) -> "Generation":
        """Reserve a session (blocking up to `timeout`) and return the generation to iterate."""
        prompt_tokens = len(request.prompt_ids)
        if prompt_tokens + request.max_new_tokens > self.max_context:
            raise ContextLengthError(prompt_tokens, request.max_new_tokens, self.max_context)
        bad = [t for t in request.prompt_ids if not 0 <= t < self.target.vocab_size]
        if bad:
            raise ValueError(f"prompt_ids must be in [0, {self.target.vocab_size}), got {bad[0]}")
        slot = self._slots.get(timeout=timeout)
        with self._lock:
            self._active += 1
        return Generation(self, slot, request, cancel or threading.Event(), self.proposer)

    def generate_all(self, request: GenerationRequest, cancel: threading.Event | None = None) -> GenerationResult:
        generation = self.start(request, cancel)
        with generation:
            for _ in generation:
                pass
        return GenerationResult(generation.token_ids, generation.finish_reason, generation.stats)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            self._active -= 1
        self._slots.put(slot)

    def _speculation_allowed(self) -> bool:
        limit = self.config.speculative_max_concurrency
        return limit is None or self._active <= limit


class Generation:
    """One running request: iterate it for verified token groups; `stats` is updated live."""

    def __init__(self, engine: Engine, slot: _Slot, request: GenerationRequest, cancel: threading.Event,
                 proposer: Proposer | None):
        self.engine, self.request, self.cancel = engine, request, cancel
        self._slot: _Slot | None = slot
        self.proposer = proposer if request.speculative else None
        self.stats = GenerationStats(prompt_tokens=len(request.prompt_ids))
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None
        self._steps = self._run()

    def __iter__(self) -> Iterator[TokenGroup]:
        try:
            yield from self._steps
        finally:
            self.close()

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop (if running) and give the session back; safe to call more than once."""
        slot, self._slot = self._slot, None
        if slot is not None:
            self._steps.close()
            if self.finish_reason is None:
                self.finish_reason = "cancelled"
            self.engine._release(slot)

    # --- the ladder: prefill, pick, speculative_step, run -------------------------------------------

    def _prefill(self, target: KVSession, rng: np.random.Generator | None,
                 ) -> tuple[int, list[TokenLogprob] | None, list[TokenLogprob | None] | None]:
        """The first token, its logprob and, when the request asks, the prompt's logprobs."""
        prompt = self.request.prompt_ids
        start = time.perf_counter()
        scored = None
        if self.request.prompt_logprobs:
            logits, scored = self._score_prompt(target)
        else:
            kept = target.sync(prompt)
            logits = target.forward(prompt[kept:], 1)
        token = self._pick(logits[0], rng)
        self.stats.prefill_time_s = time.perf_counter() - start
        return token, self._logprobs(logits, [token]), scored

    def _score_prompt(self, target: KVSession) -> tuple[np.ndarray, list[TokenLogprob | None]]:
        """Prefill the whole prompt in chunks, keeping each token's logprob; returns the last row's logits [1, vocab]
        and the prompt's logprobs.

        Chunks bound the memory of all-position logits (vocab x 4 bytes per token: 600 kB for Qwen)."""
        prompt, num_top = self.request.prompt_ids, self.request.logprobs
        target.reset()
        scored: list[TokenLogprob | None] = [None]  # nothing predicts the first token
        for begin in range(0, len(prompt), PROMPT_SCORE_CHUNK):
            chunk = prompt[begin:begin + PROMPT_SCORE_CHUNK]
            logits = target.forward(chunk, len(chunk))  # row i predicts prompt[begin + i + 1]
            following = prompt[begin + 1:begin + len(chunk) + 1]
            scored.extend(token_logprobs(logits[:len(following)], following, num_top))
        return logits[-1:], scored

    def _logprobs(self, logits: np.ndarray, tokens: list[int]) -> list[TokenLogprob] | None:
        if self.request.logprobs is None:
            return None
        return token_logprobs(logits, tokens, self.request.logprobs)

    def _pick(self, logits: np.ndarray, rng: np.random.Generator | None) -> int:
        params = self.request.sampling
        if params.greedy:
            return int(logits.argmax())
        return sample(probabilities(logits, params), rng)

    def _speculative_step(self, target: KVSession, session: ProposerSession | None, context: list[int], k: int,
                          rng: np.random.Generator | None, stop: DraftStop | None = None, limit: int = 0,
                          ) -> tuple[list[int], StepStats, list[TokenLogprob] | None]:
        params: SamplingParams = self.request.sampling
        draft_ids, draft_probs, draft_time = [], None, 0.0
        if session is not None:  # even at k = 0: a draft + lookup proposer may still copy
            limit = max(k, limit)
            start = time.perf_counter()
            draft_ids, draft_probs = session.propose(context, k, params, rng, stop, limit=limit)
            assert len(draft_ids) <= limit, (len(draft_ids), k, limit)
            draft_time = time.perf_counter() - start
        start = time.perf_counter()
        logits = target.forward([context[-1]] + draft_ids, len(draft_ids) + 1)  # [k + 1, vocab]
        accepted, next_token = verify(draft_ids, draft_probs, logits, params, rng)
        new_tokens = draft_ids[:accepted] + [next_token]
        logprobs = self._logprobs(logits, new_tokens)  # before truncate: logits is a view of the output
        target.truncate(len(context) + accepted)
        target_time = time.perf_counter() - start
        return new_tokens, StepStats(len(draft_ids), accepted, len(new_tokens), draft_time, target_time), logprobs

    def _run(self) -> Iterator[TokenGroup]:
        request, stats, slot = self.request, self.stats, self._slot
        started = time.perf_counter()
        rng = None if request.sampling.greedy else np.random.default_rng(request.sampling.seed)
        session = slot.session_for(self.proposer) if self.proposer is not None else None
        k_default = request.num_draft_tokens or self.engine.config.num_draft_tokens
        adaptive = self.engine.config.adaptive if request.adaptive is None else request.adaptive
        policy = AdaptiveDraftLength(initial_k=k_default) if adaptive else FixedDraftLength(k_default)

        first, logprobs, prompt_logprobs = self._prefill(slot.target, rng)
        context = list(request.prompt_ids)
        yield self._emit([first], None, context, started, logprobs=logprobs, prompt_logprobs=prompt_logprobs)
        while self.finish_reason is None:
            if self.cancel.is_set():
                self.finish_reason = "cancelled"
                yield TokenGroup([], "cancelled", None, 0)
                return
            remaining = request.max_new_tokens - len(self.token_ids)
            proposing = session if session is not None and self.engine._speculation_allowed() else None
            k = max(0, min(policy.next_k(), remaining - 1)) if proposing is not None else 0
            new_tokens, step, logprobs = self._speculative_step(slot.target, proposing, context, k, rng,
                                                                policy.draft_stop(), limit=remaining - 1)
            if proposing is not None:
                if not proposing.last_was_copy:  # a copy's length and acceptance say nothing about the model's
                    policy.observe(step.num_drafted, step.num_accepted, step.draft_time_s, step.target_time_s,
                                   proposing.last_catch_up_s if step.num_drafted else 0.0)
                proposing.observe(step.num_drafted, step.num_accepted)
            yield self._emit(new_tokens, step, context, started, k, logprobs)

    def _emit(self, new_tokens: list[int], step: StepStats | None, context: list[int], started: float,
              k: int = 0, logprobs: list[TokenLogprob] | None = None,
              prompt_logprobs: list[TokenLogprob | None] | None = None) -> TokenGroup:
        """Apply EOS and length limits to a verified group, record it, and wrap it for the caller."""
        request = self.request
        for i, token in enumerate(new_tokens):
            if token in request.stop_token_ids:
                new_tokens, self.finish_reason = new_tokens[:i + 1], "stop"
                break
        room = request.max_new_tokens - len(self.token_ids)
        if len(new_tokens) >= room:
            if len(new_tokens) > room or self.finish_reason is None:
                self.finish_reason = "length"
            new_tokens = new_tokens[:room]
        if step is not None:
            step = StepStats(step.num_drafted, step.num_accepted, len(new_tokens), step.draft_time_s, step.target_time_s)
            self.stats.record(step)
        self.token_ids.extend(new_tokens)
        context.extend(new_tokens)
        self.stats.generated_tokens = len(self.token_ids)
        self.stats.total_time_s = time.perf_counter() - started
        return TokenGroup(new_tokens, self.finish_reason, step, k,
                          logprobs[:len(new_tokens)] if logprobs is not None else None, prompt_logprobs)
