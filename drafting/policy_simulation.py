"""The draft-length policy against a simulated machine and draft: its choices scored without timing noise.

    python -m drafting.policy_simulation              # every scenario: adaptive vs each fixed k, one sequence
    python -m drafting.policy_simulation --batch 4,8  # the same with 4 and then 8 sequences in every call

On a shared 2-core VM one call of the same shape takes 135 ms one minute and 410 ms the next, so a
benchmark needs many repeats to tell two policies 5% apart. Here the machine is a formula: a target call
costs `one_token_s x (1 + per_token x (tokens - 1))`, a draft call `draft_s x (1 + 0.1 x (tokens - 1))`,
and the draft's tokens are accepted position by position with fixed probabilities. The policy sees each
call's time through the noise of a real machine (a lognormal jitter per call, bursts of 3x for a few calls,
slow spells of 2.5x for dozens), learns from it as the engine does, and is scored by what its choices
cost on the noiseless formula: expected tokens per second, comparable across policies to the per mille.

Boundary: drives DraftLengthPolicy and StepCostModel as drafting/engine.py does for a batch of decoding
sequences (choose, observe the calls, observe acceptance); no model, no engine, no prompts in the calls.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

from drafting.adaptive import Acceptance, DecodingSequence, DraftLengthPolicy
from drafting.cost_model import CATCH_UP_TOKENS, StepCostModel


@dataclass(frozen=True)
class Machine:
    name: str
    one_token_s: float  # a 1-token target call
    per_token: float  # each further token, as a fraction of a 1-token call
    draft_s: float  # a 1-token draft call

    def target_seconds(self, tokens: int) -> float:
        return self.one_token_s * (1 + self.per_token * (tokens - 1))

    def draft_seconds(self, tokens: int) -> float:
        return self.draft_s * (1 + 0.1 * (tokens - 1))


@dataclass(frozen=True)
class DraftQuality:
    name: str
    rates: tuple[float, ...]  # P(position j accepted | the ones before were), the last repeats

    def rate(self, position: int) -> float:
        return self.rates[min(position, len(self.rates) - 1)]


# measured shapes: a 1.5B int8 target on an AMX VM (a 4-token call 1.49x, 2026-12-02) and on AVX2 (1.75x);
# a flat verify as on AVX-512 machines with the memory-bound 1.5B
MACHINES = (Machine("flat", 0.080, 0.01, 0.004), Machine("amx-vm", 0.150, 0.16, 0.005),
            Machine("avx2", 0.118, 0.25, 0.005))
# the shipped draft's acceptance per position on chat (0.38, 0.50, 0.62) and code (0.60, 0.75, 0.80)
DRAFTS = (DraftQuality("weak (chat)", (0.38, 0.50, 0.62)), DraftQuality("strong (code)", (0.60, 0.75, 0.80)),
          DraftQuality("useless", (0.05,)))


class Jitter:
    """How a shared machine distorts each measured call: per-call jitter, short bursts, long slow spells."""

    def __init__(self, seed: int, sigma: float = 0.15, burst_chance: float = 0.03, spell_chance: float = 0.005):
        self.rng = np.random.default_rng(seed)
        self.sigma, self.burst_chance, self.spell_chance = sigma, burst_chance, spell_chance
        self.spell_left = 0
        self.burst_left = 0

    def factor(self) -> float:
        if self.spell_left == 0 and self.rng.random() < self.spell_chance:
            self.spell_left = int(self.rng.integers(20, 80))
        if self.burst_left == 0 and self.rng.random() < self.burst_chance:
            self.burst_left = int(self.rng.integers(1, 4))
        slow = 1.0
        if self.spell_left:
            self.spell_left -= 1
            slow *= 2.5
        if self.burst_left:
            self.burst_left -= 1
            slow *= 3.0
        return slow * math.exp(self.rng.normal(0.0, self.sigma))


def run(machine: Machine, draft: DraftQuality, k: int | None, steps: int = 3000, seed: int = 0,
        jitter: bool = True, batch: int = 1) -> float:
    """Expected-cost tokens per second of `batch` sequences decoding together: the policy's choices when k is
    None, else fixed k for all."""
    rng = np.random.default_rng(seed + 1)
    noise = Jitter(seed) if jitter else None
    seen = noise.factor if noise is not None else (lambda: 1.0)
    costs = StepCostModel()
    policy = DraftLengthPolicy(costs)
    acceptances = [Acceptance() for _ in range(batch)]
    tokens, seconds = 0, 0.0
    for _ in range(steps):
        if k is None:
            ks = policy.choose([DecodingSequence(a, room=16) for a in acceptances], other_tokens=0)
        else:
            ks = [k] * batch
        # the calls as the engine makes them: draft call j feeds every sequence still drafting (the first
        # catches up), then one verify of every sequence's last token and drafts
        draft_calls = [sum(CATCH_UP_TOKENS if j == 0 else 1 for k_i in ks if k_i > j) for j in range(max(ks))]
        true_draft = [machine.draft_seconds(t) for t in draft_calls]
        true_target = machine.target_seconds(batch + sum(ks))
        costs.observe_draft([s * seen() for s in true_draft], draft_calls)
        costs.observe_target(batch + sum(ks), true_target * seen())
        for acceptance, k_i in zip(acceptances, ks):
            accepted = 0
            while accepted < k_i and rng.random() < draft.rate(accepted):
                accepted += 1
            if k_i:
                policy.observe(acceptance, k_i, accepted)
            tokens += accepted + 1
        seconds += true_target + sum(true_draft)
    return tokens / seconds


def compare(machine: Machine, draft: DraftQuality, fixed: tuple[int, ...] = (0, 1, 2, 3, 4, 6),
            seeds: int = 3, steps: int = 3000, jitter: bool = True, batch: int = 1) -> dict[str, float]:
    """Tokens per second of each fixed k and of the policy, averaged over seeds (k = 0: plain decoding)."""
    def mean(k):
        return float(np.mean([run(machine, draft, k, steps, seed, jitter, batch) for seed in range(seeds)]))
    out = {f"k={k}": mean(k) for k in fixed}
    out["adaptive"] = mean(None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-jitter", action="store_true", help="the policy sees the formula's times exactly")
    parser.add_argument("--batch", default="1", help="comma-separated: sequences decoding together, e.g. 1,4,8")
    args = parser.parse_args()
    print("| machine | draft | sequences | best fixed k | its tok/s | adaptive tok/s | adaptive / best | adaptive / plain |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batch.split(",")):
        for machine in MACHINES:
            for draft in DRAFTS:
                result = compare(machine, draft, seeds=args.seeds, steps=args.steps, jitter=not args.no_jitter,
                                 batch=batch)
                fixed = {name: value for name, value in result.items() if name != "adaptive"}
                best = max(fixed, key=fixed.get)
                print(f"| {machine.name} | {draft.name} | {batch} | {best} | {fixed[best]:.2f} | "
                      f"{result['adaptive']:.2f} | {result['adaptive'] / fixed[best]:.3f} | "
                      f"{result['adaptive'] / fixed['k=0']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
