"""What an engine step costs, measured online: target call seconds by tokens fed, draft call seconds.

Verification cost depends on the machine: on AVX-512/AMX CPUs a 4-token call of a 1.5B model costs about
what a 1-token call does, on AVX2-only CPUs ~1.8x, and batching several sequences into one call moves
the balance again. So nothing here is assumed: the target's call time is learned per number of tokens fed
(an exponential moving average for each count seen, linear between and beyond them), and the draft's per
call by the number of sequences it drafts for.

Boundary: seconds and counts only.
"""

from __future__ import annotations

import bisect

DECAY = 0.8  # weight of history in each moving average
# before two token counts have been seen, a token beyond the first is assumed to cost this fraction of a
# one-token call (between the flat AVX-512 case and the AVX2 case); the engine's probes replace it quickly
PRIOR_PER_TOKEN_FRACTION = 0.1


class _Curve:
    """seconds(x) from measured points: a moving average per x, piecewise linear elsewhere."""

    def __init__(self) -> None:
        self._xs: list[int] = []
        self._ys: dict[int, float] = {}

    def observe(self, x: int, seconds: float) -> None:
        if x not in self._ys:
            bisect.insort(self._xs, x)
            self._ys[x] = seconds
        else:
            self._ys[x] = DECAY * self._ys[x] + (1 - DECAY) * seconds

    @property
    def seen(self) -> bool:
        return bool(self._xs)

    def __call__(self, x: float) -> float:
        xs, ys = self._xs, self._ys
        assert xs, "no measurement yet"
        if len(xs) == 1:
            x0 = xs[0]
            return ys[x0] * (1 + PRIOR_PER_TOKEN_FRACTION * (x - x0) / max(x0, 1))
        i = bisect.bisect_left(xs, x)
        if i < len(xs) and xs[i] == x:
            return ys[x]
        lo, hi = (i - 1, i) if 0 < i < len(xs) else ((0, 1) if i == 0 else (len(xs) - 2, len(xs) - 1))
        x0, x1 = xs[lo], xs[hi]
        slope = max(0.0, (ys[x1] - ys[x0]) / (x1 - x0))  # a call never gets cheaper by feeding more
        anchor = x1 if x > x1 else x0  # beyond the last point: from the last point
        return max(1e-6, ys[anchor] + slope * (x - anchor))


class StepCostModel:
    def __init__(self, draft_model: bool = True) -> None:
        self.draft_model = draft_model  # False: the proposer makes its drafts without model calls (prompt lookup)
        self.target = _Curve()  # tokens fed in one target call -> seconds
        self.draft = _Curve()  # sequences in one draft call (after the first of a step) -> seconds

    @property
    def ready(self) -> bool:
        return self.target.seen and (self.draft.seen or not self.draft_model)

    def observe_target(self, tokens: int, seconds: float) -> None:
        self.target.observe(tokens, seconds)

    def observe_draft(self, call_seconds: list[float], sequences: list[int]) -> None:
        """One step's draft calls; the first also fed what the draft had not seen, so it is left out."""
        for seconds, count in list(zip(call_seconds, sequences))[1:]:
            self.draft.observe(count, seconds)

    def target_seconds(self, tokens: int) -> float:
        return self.target(tokens)

    def draft_seconds(self, calls: int, sequences: int) -> float:
        """calls draft calls for `sequences` sequences (the first call's catch-up costs about one call more)."""
        if calls <= 0 or sequences <= 0:
            return 0.0
        return (calls + 1) * self.draft(sequences) if self.draft.seen else 0.0
