"""Who runs this step and with how many tokens: admission, the per-step token budget, preemption.

Boundary: sequences, lengths and block counts; never tensors, never a model (drafting/engine.py runs the
plan). Sequences here need only `id`, `context`, `table` (drafting/blocks.py BlockTable), `scored`
(None unless the prompt is scored), `admitted_at` and `prefill_end` (the cache length at which its context is
read: all of it when the last row yields its next token, one less when it is to emit nothing).

- Waiting sequences are admitted in arrival order while the batch has room and the pool can hold their
  next prompt chunk; a new sequence first takes the cached blocks of its longest known prefix (unless
  prefix caching is off).
- Each step, decoding sequences go first (each feeds its last token and its drafts), then prompt chunks
  of the others fill what is left of the token budget, oldest first, so running sequences keep streaming
  while a long prompt is read. A prompt's final chunk carries its last token, so the call that finishes
  reading a prompt also gives its first output token (no extra step before the first token).
- When the pool cannot hold a decoding sequence's next tokens, the youngest running sequence is preempted:
  its blocks go back and it waits again at the front, to recompute its context later. A sequence is never
  refused for lack of blocks while it fits the pool alone (the engine checks that at start).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable

from drafting.blocks import BlockPool


@dataclass
class StepPlan:
    decoding: list[Any] = field(default_factory=list)  # sequences that verify this step, oldest first
    draft_lengths: dict[int, int] = field(default_factory=dict)  # seq id -> k for the model
    room: dict[int, int] = field(default_factory=dict)  # seq id -> the most drafted tokens its blocks hold
    prefilling: list[Any] = field(default_factory=list)
    chunk: dict[int, int] = field(default_factory=dict)  # seq id -> prompt tokens fed this step
    preempted: list[Any] = field(default_factory=list)


class Scheduler:
    def __init__(self, pool: BlockPool, max_running: int, max_step_tokens: int, prefix_caching: bool = True):
        assert max_running >= 1 and max_step_tokens >= 1
        self.pool = pool
        self.prefix_caching = prefix_caching
        self.max_running = max_running
        self.max_step_tokens = max_step_tokens
        self.waiting: collections.deque = collections.deque()
        self.running: list = []

    @property
    def active(self) -> int:
        return len(self.waiting) + len(self.running)

    def all(self) -> list:
        return list(self.running) + list(self.waiting)

    def add(self, sequence: Any) -> None:
        self.waiting.append(sequence)

    def remove(self, sequence: Any) -> None:
        if sequence in self.running:
            self.running.remove(sequence)
        elif sequence in self.waiting:
            self.waiting.remove(sequence)

    def requeue(self, sequence: Any) -> None:
        """A preempted sequence: back to the front of the queue."""
        self.remove(sequence)
        self.waiting.appendleft(sequence)

    def admit(self, step: int) -> None:
        size = self.pool.block_size
        while self.waiting and len(self.running) < self.max_running:
            sequence = self.waiting[0]
            table = sequence.table
            # a scored prompt needs logits at every position
            if self.prefix_caching and not table.blocks and sequence.scored is None:
                table.reuse_prefix(sequence.context, len(sequence.context) - 1)
            remaining = len(sequence.context) - table.length
            first_chunk = table.length + min(remaining, self.max_step_tokens)
            needed = -(-first_chunk // size) - len(table.blocks)
            if needed + 1 > self.pool.available:  # + 1: room for its first verify beyond the chunk
                break
            table.reserve(first_chunk)  # held now, so the next admission sees what is left
            self.waiting.popleft()
            sequence.admitted_at = step
            self.running.append(sequence)

    def prefill_tokens_wanted(self, decoding: list) -> int:
        """Prompt tokens the step would feed besides the decoding sequences' (for the draft-length choice)."""
        wanted = sum(s.prefill_end - s.table.length for s in self.running if s not in decoding)
        return min(wanted, self.max_step_tokens)

    def plan(self, decoding: list, draft_lengths: dict[int, int], rooms: dict[int, int],
             preempt: Callable[[Any], None]) -> StepPlan:
        """decoding: the sequences ready to verify; rooms: the most tokens each may draft (free copies included)."""
        plan = StepPlan()
        size = self.pool.block_size
        available = self.pool.available
        budget = self.max_step_tokens

        def blocks_for(sequence: Any, tokens: int) -> int:
            return max(0, -(-(sequence.table.length + tokens) // size) - len(sequence.table.blocks))

        for sequence in sorted(decoding, key=_age):
            if sequence not in self.running:
                continue  # preempted for an older one
            room = max(0, min(rooms.get(sequence.id, 0), budget - 1))
            while blocks_for(sequence, 1) > available:  # not even its last token fits: the youngest gives way
                victim = max((s for s in self.running if s not in plan.decoding), key=_age)
                available += self._free_on_release(victim)
                plan.preempted.append(victim)
                preempt(victim)
                if victim is sequence:
                    break
            if sequence not in self.running:
                continue
            while blocks_for(sequence, 1 + room) > available and room > 0:
                room -= 1  # a shorter draft rather than another preemption
            available -= blocks_for(sequence, 1 + room)
            budget -= 1 + room
            plan.decoding.append(sequence)
            plan.room[sequence.id] = room
            plan.draft_lengths[sequence.id] = min(draft_lengths.get(sequence.id, 0), room)
        for sequence in sorted(self.running, key=_age):
            if sequence in plan.decoding or budget <= 0:
                continue
            remaining = sequence.prefill_end - sequence.table.length
            if remaining <= 0:
                continue
            slack = len(sequence.table.blocks) * size - sequence.table.length
            tokens = min(remaining, budget, slack + available * size)
            if tokens == remaining - 1 and sequence.prefill_end == len(sequence.context):
                # one short of the end would leave it decoding its prompt's last token next step, so that where a
                # budget happens to cut a prompt would change its first steps: its first token comes from the
                # final chunk wherever the prompt is cut, as when it runs alone
                tokens -= 1
            if tokens <= 0:
                continue
            available -= blocks_for(sequence, tokens)
            budget -= tokens
            plan.prefilling.append(sequence)
            plan.chunk[sequence.id] = tokens
        if not plan.decoding and not plan.prefilling and len(self.running) > 1:
            victim = max(self.running, key=_age)  # prompts that filled the pool: the youngest waits
            plan.preempted.append(victim)
            preempt(victim)
        return plan

    def _free_on_release(self, sequence: Any) -> int:
        """Blocks that return to the pool when the sequence lets go (shared prefix blocks stay held)."""
        return sum(1 for block in sequence.table.blocks if self.pool.references(block) == 1)


def _age(sequence: Any) -> tuple[int, int]:
    """Sort key, oldest first: admission step, then arrival (ids grow with arrival)."""
    return sequence.admitted_at, sequence.id
