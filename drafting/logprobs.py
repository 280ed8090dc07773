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
    shifted = np.subtract(rows, peak)
    log_norm = peak[:, 0] + np.log(np.exp(shifted, out=shifted).sum(axis=1))  # log-sum-exp per row
    ids = np.asarray(token_ids, dtype=np.int64)
    chosen = rows[np.arange(count), ids] - log_norm
    if num_top > 0:
        best = top_ids(rows, num_top)
        values = np.take_along_axis(rows, best, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        best, values = np.take_along_axis(best, order, axis=1), np.take_along_axis(values, order, axis=1) - log_norm[:, None]
        tops = [list(zip(b.tolist(), v.tolist())) for b, v in zip(best, values)]
    else:
        tops = [[] for _ in range(count)]
    return [TokenLogprob(int(token), float(value), top) for token, value, top in zip(ids.tolist(), chosen.tolist(), tops)]


GROUPS = 64


def top_ids(rows: np.ndarray, num_top: int) -> np.ndarray:
    """[rows, num_top] ids of each row's num_top largest values, in no particular order.

    An argpartition of a whole 152k-entry row costs several times its log-sum-exp, so the search is narrowed.
    The ids are split into interleaved groups (group j: j, j + width, j + 2 width, ... for width = vocab // 64,
    an elementwise maximum of 64 contiguous slices, which vectorizes): the num_top largest values lie in the
    num_top groups with the largest maxima, since a group that holds none of them has a maximum no larger than
    the smallest of them. Only those groups are searched.
    """
    count, vocab = rows.shape
    width = vocab // GROUPS
    if width <= num_top:
        return np.argpartition(rows, -num_top, axis=1)[:, -num_top:]
    group_max = rows[:, :width * GROUPS].reshape(count, GROUPS, width).max(axis=1)
    groups = np.argpartition(group_max, -num_top, axis=1)[:, -num_top:]
    candidates = (groups[:, :, None] + width * np.arange(GROUPS)).reshape(count, -1)
    if vocab > width * GROUPS:  # the ids past the last whole slice are always searched
        tail = np.broadcast_to(np.arange(width * GROUPS, vocab), (count, vocab - width * GROUPS))
        candidates = np.concatenate([candidates, tail], axis=1)
    picked = np.argpartition(np.take_along_axis(rows, candidates, axis=1), -num_top, axis=1)[:, -num_top:]
    return np.take_along_axis(candidates, picked, axis=1)
