"""A validated generation request (`Job`), the events its choices yield (`ChoiceEvent`) and what came of it
(`JobOutcome`), plus the checks and defaults that turn an endpoint's fields into a Job.

Boundary: plain data and request-level rules; nothing here runs the engine or speaks HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from drafting.sampling import SamplingParams
from drafting.stats import GenerationStats
from server import errors
from server.logprobs import EmittedToken
from server.protocol import SpeculativeOptions
from server.runtime import Runtime


@dataclass
class Job:
    """A validated request: one or more prompts (token ids), n choices each, how to sample and when to stop."""

    endpoint: str  # "completions" | "chat"
    prompts: list[list[int]]
    n: int
    max_tokens: int
    sampling: SamplingParams
    stop: list[str]
    speculative: SpeculativeOptions | None
    logprobs: int | None = None  # None: none; n: each token's logprob and its n top alternatives
    prompt_logprobs: bool = False  # also score the prompt's tokens (completions with echo + logprobs)
    store: bool | None = None  # false: never captured (server/capture.py)
    metadata: dict[str, str] | None = None  # stored with a captured choice
    arrival: float = field(default_factory=time.perf_counter)


@dataclass
class ChoiceEvent:
    index: int  # choice index: prompt_index * n + j, as OpenAI numbers them
    text: str
    finish_reason: str | None  # set on the choice's last event only
    tokens: list[EmittedToken] = field(default_factory=list)  # logprobs of the tokens this text released
    scored_prompt: list[EmittedToken] | None = None  # the prompt's tokens and logprobs (once per choice, before its text)


@dataclass
class JobOutcome:
    """Filled while run_job() runs; read after it ends."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    stats: GenerationStats = field(default_factory=GenerationStats)
    speculative: bool = False
    finish_reasons: list[str] = field(default_factory=list)  # per choice index ("" until it ends)
    scored_prompts: dict[int, list[EmittedToken]] = field(default_factory=dict)  # choice index -> its scored prompt
    models: dict = field(default_factory=dict)  # Runtime.describe() when the request was admitted

    def usage_speculative(self) -> dict:
        s = self.stats
        return {
            "enabled": self.speculative, "proposer": self.models.get("proposer") if self.speculative else None,
            "draft": self.models.get("draft") if self.speculative else None,
            "drafts": s.drafts, "draft_tokens": s.draft_tokens, "accepted_tokens": s.accepted_tokens,
            "accepted_per_position": list(s.accepted_per_position),
            "reached_per_position": list(s.reached_per_position),
            "acceptance_per_position": [round(x, 4) for x in s.acceptance_per_position],
            "acceptance_rate": round(s.alpha, 4), "mean_accepted_length": round(s.mean_accepted_length, 4),
            "draft_time_s": round(s.draft_time_s, 4), "target_time_s": round(s.target_time_s, 4),
        }

    @property
    def finish_reason(self) -> str:
        """One label for the whole request (metrics): length if any choice was cut, else stop."""
        return "length" if "length" in self.finish_reasons else "stop"


def check_context(runtime: Runtime, prompts: list[list[int]], max_tokens: int | None, param: str,
                  default: int | None) -> int:
    """The max_tokens to run with, after the limit and context checks (400s naming the field and the limit)."""
    limit = runtime.settings.max_tokens_limit
    if max_tokens is not None and max_tokens > limit:
        raise errors.invalid(f"{param} must be <= {limit}, got {max_tokens}", param)
    max_context = runtime.engine.max_context
    longest = max(len(p) for p in prompts)
    if max_tokens is None:
        room = max_context - longest
        if room < 1:
            raise errors.context_length_exceeded(longest, 1, max_context, param)
        return min(default or limit, limit, room)
    if longest + max_tokens > max_context:
        raise errors.context_length_exceeded(longest, max_tokens, max_context, param)
    return max_tokens


def sampling_params(temperature: float | None, top_p: float | None, top_k: int | None, seed: int | None) -> SamplingParams:
    # OpenAI's default temperature is 1.0
    return SamplingParams(temperature=1.0 if temperature is None else float(temperature),
                          top_p=1.0 if top_p is None else float(top_p), top_k=top_k or 0, seed=seed)


def choose_speculation(runtime: Runtime, options: SpeculativeOptions | None) -> bool:
    """Whether this request may speculate. The load policy itself (if --spec-max-running is set: no drafting
    while more requests run) is applied by the engine at every step, so a long request stops drafting as soon
    as others arrive and resumes when they leave."""
    if options is not None and options.enabled is False:
        return False
    if not runtime.has_proposer:
        if options is not None and options.enabled:
            raise errors.invalid("speculative.enabled is true but this server runs without a draft "
                                 "(started with --no-draft)", "speculative.enabled")
        return False
    return True
