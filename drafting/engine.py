"""The speculative engine: one step loop that batches every running sequence into one target call per step.

Boundary: token ids in, verified token groups out. The engine owns the target (paged form, one KV block
pool shared by all sequences), the proposer, the draft-length policy and one background thread, the step
loop; callers `start()` a request and iterate the `Generation` it returns, from any thread. It knows
nothing about tokenizers, text, stop strings or HTTP.

One step, as data:
1. schedule (drafting/scheduler.py): admit waiting sequences while blocks allow, give each running one
   its tokens: a chunk of its prompt (the final chunk's last row gives the first token), or [last token] +
   k drafts; preempt the youngest when blocks run out;
2. propose: k per decoding sequence from the policy (drafting/adaptive.py), one batched proposer call;
3. run: one target call for all of them, logits only for the rows that need them;
4. verify each sequence (drafting/rejection.py), emit its tokens, roll its cache back to what was kept
   (a shorter length: rejected slots are overwritten next step), register its full blocks for reuse;
5. learn: the call's time per tokens fed, acceptance per position -> next step's k.

Invariant: a decoding sequence's cache holds its context minus the last token, so its step feeds
[last token] + drafts and gets k+1 rows of logits.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from drafting.adaptive import Acceptance, DecodingSequence, DraftLengthPolicy
from drafting.blocks import BlockTable
from drafting.cost_model import StepCostModel
from drafting.errors import ContextLengthError
from drafting.logprobs import TokenLogprob, token_logprobs
from drafting.paged_model import PagedBatch, PagedCausalLM
from drafting.proposer import Draft, DraftSlot, Proposer
from drafting.rejection import verify, verify_coupled, verify_greedy
from drafting.request import GenerationRequest, GenerationResult, TokenGroup
from drafting.scheduler import Scheduler, StepPlan
from drafting.seeded_noise import SeededNoise
from drafting.stats import GenerationStats, StepStats

log = logging.getLogger(__name__)

MAX_STEP_TOKENS = 256  # tokens one target call may carry: prompt chunks fill what decoding leaves
# call sizes whose learnt cost (against a 1-token call) each step reports: a step of 8 sequences drafting feeds 16-72
COST_REPORT_TOKENS = (2, 4, 8, 16, 32, 64)


@dataclass
class EngineConfig:
    num_draft_tokens: int = 3  # k when the draft length is fixed (adaptive off) and the request does not say
    adaptive: bool = True  # draft length per step from measured costs, when the request does not say
    max_running: int = 8  # sequences in the batch at once; more wait (FIFO)
    max_step_tokens: int = MAX_STEP_TOKENS
    # drafting is turned off while more than this many sequences run (None: the cost-driven policy decides)
    speculative_max_concurrency: int | None = None
    prefix_caching: bool = True  # a new sequence takes the cached blocks of its longest known prefix


@dataclass
class StepReport:
    """What one step did, for metrics."""

    batch_size: int  # sequences in the target call
    tokens: int  # tokens fed to the target
    draft_lengths: list[int]  # k chosen for the model per decoding sequence (0: plain, or a free copy only)
    target_seconds: float
    draft_seconds: float
    preempted: int
    # the cost model's price of a call feeding N tokens against a 1-token call, for N in COST_REPORT_TOKENS
    relative_costs: dict[int, float] = field(default_factory=dict)
    capture_seconds: float = 0.0  # of this step's time, scoring the top alternatives only a traffic capture asked for


@dataclass
class Sequence:
    """One running request inside the engine (touched by the step loop only, after start())."""

    id: int
    request: GenerationRequest
    cancel: threading.Event
    proposer: Proposer | None
    table: BlockTable
    out: "queue.Queue[TokenGroup | BaseException]"
    stats: GenerationStats
    context: list[int]
    rng: np.random.Generator | None
    noise: SeededNoise | None
    acceptance: Acceptance = field(default_factory=Acceptance)
    emitted: list[int] = field(default_factory=list)
    scored: list[TokenLogprob | None] | None = None  # prompt logprobs, when the request scores its prompt
    finish_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    admitted_at: int = -1  # step number of (the last) admission: the youngest is preempted first
    first_step_at: float | None = None

    @property
    def computed(self) -> int:
        return self.table.length

    @property
    def decoding(self) -> bool:
        return self.computed == len(self.context) - 1

    @property
    def prefill_end(self) -> int:
        """The cache length at which its context is read: all of it, so that the final chunk's last row gives its
        next token, unless it is to emit nothing (a request that only scores its prompt)."""
        return len(self.context) - (1 if len(self.emitted) >= self.request.max_new_tokens else 0)

    @property
    def draft_room(self) -> int:
        """Tokens it may still draft in one step: what is left of max_new_tokens beyond the target's own token."""
        return self.request.max_new_tokens - len(self.emitted) - 1


