"""What an engine step costs, measured online: target call seconds by tokens fed, draft call seconds.

Verification cost depends on the machine: on AVX-512/AMX CPUs a 4-token call of a 1.5B model costs about
what a 1-token call does, on AVX2-only CPUs ~1.8x, and batching several sequences into one call moves
the balance again. So nothing here is assumed: the target's call time is learned per number of tokens fed,
the draft's per call by the tokens it feeds (a step's first draft call also catches up on what the target
accepted, the later ones feed one token per drafting sequence).

The machine's speed is not steady (on a shared VM a 1-token call of the 1.5B took 135 ms one minute and
410 ms the next), and a policy only ever measures what it chose. A moving average per count would keep
the price of a count from whenever it was last chosen: a count measured in a slow spell looks expensive
long after the spell ends, and is then never chosen again to correct it. So a curve is two factors:
seconds(x) = speed x shape(x). The speed follows every call; the shape moves only on consecutive calls of
different counts (their time ratio, taken seconds apart, is what the machine's drift cannot touch).
What each part is worth under a shared VM's noise: `python -m drafting.policy_simulation`.

Boundary: seconds and counts only.
"""

from __future__ import annotations

import bisect
import math

SPEED_RATE = 0.3  # weight of one call in the machine's current speed
SHAPE_RATE = 0.1  # weight of one pair of consecutive calls in the ratio of their counts' costs, once
# a count has a few: before that its first calls are averaged (1/n each)
# a call this far from what the curve expects (log seconds: x1.4) says more about the machine than about its
# count (another process's burst: 3x happens here), so it moves the speed but prices no count; the policy
# reacts to such calls (switching count), so letting them in would bias exactly the counts it switches to
OUTLIER = 0.35
TRUSTED = 3  # calls that price a count before its price judges the next call of it
LINEAR_MAX = 32  # up to this many tokens fed, a call's cost is fitted as a line (see _Curve._refit)
MAX_WEIGHT = 100  # calls a count's price counts for, at most, in the fit
# before two counts have been seen, a token beyond the first is assumed to cost this fraction of a
# one-token call (between the flat AVX-512 case and the AVX2 case); the engine's probes replace it quickly
PRIOR_PER_TOKEN_FRACTION = 0.1
# beyond the counts measured a token costs at least this fraction of the call (the flat AVX-512 case): where the
# last measured counts happen to fit flat, more tokens must still not look free
MIN_PER_TOKEN_FRACTION = 0.01
# what a step's first draft call feeds per sequence, usually: the target's correction and the last accepted
# draft (the draft never fed its own last proposal)
CATCH_UP_TOKENS = 2


