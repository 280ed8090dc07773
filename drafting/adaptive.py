"""Draft length per step, chosen from measured costs and each sequence's acceptance per position.

Before every step, for the sequences that decode in it, the policy picks the k (k = 0 allowed: plain
decoding) that maximises expected emitted tokens per second of step time:

    expected_i(k) = 1 + sum over j = 1..k of prod over m = 1..j of a_i(m)    (a_i(m): P(position m accepted |
                                                                             positions before it accepted))
    time(K)       = t_target(tokens fed by the step) + t_draft(K calls, the drafting sequences)
    K*            = argmax over K of sum_i expected_i(min(K, room_i)) / time(K)

then trims each sequence's k while its last drafted token is expected to bring fewer tokens per second of
verify cost than the step as a whole (a weak sequence drafts less than a strong one in the same batch).
Prompt-lookup copies cost no draft call but each copied token is a verify row: they are cut by the same
rule, from the acceptance per position of copies (`copy_room`).
The costs come from drafting/cost_model.py (measured on this machine, so the same policy drafts long where
verification is flat and short, or not at all, where it is compute-bound or the batch is large).

a_i(m) is kept per position, never pooled across positions: the first drafted token is accepted less
often than later ones (on code 0.57-0.61 against 0.74-0.80 for the 28M draft), and treating them as one
rate made long easy spans look less likely than they are. Each sequence's counts start from the
engine-wide ones (a prior worth PRIOR_WEIGHT observations), so a new sequence starts from what the server
has seen and then follows its own text; while it does not draft, its own counts fade back towards them.

The policy only learns what it runs, so it probes: every PROBE_EVERY steps one sequence drafts one token
more than chosen, and the next time one fewer or the step runs plain. How close this comes to the best
fixed k on machines with flat and compute-bound verification, with a weak, a strong and a useless draft,
under the timing noise of a shared VM: `python -m drafting.policy_simulation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drafting.cost_model import StepCostModel
from drafting.request import MAX_DRAFT_TOKENS

MAX_K = 8  # the longest draft the policy considers
DECAY = 0.9  # weight of history in a sequence's acceptance counts
PRIOR_WEIGHT = 8.0  # the engine-wide acceptance counts as this many observations of a new sequence
# every PROBE_EVERY steps one sequence tries one token more than chosen; every other time one token fewer, or
# the whole step runs plain: the cost model prices only what is run, and in a batch plain decoding lies many
# tokens below the choice (4 sequences at k = 1 feed 8 tokens, plain 4), so a slope learnt near the choice
# alone can make drafting look cheaper than plain for good
PROBE_EVERY = 16
# a sequence that does not draft fades its own acceptance counts by this per step, back towards the
# engine-wide rates: else a few early rejections switch it off for good, since off it observes nothing
# (drafting.policy_simulation, one sequence on this VM's cost shape: a weak / strong draft at 0.985 / 0.990
# of the best fixed k with it, 0.973 / 0.974 without)
IDLE_FADE = 0.95


@dataclass
class Acceptance:
    """Decayed counts of positions reached and accepted, per draft position."""

    reached: list[float] = field(default_factory=lambda: [0.0] * MAX_DRAFT_TOKENS)
    accepted: list[float] = field(default_factory=lambda: [0.0] * MAX_DRAFT_TOKENS)
    decay: float = DECAY

    def observe(self, num_drafted: int, num_accepted: int) -> None:
        for position in range(min(num_accepted + 1, num_drafted)):
            self.reached[position] = self.decay * self.reached[position] + 1.0
            self.accepted[position] = self.decay * self.accepted[position] + (position < num_accepted)

    def fade(self, factor: float) -> None:
        """Forget a little without observing: what a sequence showed long ago weighs less against the prior."""
        self.reached = [factor * r for r in self.reached]
        self.accepted = [factor * a for a in self.accepted]

    def rate(self, position: int, prior: "Acceptance | None" = None) -> float:
        reached, accepted = self.reached[position], self.accepted[position]
        if prior is not None:
            prior_rate = prior.rate(position)
            return (accepted + PRIOR_WEIGHT * prior_rate) / (reached + PRIOR_WEIGHT)
        return (accepted + 0.5) / (reached + 1.0)  # an untried position: even odds

    def expected_tokens(self, k: int, prior: "Acceptance | None" = None) -> list[float]:
        """[expected emitted tokens at k' = 0..k]: 1 (the target's own token) plus the chance of each prefix."""
        total, chance, out = 1.0, 1.0, [1.0]
        for position in range(k):
            chance *= self.rate(position, prior)
            total += chance
            out.append(total)
        return out


@dataclass
class DecodingSequence:
    """What the policy needs of one sequence that decodes this step."""

    acceptance: Acceptance
    room: int  # the longest draft it may take (tokens left, the request's cap)


class DraftLengthPolicy:
    def __init__(self, costs: StepCostModel, max_k: int = MAX_K, probe_every: int = PROBE_EVERY):
        self.costs = costs
        self.max_k = max_k
        self.probe_every = probe_every
        self.engine_acceptance = Acceptance(decay=0.99)  # every sequence's model drafts, the prior of new ones
        self.copy_acceptance = Acceptance(decay=0.99)  # prompt-lookup copies, per position
        self._steps = 0
        self.last_rate = 0.0  # expected tokens per second of the last plan (diagnostics)

    def observe(self, acceptance: Acceptance, num_drafted: int, num_accepted: int) -> None:
        acceptance.observe(num_drafted, num_accepted)
        self.engine_acceptance.observe(num_drafted, num_accepted)

    def observe_copy(self, num_drafted: int, num_accepted: int) -> None:
        self.copy_acceptance.observe(num_drafted, num_accepted)

    def copy_room(self, limit: int, fed_tokens: int) -> int:
        """The longest prompt-lookup copy worth verifying: a copy costs no draft call, but each copied token is
        one more row of the verify, which is not free where verification is compute-bound."""
        if not self.costs.target.seen or self.last_rate <= 0:
            return limit
        chance, room = 1.0, 0
        for position in range(limit):
            chance *= self.copy_acceptance.rate(position)
            fed = fed_tokens + position + 1
            verify_cost = self.costs.target_seconds(fed) - self.costs.target_seconds(fed - 1)
            if verify_cost > 0 and chance / verify_cost < self.last_rate:
                break
            room = position + 1
        return room

    def choose(self, sequences: list[DecodingSequence], other_tokens: int) -> list[int]:
        """k per sequence for one step; other_tokens: prompt tokens that share the step's target call."""
        if not sequences:
            return []
        self._steps += 1
        rooms = [min(s.room, self.max_k) for s in sequences]
        if max(rooms) == 0:
            return [0] * len(sequences)
        if not self.costs.ready:  # nothing measured yet: two tokens measure a draft call and a verify
            return [min(2, r) for r in rooms]
        curves = [s.acceptance.expected_tokens(r, self.engine_acceptance) for s, r in zip(sequences, rooms)]
        base_tokens = other_tokens + len(sequences)
        best_rate, best_k = -1.0, 0
        for k in range(0, max(rooms) + 1):
            ks = [min(k, r) for r in rooms]
            rate = sum(curve[ki] for curve, ki in zip(curves, ks)) / self._seconds(base_tokens, ks)
            if rate > best_rate * 1.0001:
                best_rate, best_k = rate, k
        ks = [min(best_k, r) for r in rooms]
        # trim: the last drafted token of each sequence must pay for its share of the verify
        for i, curve in enumerate(curves):
            while ks[i] > 0:
                gain = curve[ks[i]] - curve[ks[i] - 1]
                fed = base_tokens + sum(ks)
                verify_cost = self.costs.target_seconds(fed) - self.costs.target_seconds(fed - 1)
                if verify_cost <= 0 or gain / verify_cost >= best_rate:
                    break
                ks[i] -= 1
        if self._steps % self.probe_every == 0:
            probe = self._steps // self.probe_every
            i = probe % len(sequences)
            if probe % 2 == 0:
                ks[i] = min(ks[i] + 1, rooms[i])
            elif probe % 4 == 1 and ks[i] > 0:  # (off, there is nothing below to measure: up-probes only)
                ks[i] -= 1
            elif probe % 4 == 3:  # a plain step: what every choice is weighed against, however far it lies
                ks = [0] * len(ks)
        for sequence, k in zip(sequences, ks):
            if k == 0:
                sequence.acceptance.fade(IDLE_FADE)
        self.last_rate = best_rate
        return ks

    def _seconds(self, base_tokens: int, ks: list[int]) -> float:
        calls = max(ks)
        drafting = sum(1 for k in ks if k)
        return self.costs.target_seconds(base_tokens + sum(ks)) + self.costs.draft_seconds(calls, drafting)
