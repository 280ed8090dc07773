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
    """logits: [len(token_ids), vocab] (or more rows), row i scoring token_ids[i].

    Vectorised over the rows in float32 (as vLLM computes them): this runs on the engine thread for every
    emitted token of a request that asks for logprobs or is captured, so it must stay well under a step.
    """
    count = len(token_ids)
    assert logits.shape[0] >= count, (logits.shape, count)
    if count == 0:
        return []
    rows = np.asarray(logits[:count], dtype=np.float32)
    peak = rows.max(axis=1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))  # log-sum-exp per row
    ids = np.asarray(token_ids, dtype=np.int64)
    chosen = rows[np.arange(count), ids] - log_norm
    if num_top > 0:
        best = np.argpartition(rows, -num_top, axis=1)[:, -num_top:]
        values = np.take_along_axis(rows, best, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        best, values = np.take_along_axis(best, order, axis=1), np.take_along_axis(values, order, axis=1) - log_norm[:, None]
        tops = [list(zip(b.tolist(), v.tolist())) for b, v in zip(best, values)]
    else:
        tops = [[] for _ in range(count)]
    return [TokenLogprob(int(token), float(value), top) for token, value, top in zip(ids.tolist(), chosen.tolist(), tops)]
