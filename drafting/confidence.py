"""Stopping a draft inside a step when the draft is unsure of its own token, from calibrated confidence.

The draft length policy (drafting/adaptive.py) picks k before drafting, from each sequence's acceptance per
position. While drafting, the draft tells more: a token it gave probability 0.2 is accepted far less often
than one it gave 0.9, and every later token of the draft is verified only if that one is accepted. So after
each drafted token the engine asks whether one more is worth its verify row, by the policy's own trim rule
with the realised confidences in place of the averages:

    chance(j) = prod over m = 1..j of c(p_m)        c(p): P(accepted | reached, the draft gave it probability p)
    draft j+1  iff  chance(j) * a(j+1) / (marginal verify seconds) >= the step plan's tokens per second

where a(j+1) is the sequence's acceptance at the next position. c is learnt online per bin of p from every
reached drafted token of every sequence (decayed); a bin seen fewer than MIN_OBSERVED times falls back to
the position's acceptance, so nothing is cut before the calibration has data.
"""

from __future__ import annotations

from typing import Callable

BINS = 10  # equal-width bins of the draft's probability for its token
MIN_OBSERVED = 8.0  # decayed observations a bin needs before it is trusted
DECAY = 0.995


class ConfidenceCalibration:
    """P(a drafted token is accepted | it was reached and the draft gave it probability p), per bin of p."""

    def __init__(self, decay: float = DECAY) -> None:
        self.decay = decay
        self.reached = [0.0] * BINS
        self.accepted = [0.0] * BINS

    @staticmethod
    def bin(probability: float) -> int:
        return min(BINS - 1, max(0, int(probability * BINS)))

    def observe(self, probabilities: list[float], num_accepted: int) -> None:
        """A verified draft: its tokens' probabilities, and how many of them the target accepted."""
        for position, probability in enumerate(probabilities[:num_accepted + 1]):  # the reached ones
            b = self.bin(probability)
            self.reached[b] = self.decay * self.reached[b] + 1.0
            self.accepted[b] = self.decay * self.accepted[b] + (position < num_accepted)

    def rate(self, probability: float) -> float | None:
        """Calibrated acceptance at this probability, or None while its bin has too little data."""
        b = self.bin(probability)
        if self.reached[b] < MIN_OBSERVED:
            return None
        return (self.accepted[b] + 0.5) / (self.reached[b] + 1.0)


def keep_drafting_rule(calibration: ConfidenceCalibration, position_rate: Callable[[int], float],
                       marginal_verify_seconds: float, tokens_per_second: float) -> Callable[[int, float], bool]:
    """The `DraftSlot.keep_drafting` of one sequence for one step.

    position_rate(j): the sequence's acceptance at draft position j (0-based, conditional on the ones before);
    marginal_verify_seconds: what one more row adds to the step's target call, at the planned size;
    tokens_per_second: the rate the step was planned at (the bar every drafted token must clear)."""
    chance = 1.0

    def keep(position: int, probability: float) -> bool:
        nonlocal chance
        calibrated = calibration.rate(probability)
        chance *= position_rate(position) if calibrated is None else calibrated
        if tokens_per_second <= 0 or marginal_verify_seconds <= 0:
            return True
        return chance * position_rate(position + 1) / marginal_verify_seconds >= tokens_per_second

    return keep
