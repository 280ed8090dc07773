"""Draft-length policies: how many tokens to draft at the next step.

`FixedDraftLength` always drafts k. `AdaptiveDraftLength` picks, before every step, the k that maximises
expected tokens per second under the speculative-decoding cost model (REFERENCE.md):

    tokens(k) = (1 - alpha^(k+1)) / (1 - alpha)        expected tokens per target call
    time(k)   = k * t_draft + t_target(k)               measured, per k where seen
    k*        = argmax tokens(k) / time(k), or 0 (plain decoding) when no k beats a plain step

alpha, t_draft and t_target are exponential moving averages of what the engine observed, so k follows
the text: long on boilerplate the draft predicts, short (or off) where it fails.

Within a step, k is only a cap: the draft stops once the chance that the whole draft is accepted falls
below the break-even point where one more draft token costs (draft call plus its share of the verify)
as much as the time it would save if accepted:

    chance    = product over drafted tokens of P(accepted | the probability the draft gave it)
    break-even = (t_draft + dt_target/dk) / (time per emitted token)

P(accepted | probability) is learned during the generation, per tenth of probability: a draft's own
probability is not an acceptance rate (stopping on it raw cut the 0.5B sibling's drafts to a mean
accepted length of 3.3 against 4.9 at k=5 on code), so it is calibrated, not trusted.
"""

from __future__ import annotations

import numpy as np

from drafting.request import MAX_DRAFT_TOKENS

CALIBRATION_BUCKETS = 10  # tenths of the draft's probability


class FixedDraftLength:
    def __init__(self, k: int):
        self.k = k

    def next_k(self) -> int:
        return self.k

    def draft_stop(self) -> None:
        return None  # a fixed k drafts k tokens

    def observe(self, num_drafted: int, num_accepted: int, draft_time_s: float, target_time_s: float,
                catch_up_s: float = 0.0) -> None:
        pass


class AdaptiveDraftLength:
    def __init__(self, initial_k: int = 5, max_k: int = MAX_DRAFT_TOKENS // 2, decay: float = 0.85,
                 probe_every: int = 8):
        self.k = initial_k
        self.max_k = max_k
        self.decay = decay  # weight of history in the moving averages
        self.probe_every = probe_every  # when drafting is off, try k=1 this often to notice recovery
        # decayed counts of tested and accepted draft positions; prior: 1 of 2, so one unlucky first draft
        # (the 0.5B: 0 of 5 on a prompt it then drafts at 0.9) does not switch drafting off for 8 steps
        self._accepted = 1.0
        self._tested = 2.0
        self._draft_token_time: float | None = None
        self._target_time: dict[int, float] = {}  # k -> moving average of one target call
        self._time_per_token: float | None = None  # moving average of step time / emitted tokens
        self._steps_off = 0
        # P(accepted | draft probability) per bucket; prior: one observation at face value
        self._bucket_tested = np.ones(CALIBRATION_BUCKETS)
        self._bucket_accepted = (np.arange(CALIBRATION_BUCKETS) + 0.5) / CALIBRATION_BUCKETS
        self._step_probabilities: list[float] = []  # of the tokens drafted in the current step
        self._step_chance = 1.0
        self._step_break_even = 0.0

    @property
    def alpha(self) -> float:
        return self._accepted / self._tested  # the prior keeps _tested > 0

    def observe(self, num_drafted: int, num_accepted: int, draft_time_s: float, target_time_s: float,
                catch_up_s: float = 0.0) -> None:
        """catch_up_s: the part of draft_time_s spent on the draft's first call of the step, which also feeds
        what the draft had not seen (its whole prompt on the first step: a 0.5B draft's prefill looked like
        257 ms a token and switched drafting off for the whole generation)."""
        d = self.decay
        steady_draft_time = draft_time_s  # what the step costs without catch-up
        if num_drafted:
            tested = min(num_accepted + 1, num_drafted)  # positions actually compared before the first reject
            self._accepted = d * self._accepted + num_accepted
            self._tested = d * self._tested + tested
            # a token's cost, from the calls that draft one token each (all of them when there was no catch-up)
            one_token_calls = num_drafted - 1 if catch_up_s else num_drafted
            if one_token_calls:
                per_token = (draft_time_s - catch_up_s) / one_token_calls
                self._draft_token_time = per_token if self._draft_token_time is None else d * self._draft_token_time + (1 - d) * per_token
            steady_draft_time = num_drafted * (self._draft_token_time or 0.0)
        previous = self._target_time.get(num_drafted)
        self._target_time[num_drafted] = target_time_s if previous is None else d * previous + (1 - d) * target_time_s
        for position, probability in enumerate(self._step_probabilities[:num_accepted + 1]):
            bucket = self._bucket(probability)
            self._bucket_tested[bucket] += 1
            self._bucket_accepted[bucket] += position < num_accepted
        self._step_probabilities = []
        per_emitted = (steady_draft_time + target_time_s) / (num_accepted + 1)
        self._time_per_token = per_emitted if self._time_per_token is None else d * self._time_per_token + (1 - d) * per_emitted
        self.k = self._choose()

    @staticmethod
    def _bucket(probability: float) -> int:
        return min(int(probability * CALIBRATION_BUCKETS), CALIBRATION_BUCKETS - 1)

    def acceptance_given(self, probability: float) -> float:
        """Learned P(target accepts a drafted token | the probability the draft gave it)."""
        bucket = self._bucket(probability)
        return float(self._bucket_accepted[bucket] / self._bucket_tested[bucket])

    def draft_stop(self) -> "AdaptiveDraftLength":
        """Start a step: the draft then asks keep_drafting() after each token."""
        self._step_probabilities, self._step_chance = [], 1.0
        self._step_break_even = self.break_even()  # fixed within the step: nothing is observed until it ends
        return self

    def keep_drafting(self, probability: float) -> bool:
        self._step_probabilities.append(probability)
        self._step_chance *= self.acceptance_given(probability)
        return self._step_chance >= self._step_break_even

    def break_even(self) -> float:
        """Chance of acceptance below which one more drafted token costs more than it is expected to save."""
        if self._draft_token_time is None or not self._time_per_token:
            return 0.0
        seen = sorted(self._target_time)
        verify_per_token = 0.0
        if seen[-1] > seen[0]:
            slope = (self._target_time[seen[-1]] - self._target_time[seen[0]]) / (seen[-1] - seen[0])
            verify_per_token = max(0.0, slope)
        return min(1.0, (self._draft_token_time + verify_per_token) / self._time_per_token)

    def next_k(self) -> int:
        if self.k == 0:
            self._steps_off += 1
            if self._steps_off % self.probe_every == 0:
                return 1
        return self.k

    def _target_time_for(self, k: int) -> float | None:
        if not self._target_time:
            return None
        nearest = min(self._target_time, key=lambda seen: (abs(seen - k), seen))
        return self._target_time[nearest]

    def _choose(self) -> int:
        if self._draft_token_time is None:
            return self.k
        alpha = min(self.alpha, 0.999)
        best_k, best_rate = 0, None
        for k in range(0, self.max_k + 1):
            target_time = self._target_time_for(k)
            tokens = (1 - alpha ** (k + 1)) / (1 - alpha)
            rate = tokens / (k * self._draft_token_time + target_time)
            if best_rate is None or rate > best_rate * 1.0001:
                best_k, best_rate = k, rate
        return best_k