class Engine:
    def __init__(self, target: PagedCausalLM, proposer: Proposer | None = None, config: EngineConfig | None = None,
                 eos_token_ids: frozenset[int] = frozenset()):
        self.target = target
        self.proposer = proposer
        self.config = config or EngineConfig()
        self.eos_token_ids = eos_token_ids  # the model's defaults, for callers that build requests
        self.pool = target.pool
        self.costs = StepCostModel(draft_model=hasattr(proposer, "call_seconds"))
        self.policy = DraftLengthPolicy(self.costs)
        self.scheduler = Scheduler(self.pool, self.config.max_running, self.config.max_step_tokens,
                                   self.config.prefix_caching)
        self.step_listeners: list[Callable[[StepReport], None]] = []
        self.steps = 0
        self.preemptions = 0
        self._next_id = 0
        self._incoming: list[Sequence] = []  # started, not yet seen by the step loop (guarded by _wake)
        self._wake = threading.Condition()
        self._step_lock = threading.Lock()  # held for a whole step; forget_cached_prefixes waits for it
        self._thread: threading.Thread | None = None

    # --- what callers see ---------------------------------------------------------------------------

    @property
    def max_context(self) -> int:
        return self.target.max_context

    @property
    def proposer_name(self) -> str | None:
        return self.proposer.name if self.proposer else None

    @property
    def active(self) -> int:
        """Sequences running or waiting."""
        return self.scheduler.active + len(self._incoming)

    @property
    def blocks_used(self) -> int:
        return self.pool.used

    def set_proposer(self, proposer: Proposer | None) -> None:
        """Swap the proposer; sequences already running keep the one they started with."""
        if hasattr(proposer, "call_seconds") != self.costs.draft_model:
            self.costs = StepCostModel(draft_model=hasattr(proposer, "call_seconds"))
            self.policy = DraftLengthPolicy(self.costs)
        self.proposer = proposer

    def forget_cached_prefixes(self) -> None:
        """Drop every cached prompt prefix (target and draft): the next request pays its whole prefill.

        For benchmarks: prefix reuse would otherwise let a prompt run again skip its prefill, which flatters
        every configuration but the first to see that prompt.
        """
        with self._step_lock:
            self.pool.forget_cached()
            if self.proposer is not None:
                self.proposer.forget_cached()

    def start(self, request: GenerationRequest, cancel: threading.Event | None = None) -> "Generation":
        """Queue a request (it waits, FIFO, until the batch and the KV pool have room); iterate the returned
        generation for its tokens. Raises at once for a request that can never run (context, KV budget, ids)."""
        prompt_tokens = len(request.prompt_ids)
        if prompt_tokens + request.max_new_tokens > self.max_context:
            raise ContextLengthError(prompt_tokens, request.max_new_tokens, self.max_context)
        bad = [t for t in request.prompt_ids if not 0 <= t < self.target.vocab_size]
        if bad:
            raise ValueError(f"prompt_ids must be in [0, {self.target.vocab_size}), got {bad[0]}")
        capacity = self.pool.num_blocks * self.pool.block_size
        needed = prompt_tokens + request.max_new_tokens + self.policy.max_k + self.pool.block_size
        if needed > capacity:
            raise ValueError(f"prompt ({prompt_tokens} tokens) + max_tokens ({request.max_new_tokens}) must fit the KV "
                             f"cache budget of {capacity - self.policy.max_k - self.pool.block_size} tokens "
                             f"(raise --kv-cache-gb), got {prompt_tokens + request.max_new_tokens}")
        sampling = request.sampling
        seeded = not sampling.greedy and sampling.seed is not None
        with self._wake:
            self._next_id += 1
            sequence = Sequence(
                id=self._next_id, request=request, cancel=cancel or threading.Event(),
                proposer=self.proposer if request.speculative else None, table=BlockTable(self.pool),
                out=queue.Queue(), stats=GenerationStats(prompt_tokens=prompt_tokens),
                context=list(request.prompt_ids),
                rng=None if sampling.greedy else np.random.default_rng(sampling.seed),
                noise=SeededNoise(sampling.seed, self.target.vocab_size) if seeded else None,
                scored=[None] if request.prompt_logprobs else None)  # nothing predicts the first token
            self._incoming.append(sequence)
            self._ensure_loop()
            self._wake.notify_all()
        return Generation(self, sequence)

    def generate_all(self, request: GenerationRequest, cancel: threading.Event | None = None) -> GenerationResult:
        return self.start(request, cancel).result()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # --- the step loop ------------------------------------------------------------------------------

    def _ensure_loop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="fastdraft-engine", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self.scheduler.active and not self._incoming:
                    self._wake.wait()
                for sequence in self._incoming:  # only this thread touches the scheduler
                    self.scheduler.add(sequence)
                self._incoming.clear()
            with self._step_lock:
                try:
                    self._step()
                except Exception as error:  # a failed call fails the sequences in it; the loop goes on serving
                    log.exception("engine step failed")
                    for sequence in list(self.scheduler.running):
                        self._finish(sequence, error=error)

    def _step(self) -> None:
        for sequence in self.scheduler.all():
            if sequence.cancel.is_set():
                self._finish(sequence, "cancelled")
        self.scheduler.admit(self.steps)
        for sequence in list(self.scheduler.running):
            if sequence.decoding and len(sequence.emitted) >= sequence.request.max_new_tokens:
                self._emit(sequence, [], None, 0, None)  # max_new_tokens = 0: the request only scores its prompt
        running = self.scheduler.running
        if not running:
            time.sleep(0.001)  # waiting sequences that do not fit yet: blocks free as others finish
            return
        self.steps += 1
        decoding = [s for s in running if s.decoding]
        prompt_tokens = self.scheduler.prefill_tokens_wanted(decoding)
        ks = self._draft_lengths(decoding, prompt_tokens)
        fed = prompt_tokens + len(decoding) + sum(ks)
        rooms = {s.id: max(k, self._copy_room(s, fed)) for s, k in zip(decoding, ks)}
        plan = self.scheduler.plan(decoding, dict(zip((s.id for s in decoding), ks)), rooms, self._preempt)
        decoding = plan.decoding
        if not decoding and not plan.prefilling:
            return  # nothing fits this step (a preemption just made room for the next)
        drafts, draft_seconds = self._propose(decoding, plan)
        batch = self._batch(plan, drafts)
        start = time.perf_counter()
        logits = self.target.forward(batch)
        target_seconds = time.perf_counter() - start
        fed = sum(len(t) for t in batch.tokens)
        self.costs.observe_target(fed, target_seconds)
        offset, capture_seconds = 0, 0.0
        for sequence, tokens, count in zip(plan.prefilling, batch.tokens, batch.logit_rows):
            if self._after_prefill_chunk(sequence, tokens, logits[offset:offset + count]):
                capture_seconds += self._after_decode(sequence, Draft(), logits[offset + count - 1:offset + count],
                                                      0.0, target_seconds, step_of_prefill=True)
            offset += count
        for sequence, draft, count in zip(decoding, drafts, batch.logit_rows[len(plan.prefilling):]):
            capture_seconds += self._after_decode(sequence, draft, logits[offset:offset + count], draft_seconds,
                                                  target_seconds)
            offset += count
        if not self.step_listeners:
            return
        report = StepReport(len(batch.tokens), fed, [plan.draft_lengths[s.id] for s in decoding], target_seconds,
                            draft_seconds, len(plan.preempted),
                            {n: self.costs.relative_target_cost(n) for n in COST_REPORT_TOKENS}, capture_seconds)
        for listener in self.step_listeners:
            listener(report)

    def _batch(self, plan: StepPlan, drafts: list[Draft]) -> PagedBatch:
        """The target call's inputs: prompt chunks (logits only where the prompt is scored), then verifies."""
        batch = PagedBatch([], [], [], [])
        for sequence in plan.prefilling:
            tokens = sequence.context[sequence.computed:sequence.computed + plan.chunk[sequence.id]]
            final = sequence.computed + len(tokens) == len(sequence.context)  # its last row gives the next token
            batch.tokens.append(tokens)
            batch.logit_rows.append(len(tokens) if sequence.scored is not None else int(final))
        for sequence, draft in zip(plan.decoding, drafts):
            batch.tokens.append([sequence.context[-1]] + draft.ids)
            batch.logit_rows.append(len(draft.ids) + 1)
        for sequence, tokens in zip(plan.prefilling + plan.decoding, batch.tokens):
            sequence.table.reserve(sequence.computed + len(tokens))  # the plan checked the pool has them
            batch.past_lens.append(sequence.computed)
            batch.block_tables.append(sequence.table.blocks)
        return batch

    def _draft_lengths(self, decoding: list[Sequence], other_tokens: int) -> list[int]:
        """k per decoding sequence: the request's fixed k, the policy's, or 0 (plain; load cap)."""
        limit = self.config.speculative_max_concurrency
        allowed = limit is None or len(self.scheduler.running) <= limit
        ks = [0] * len(decoding)
        adaptive: list[int] = []
        for i, sequence in enumerate(decoding):
            request = sequence.request
            if sequence.proposer is None or not allowed or sequence.draft_room <= 0:
                continue
            if self._is_adaptive(request):
                adaptive.append(i)
            else:
                ks[i] = min(request.num_draft_tokens or self.config.num_draft_tokens, sequence.draft_room)
        if adaptive:
            chosen = self.policy.choose(
                [DecodingSequence(decoding[i].acceptance,
                                  min(decoding[i].draft_room, decoding[i].request.num_draft_tokens or self.policy.max_k))
                 for i in adaptive], other_tokens + sum(ks))
            for i, k in zip(adaptive, chosen):
                ks[i] = k
        return ks

    def _is_adaptive(self, request: GenerationRequest) -> bool:
        if request.adaptive is not None:
            return request.adaptive
        return self.config.adaptive and request.num_draft_tokens is None

    def _propose(self, decoding: list[Sequence], plan: StepPlan) -> tuple[list[Draft], float]:
        drafts = [Draft() for _ in decoding]
        groups: dict[int, list[int]] = {}
        for i, sequence in enumerate(decoding):
            if sequence.proposer is not None and plan.room[sequence.id] > 0:
                groups.setdefault(id(sequence.proposer), []).append(i)
        start = time.perf_counter()
        for indices in groups.values():
            proposer = decoding[indices[0]].proposer
            slots = []
            for i in indices:
                sequence = decoding[i]
                limit = plan.room[sequence.id]
                slots.append(DraftSlot(sequence.id, sequence.context, min(plan.draft_lengths[sequence.id], limit),
                                       limit, sequence.request.sampling, sequence.rng, sequence.noise))
            for i, slot, draft in zip(indices, slots, proposer.propose(slots)):
                assert len(draft.ids) <= slot.limit, (len(draft.ids), slot.limit)
                drafts[i] = draft
            if hasattr(proposer, "call_seconds") and proposer is self.proposer:
                self.costs.observe_draft(proposer.call_seconds, proposer.call_tokens)
        return drafts, time.perf_counter() - start

    def _copy_room(self, sequence: Sequence, fed_tokens: int) -> int:
        """The longest copy a draft + lookup proposer may offer this sequence (even when the model does not draft):
        all of --copy-tokens at a fixed k, what pays for its verify rows under the cost-driven policy."""
        copy_tokens = getattr(sequence.proposer, "copy_tokens", 0)
        limit = max(0, min(copy_tokens, sequence.draft_room))
        if limit and self._is_adaptive(sequence.request):
            return self.policy.copy_room(limit, fed_tokens)
        return limit

    # --- after the call -----------------------------------------------------------------------------

    def _after_prefill_chunk(self, sequence: Sequence, tokens: list[int], logits: np.ndarray) -> bool:
        """Record a prompt chunk; True when it was the final one, whose last row is then verified like a decode step
        with no drafts (the cache is left holding the context minus its last token, as for a decoding sequence)."""
        begin = sequence.computed
        if sequence.scored is not None:  # row i predicts context[begin + i + 1]
            following = sequence.context[begin + 1:begin + len(tokens) + 1]
            sequence.scored.extend(token_logprobs(logits[:len(following)], following, sequence.request.logprobs))
        final = begin + len(tokens) == len(sequence.context)
        sequence.table.length = begin + len(tokens) - int(final)
        return final

    def _after_decode(self, sequence: Sequence, draft: Draft, logits: np.ndarray, draft_seconds: float,
                      target_seconds: float, step_of_prefill: bool = False) -> float:
        """Verify, emit, roll back; returns the seconds spent scoring alternatives only a traffic capture wanted.
        The first token, given by the prompt's final chunk, is emitted with no step: that call was prefill, and
        step counts (target calls, plain and speculative steps) are of the calls after it."""
        if sequence.first_step_at is None:
            sequence.first_step_at = time.perf_counter()
            sequence.stats.prefill_time_s = sequence.first_step_at - sequence.started
        params, position = sequence.request.sampling, len(sequence.context)
        if params.greedy:
            accepted, next_token = verify_greedy(draft.ids, logits)
        elif sequence.noise is not None:
            accepted, next_token = verify_coupled(draft.ids, logits, params,
                                                  [sequence.noise(position + i) for i in range(len(draft.ids) + 1)])
            sequence.noise.forget_before(position + accepted + 1)
        else:
            accepted, next_token = verify(draft.ids, draft.q, logits, params, sequence.rng)
        new_tokens = draft.ids[:accepted] + [next_token]
        scoring_started = time.perf_counter()
        logprobs, target_top = self._score_emitted(sequence.request, logits, new_tokens)
        only_for_capture = sequence.request.capture_top_logprobs and sequence.request.logprobs is None
        capture_seconds = time.perf_counter() - scoring_started if only_for_capture else 0.0
        if draft.ids and not draft.copied:
            self.policy.observe(sequence.acceptance, len(draft.ids), accepted)
        elif draft.copied:
            self.policy.observe_copy(len(draft.ids), accepted)
        step = None if step_of_prefill else \
            StepStats(len(draft.ids), accepted, len(new_tokens), draft_seconds if draft.ids else 0.0, target_seconds)
        sequence.table.length = sequence.computed + len(draft.ids) + 1  # what the call wrote
        self._emit(sequence, new_tokens, step, len(draft.ids), logprobs, target_top)
        return capture_seconds

    @staticmethod
    def _score_emitted(request: GenerationRequest, logits: np.ndarray, tokens: list[int]
                       ) -> tuple[list[TokenLogprob] | None, list[TokenLogprob] | None]:
        """(logprobs with the request's alternatives, the captured top alternatives): one pass for both."""
        if request.logprobs is None and not request.capture_top_logprobs:
            return None, None
        scored = token_logprobs(logits, tokens, max(request.logprobs or 0, request.capture_top_logprobs))
        captured = scored if request.capture_top_logprobs else None
        if request.logprobs is None:
            return None, captured
        if request.logprobs >= request.capture_top_logprobs:
            return scored, captured
        return [TokenLogprob(lp.token_id, lp.logprob, lp.top[:request.logprobs]) for lp in scored], captured

    def _emit(self, sequence: Sequence, new_tokens: list[int], step: StepStats | None, k: int,
              logprobs: list[TokenLogprob] | None, target_top: list[TokenLogprob] | None = None) -> None:
        """Apply EOS and length limits to a verified group, record it, send it, roll the cache back to it."""
        request = sequence.request
        finish = None
        for i, token in enumerate(new_tokens):
            if token in request.stop_token_ids:
                new_tokens, finish = new_tokens[:i + 1], "stop"
                break
        room = request.max_new_tokens - len(sequence.emitted)
        if len(new_tokens) >= room:
            if len(new_tokens) > room or finish is None:
                finish = "length"
            new_tokens = new_tokens[:room]
        if step is not None:
            step = StepStats(step.num_drafted, step.num_accepted, len(new_tokens), step.draft_time_s, step.target_time_s)
            sequence.stats.record(step)
        sequence.emitted.extend(new_tokens)
        sequence.context.extend(new_tokens)
        stats = sequence.stats
        stats.generated_tokens = len(sequence.emitted)
        stats.total_time_s = time.perf_counter() - sequence.started
        prompt_logprobs, sequence.scored = sequence.scored, None
        group = TokenGroup(new_tokens, finish, step, k, logprobs[:len(new_tokens)] if logprobs is not None else None,
                           prompt_logprobs, target_top[:len(new_tokens)] if target_top is not None else None)
        if finish is not None:
            self._finish(sequence, finish, last=group)
            return
        sequence.table.truncate(len(sequence.context) - 1)
        sequence.table.register_full_blocks(sequence.context)
        sequence.out.put(group)

    def _finish(self, sequence: Sequence, reason: str | None = None, last: TokenGroup | None = None,
                error: BaseException | None = None) -> None:
        self.scheduler.remove(sequence)
        if sequence.proposer is not None:
            sequence.proposer.release(sequence.id)
        if error is None and reason != "cancelled":
            sequence.table.truncate(min(len(sequence.context) - 1, sequence.table.length))
            sequence.table.register_full_blocks(sequence.context)
        sequence.table.release()
        sequence.finish_reason = reason or "error"
        if error is not None:
            sequence.out.put(error)
        else:
            sequence.out.put(last if last is not None else TokenGroup([], reason, None, 0))

    def _preempt(self, sequence: Sequence) -> None:
        """Give the sequence's blocks back; it waits again and recomputes its context (prompt + output so far)."""
        if sequence.proposer is not None:
            sequence.proposer.release(sequence.id)
        sequence.table.release()
        self.scheduler.requeue(sequence)
        self.preemptions += 1


class Generation:
    """One running request: iterate it for verified token groups (from any thread); `stats` is updated live."""

    def __init__(self, engine: Engine, sequence: Sequence):
        self.engine = engine
        self.request = sequence.request
        self.cancel = sequence.cancel
        self._sequence = sequence
        self.stats = sequence.stats
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[TokenGroup]:
        try:
            while self.finish_reason is None:
                item = self._sequence.out.get()
                if isinstance(item, BaseException):
                    self.finish_reason = "error"
                    raise item
                self.token_ids.extend(item.token_ids)
                if item.finish_reason is not None:
                    self.finish_reason = item.finish_reason
                yield item
        finally:
            self.close()

    def result(self) -> GenerationResult:
        """Read to the end (from any thread; several can be started first and read in turn, and the engine batches
        them): the tokens, finish reason and statistics."""
        with self:
            for _ in self:
                pass
        return GenerationResult(self.token_ids, self.finish_reason, self.stats)

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop (if running): the step loop frees the sequence's blocks at its next step. Safe to call again."""
        if self.finish_reason is None:
            self.finish_reason = "cancelled"
            self.cancel.set()
            self.engine.wake()
