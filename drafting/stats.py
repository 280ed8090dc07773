"""Speculative-decoding statistics per step and per request, and the quantities derived from them.

Definitions follow Leviathan et al. (arXiv 2211.17192), as in docs/formulas.md:
- accepted_per_position[i] counts drafts whose (i+1)-th token was accepted; drafting stops at the
  first rejection, so position i is only reached when positions 0..i-1 were accepted.
- alpha (acceptance rate) is estimated per position as accepted[i] / reached[i] and averaged over
  all reached positions, weighted by how often they were reached. It is NOT accepted/drafted, which
  underestimates alpha when drafting stops at the first rejection.
- mean accepted length = 1 + accepted tokens / drafts (counts the bonus/correction token).
- tau(k) = (1 - alpha^(k+1)) / (1 - alpha): expected tokens per target call at draft length k.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepStats:
    """One target call: k drafted tokens, how many were accepted, and the time it took."""

    num_drafted: int  # k for this step (0 for a plain decoding step)
    num_accepted: int  # leading drafted tokens the target accepted
    num_emitted: int  # tokens this step added to the output (accepted + 1 correction/bonus, minus any cut by a stop)
    draft_time_s: float
    target_time_s: float


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    target_calls: int = 0  # verification (or plain decode) calls after prefill
    drafts: int = 0  # steps that proposed at least one token
    draft_tokens: int = 0
    accepted_tokens: int = 0
    bonus_tokens: int = 0  # steps where every drafted token was accepted and the target added one more
    # accepted_per_position[i]: drafts whose token at position i was accepted;
    # drafted_per_position[i]: drafts that proposed a token at position i;
    # reached_per_position[i]: drafts whose token at position i was compared (all before it accepted).
    accepted_per_position: list[int] = field(default_factory=list)
    drafted_per_position: list[int] = field(default_factory=list)
    reached_per_position: list[int] = field(default_factory=list)
    draft_time_s: float = 0.0
    target_time_s: float = 0.0
    prefill_time_s: float = 0.0
    total_time_s: float = 0.0

    def record(self, step: StepStats) -> None:
        self.target_calls += 1
        self.draft_time_s += step.draft_time_s
        self.target_time_s += step.target_time_s
        if step.num_drafted == 0:
            return
        self.drafts += 1
        self.draft_tokens += step.num_drafted
        self.accepted_tokens += step.num_accepted
        if step.num_accepted == step.num_drafted:
            self.bonus_tokens += 1
        for counts in (self.drafted_per_position, self.reached_per_position, self.accepted_per_position):
            _grow(counts, step.num_drafted)
        for position in range(step.num_drafted):
            self.drafted_per_position[position] += 1
        for position in range(min(step.num_accepted + 1, step.num_drafted)):
            self.reached_per_position[position] += 1
        for position in range(step.num_accepted):
            self.accepted_per_position[position] += 1

    def merge(self, other: "GenerationStats") -> None:
        for name in ("prompt_tokens", "generated_tokens", "target_calls", "drafts", "draft_tokens",
                     "accepted_tokens", "bonus_tokens", "draft_time_s", "target_time_s",
                     "prefill_time_s", "total_time_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.accepted_per_position, other.accepted_per_position),
                             (self.drafted_per_position, other.drafted_per_position),
                             (self.reached_per_position, other.reached_per_position)):
            _grow(mine, len(theirs))
            for position, count in enumerate(theirs):
                mine[position] += count

    @property
    def acceptance_per_position(self) -> list[float]:
        """P(token i accepted | tokens 0..i-1 accepted and token i drafted)."""
        reached = self.reached_per_position
        return [a / r if r else 0.0 for a, r in zip(self.accepted_per_position, reached)]

    @property
    def alpha(self) -> float:
        reached = self.reached_per_position
        total = sum(reached)
        return sum(self.accepted_per_position) / total if total else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verifying target call, bonus/correction token included."""
        return 1.0 + self.accepted_tokens / self.drafts if self.drafts else 1.0

    @property
    def draft_acceptance_ratio(self) -> float:
        """accepted / drafted, what vLLM and llama.cpp report (not alpha)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    def tau(self, k: int) -> float:
        alpha = self.alpha
        return float(k + 1) if alpha >= 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.total_time_s if self.total_time_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "target_calls": self.target_calls,
            "drafts": self.drafts,
            "draft_tokens": self.draft_tokens,
            "accepted_tokens": self.accepted_tokens,
            "bonus_tokens": self.bonus_tokens,
            "accepted_per_position": list(self.accepted_per_position),
            "drafted_per_position": list(self.drafted_per_position),
            "reached_per_position": list(self.reached_per_position),
            "acceptance_per_position": [round(x, 4) for x in self.acceptance_per_position],
            "alpha": round(self.alpha, 4),
            "mean_accepted_length": round(self.mean_accepted_length, 4),
            "draft_acceptance_ratio": round(self.draft_acceptance_ratio, 4),
            "draft_time_s": round(self.draft_time_s, 4),
            "target_time_s": round(self.target_time_s, 4),
            "prefill_time_s": round(self.prefill_time_s, 4),
            "total_time_s": round(self.total_time_s, 4),
            "tokens_per_second": round(self.tokens_per_second, 3),
        }


def _grow(counts: list[int], length: int) -> None:
    if len(counts) < length:
        counts.extend([0] * (length - len(counts)))
