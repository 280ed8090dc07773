"""The proposer interface: something that guesses the next k tokens of a context.

A `Proposer` is shared by all requests (it holds compiled models or settings); each generation opens
its own `ProposerSession` (it holds that request's draft KV cache or search state). A target with no
proposer is plain decoding.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from drafting.sampling import SamplingParams


class DraftStop(Protocol):
    def keep_drafting(self, probability: float) -> bool:
        """Told the probability the proposer gave the token it just drafted: whether to draft another."""
        ...


class ProposerSession(Protocol):
    # seconds of the last propose() spent catching up on context the proposer had not seen (a draft model's
    # prompt prefill, the tokens accepted since its last call); 0 for a proposer without such a cost
    last_catch_up_s: float
    # True when the last propose() returned a copy from the context in place of the model's draft
    # (draft_with_lookup.py): the copy ignores k, so the adaptive policy learns nothing from that step
    last_was_copy: bool

    def propose(
        self, context: list[int], k: int, params: SamplingParams, rng: np.random.Generator | None,
        stop: DraftStop | None = None, limit: int | None = None,
    ) -> tuple[list[int], np.ndarray | None]:
        """Up to k draft ids continuing `context`, and their q distributions [n, vocab] (None: point masses).

        May return fewer than k ids (even none) when it has nothing good to offer, and returns none for
        k = 0 unless it has a copy that costs no model call; a proposer that scores
        its tokens asks `stop` after each one whether to go on (None: draft k). `limit` (>= k) is the most
        ids the engine can verify this step: a proposer whose extra ids cost nothing to make may return
        more than k, never more than limit.
        """
        ...

    def observe(self, num_drafted: int, num_accepted: int) -> None:
        """Feedback after verification (adaptive policies, statistics)."""
        ...

    def close(self) -> None:
        ...


class Proposer(Protocol):
    name: str
    revision: str

    def new_session(self) -> ProposerSession:
        ...