class _Curve:
    """seconds(x) from measured calls: log seconds = log speed + log shape(x), shape monotone in x."""

    def __init__(self) -> None:
        self._log_shape: dict[int, float] = {}  # per count seen, its cost relative to the speed
        self._seen: dict[int, int] = {}  # per count, the calls that have priced it
        self._log_speed = 0.0
        self._last: tuple[int, float] | None = None  # (x, log seconds) of the last call, if not an outlier
        self._xs: list[int] = []
        self._fitted: list[float] = []  # shape at _xs, made non-decreasing
        self._stale = False  # prices changed since the fit (refitted when next read: once a step, not per call)

    def observe(self, x: int, seconds: float) -> None:
        y = math.log(max(seconds, 1e-9))
        shape, seen = self._log_shape, self._seen
        typical = True
        if not shape:
            shape[x], self._log_speed = 0.0, y
            seen[x] = 1
        elif x not in shape:
            self._fit()
            # first sight: against the speed the last calls measured, kept between the counts beside it (one
            # call in a burst would otherwise price a count above a longer one, and it may not run again soon)
            i = bisect.bisect_left(self._xs, x)  # the fitted counts beside it: _xs[i - 1] < x < _xs[i]
            value = y - self._log_speed
            if i < len(self._xs):
                value = min(value, math.log(self._fitted[i]))
            if i > 0:
                value = max(value, math.log(self._fitted[i - 1]))
            shape[x] = value
            seen[x] = 1
        else:
            # (a count priced only once or twice may itself be what is off: it is not judged by its own price)
            typical = seen[x] < TRUSTED or abs(y - self._log_speed - shape[x]) < OUTLIER
            if typical and self._last is not None and self._last[0] != x:
                last_x, last_y = self._last
                error = (y - last_y) - (shape[x] - shape[last_x])
                # each end moves by its own rate, the less known one more: a new count learns from a known one
                rate, last_rate = (max(SHAPE_RATE, 1 / (1 + seen[c])) for c in (x, last_x))
                shape[x] += error * rate * rate / (rate + last_rate)
                shape[last_x] -= error * last_rate * last_rate / (rate + last_rate)
                seen[x] += 1
                seen[last_x] += 1
        self._log_speed += SPEED_RATE * (y - shape[x] - self._log_speed)
        self._last = (x, y) if typical else None
        self._stale = True

    def _fit(self) -> None:
        if self._stale:
            self._refit()
            self._stale = False

    def _refit(self) -> None:
        """The curve the policy reads, from the counts' prices.

        Up to LINEAR_MAX tokens a call is a line in the tokens fed (reading the weights, plus a share of compute
        per token), fitted with each count weighted by the calls that priced it: a count the policy seldom
        chooses, priced by a few calls (some in bursts), cannot bend the curve. Beyond, where prompt chunks
        share the call, counts keep their own prices, but none below that line: a wider call costs at least
        the compute per token the narrower ones show. (A count first seen in a fast moment could otherwise be
        kept at its smaller neighbour's price, and once the policy chose it every step, consecutive calls of
        one count never corrected it: 8 sequences at k=4, 40 tokens, were priced like 32, and drafted 4.4 on
        average where k=1-3 did 10% better, through a server on an AVX-512 VM.) The whole is then made
        monotone (pool adjacent violators, weighted the same way): a call never gets cheaper by feeding more."""
        xs = self._xs = sorted(self._log_shape)
        prices = [math.exp(self._log_shape[x]) for x in xs]
        weights = [float(min(self._seen[x], MAX_WEIGHT)) for x in xs]
        small = [i for i, x in enumerate(xs) if x <= LINEAR_MAX]
        if len(small) >= 2:
            total = sum(weights[i] for i in small)
            mean_x = sum(weights[i] * xs[i] for i in small) / total
            mean_y = sum(weights[i] * prices[i] for i in small) / total
            spread = sum(weights[i] * (xs[i] - mean_x) ** 2 for i in small)
            slope = sum(weights[i] * (xs[i] - mean_x) * (prices[i] - mean_y) for i in small) / spread
            intercept = mean_y - slope * mean_x
            if slope < 0:  # noise: a call never gets cheaper by feeding more
                slope, intercept = 0.0, mean_y
            for i in small:
                prices[i] = intercept + slope * xs[i]
            for i in range(len(xs)):
                if xs[i] > LINEAR_MAX:
                    prices[i] = max(prices[i], intercept + slope * xs[i])
        blocks: list[list[float]] = []  # [weighted sum, weight, counts pooled] of pooled neighbours
        for price, weight in zip(prices, weights):
            blocks.append([weight * price, weight, 1])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                total, weight, count = blocks.pop()
                blocks[-1][0] += total
                blocks[-1][1] += weight
                blocks[-1][2] += count
        self._fitted = [max(1e-9, total / weight) for total, weight, count in blocks for _ in range(int(count))]

    @property
    def seen(self) -> bool:
        return bool(self._log_shape)

    def __call__(self, x: float) -> float:
        self._fit()
        xs, ys = self._xs, self._fitted
        assert xs, "no measurement yet"
        speed = math.exp(self._log_speed)
        if len(xs) == 1:
            x0 = xs[0]
            return speed * ys[0] * (1 + PRIOR_PER_TOKEN_FRACTION * (x - x0) / max(x0, 1))
        i = bisect.bisect_left(xs, x)
        if i < len(xs) and xs[i] == x:
            return speed * ys[i]
        lo, hi = (i - 1, i) if 0 < i < len(xs) else ((0, 1) if i == 0 else (len(xs) - 2, len(xs) - 1))
        x0, x1 = xs[lo], xs[hi]
        slope = (ys[hi] - ys[lo]) / (x1 - x0)  # >= 0: the fit is monotone
        anchor = hi if x > x1 else lo  # beyond the last point: from the last point
        if not x0 < x < x1:
            slope = max(slope, MIN_PER_TOKEN_FRACTION * ys[anchor])
        return max(1e-6, speed * (ys[anchor] + slope * (x - xs[anchor])))


class StepCostModel:
    def __init__(self, draft_model: bool = True) -> None:
        self.draft_model = draft_model  # False: the proposer makes its drafts without model calls (prompt lookup)
        self.target = _Curve()  # tokens fed in one target call -> seconds
        self.draft = _Curve()  # tokens fed in one draft call -> seconds

    @property
    def ready(self) -> bool:
        return self.target.seen and (self.draft.seen or not self.draft_model)

    def observe_target(self, tokens: int, seconds: float) -> None:
        self.target.observe(tokens, seconds)

    def observe_draft(self, call_seconds: list[float], call_tokens: list[int]) -> None:
        """One step's draft calls: seconds and tokens fed, each."""
        for seconds, tokens in zip(call_seconds, call_tokens):
            self.draft.observe(tokens, seconds)

    def target_seconds(self, tokens: int) -> float:
        return self.target(tokens)

    def relative_target_cost(self, tokens: int) -> float | None:
        """What a call feeding `tokens` costs against a 1-token call, as learnt (None before any call)."""
        return self.target(tokens) / self.target(1) if self.target.seen else None

    def draft_seconds(self, calls: int, sequences: int) -> float:
        """calls draft calls for `sequences` sequences: the first catches up, the rest feed one token each."""
        if calls <= 0 or sequences <= 0 or not self.draft.seen:
            return 0.0
        return self.draft(CATCH_UP_TOKENS * sequences) + (calls - 1) * self.draft(sequences)
