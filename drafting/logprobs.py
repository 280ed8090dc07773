"""Log-probabilities of emitted tokens under the target, for OpenAI's `logprobs` fields.

Computed from the target's raw logits (before temperature, top-k or top-p, as vLLM reports them by
default) for the rows the verifier already has, so asking for them costs one log-softmax per token and no
extra model call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # the most likely alternatives, best first (empty unless asked for)


def token_logprobs(logits: np.ndarray, token_ids: list[int], num_top: int) -> list[TokenLogprob]:
    """logits: [len(token_ids), vocab], row i scoring token_ids[i]."""
    assert logits.shape[0] >= len(token_ids), (logits.shape, len(token_ids))
    result = []
    for row, token in zip(logits, token_ids):
        row = row.astype(np.float64)
        shifted = row - row.max()
        log_probs = shifted - np.log(np.exp(shifted).sum())
        top: list[tuple[int, float]] = []
        if num_top > 0:
            best = np.argpartition(-log_probs, num_top - 1)[:num_top]
            best = best[np.argsort(-log_probs[best], kind="stable")]
            top = [(int(i), float(log_probs[i])) for i in best]
        result.append(TokenLogprob(int(token), float(log_probs[token]), top))
    return result
