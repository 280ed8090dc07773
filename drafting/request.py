"""What a caller asks the engine for, and what the engine streams back. Token ids only."""

from __future__ import annotations

from dataclasses import dataclass, field

from drafting.logprobs import MAX_TOP_LOGPROBS, TokenLogprob
from drafting.sampling import SamplingParams
from drafting.stats import GenerationStats, StepStats

MAX_DRAFT_TOKENS = 16  # longest draft a request may ask for; the verifier feeds k+1 tokens at once


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_token_ids: frozenset[int] = frozenset()  # EOS ids: generation ends after emitting one (it is kept in the ids)
    speculative: bool = True  # False forces plain decoding even when the engine has a proposer
    num_draft_tokens: int | None = None  # None: the engine's default
    adaptive: bool | None = None  # None: the engine's default
    logprobs: int | None = None  # None: none; n >= 0: each emitted token's logprob plus its n top alternatives
    # score the prompt too: the first group carries each prompt token's logprob under the target (with the
    # `logprobs` alternatives; None for the first token, which nothing predicts). The prompt is then
    # computed in full (no cached prefix). With max_new_tokens=0 the request only scores its prompt.
    prompt_logprobs: bool = False
    # traffic capture: each emitted token's n most likely alternatives under the target (raw logits), in
    # TokenGroup.target_top; computed with `logprobs` in one pass, so capture costs no extra model call
    capture_top_logprobs: int = 0

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("prompt_ids must hold at least one token")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.prompt_logprobs and self.logprobs is None:
            raise ValueError("prompt_logprobs needs logprobs (the number of alternatives per token, 0 for none)")
        if self.num_draft_tokens is not None and not (1 <= self.num_draft_tokens <= MAX_DRAFT_TOKENS):
            raise ValueError(f"num_draft_tokens must be between 1 and {MAX_DRAFT_TOKENS}, got {self.num_draft_tokens}")
        if self.logprobs is not None and not (0 <= self.logprobs <= MAX_TOP_LOGPROBS):
            raise ValueError(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.logprobs}")
        if not 0 <= self.capture_top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"capture_top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.capture_top_logprobs}")


@dataclass(frozen=True)
class TokenGroup:
    """Tokens verified by one target call, delivered as soon as they are known."""

    token_ids: list[int]
    finish_reason: str | None  # "stop" (EOS), "length" (max_new_tokens), "cancelled", or None while running
    step: StepStats | None  # None for the group produced by prefill
    num_draft_tokens: int  # k in force for this step (0 for plain decoding)
    logprobs: list[TokenLogprob] | None = None  # one per token in token_ids, when the request asked
    prompt_logprobs: list[TokenLogprob | None] | None = None  # first group only, when the request asked
    target_top: list[TokenLogprob] | None = None  # one per token, when the request sets capture_top_logprobs


@dataclass
class GenerationResult:
    token_ids: list[int]
    finish_reason: str
    stats: GenerationStats
