"""The proposer interface: something that guesses the next tokens of many sequences at once.

A `Proposer` is shared by every running sequence and called once per engine step with one `DraftSlot` per
sequence that drafts this step; it returns one `Draft` each. A proposer that keeps state per sequence (a
draft model's KV blocks) keys it by `DraftSlot.seq_id`, follows the verified context lazily (keeps what it
shares with the context it is given, feeds the rest) and frees it on `release(seq_id)`.
A target with no proposer is plain decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from drafting.sampling import SamplingParams


@dataclass
class DraftSlot:
    """What the engine asks of the proposer for one sequence this step."""

    seq_id: int
    context: list[int]  # the verified tokens: prompt + output so far
    k: int  # tokens the model may draft (0: the model does not run; a free copy may still be offered)
    limit: int  # the most tokens the engine can verify this step (>= k): a free copy may be this long
    params: SamplingParams
    rng: np.random.Generator | None  # for sampling the draft when the request samples without a seed
    # position -> Gumbel noise over the target's vocabulary, for a seeded request (drafting/seeded_noise.py):
    # the draft then picks argmax(log q + noise), coupled to the target's own pick at that position
    noise: Callable[[int], np.ndarray] | None = None


@dataclass
class Draft:
    ids: list[int] = field(default_factory=list)
    q: np.ndarray | None = None  # [len(ids), target vocab] draft distributions for rejection sampling; None: point masses
    copied: bool = False  # a copy from the context (prompt lookup): free to make, ignores k


class Proposer(Protocol):
    name: str
    revision: str

    def propose(self, slots: list[DraftSlot]) -> list[Draft]:
        """One draft per slot, in order; a slot may get fewer than k ids (even none), never more than limit."""
        ...

    def release(self, seq_id: int) -> None:
        """The sequence ended (or was preempted): free what the proposer holds for it."""
        ...

    def forget_cached(self) -> None:
        """Drop any state kept between sequences (benchmarks)."""
        ...
