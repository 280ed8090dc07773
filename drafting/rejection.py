"""Verification of drafted tokens: greedy matching and exact speculative sampling.

Pure functions of (draft ids, draft probabilities, target logits, sampling params, rng or noise). Letters as in
Leviathan et al. 2023: p = target distribution, q = draft distribution, both after the same
temperature / top-k / top-p processing (drafting/sampling.py), so the output is distributed exactly as
the target's own sampling would be. `verify_coupled` is the seeded variant: the draft and the target pick
with the same per-position Gumbel noise (drafting/seeded_noise.py), so a match test is exact and the text
depends on the seed alone.
"""

from __future__ import annotations

import numpy as np

from drafting.sampling import SamplingParams, probabilities, sample
from drafting.seeded_noise import gumbel_pick


def verify(
    draft_ids: list[int],
    draft_probs: np.ndarray | None,  # [k, vocab] q, or None when the proposer is deterministic (point mass)
    target_logits: np.ndarray,  # [k + 1, vocab]: row i scores the token after draft_ids[:i]
    params: SamplingParams,
    rng: np.random.Generator | None,
) -> tuple[int, int]:
    """Return (number of draft tokens accepted, the token the target adds after them)."""
    k = len(draft_ids)
    assert target_logits.shape[0] == k + 1, (target_logits.shape, k)
    if params.greedy:
        return verify_greedy(draft_ids, target_logits)
    assert rng is not None
    assert draft_probs is None or draft_probs.shape[0] == k, (draft_probs.shape, k)
    p = probabilities(target_logits, params)  # [k + 1, vocab]
    for i, token in enumerate(draft_ids):
        q_token = 1.0 if draft_probs is None else float(draft_probs[i, token])
        p_token = float(p[i, token])
        # accept with probability min(1, p/q); q_token > 0 because the draft sampled this token
        if q_token <= 0.0 or rng.random() * q_token >= p_token:
            return i, sample(_residual(p[i], draft_probs, i, token), rng)
    return k, sample(p[k], rng)  # all accepted: the bonus token comes from p at position k + 1


def verify_coupled(
    draft_ids: list[int],
    target_logits: np.ndarray,  # [k + 1, vocab]: row i scores the token after draft_ids[:i]
    params: SamplingParams,
    noise: list[np.ndarray],  # [k + 1] Gumbel rows of the positions that rows 0..k decide
) -> tuple[int, int]:
    """Seeded sampling: the target's pick at each position is argmax(log p + noise); drafts are accepted while
    they equal it. Returns (accepted, the target's pick after them), the same tokens plain sampling picks."""
    k = len(draft_ids)
    assert target_logits.shape[0] == k + 1 and len(noise) == k + 1, (target_logits.shape, k, len(noise))
    p = probabilities(target_logits, params)  # [k + 1, vocab]
    for i, token in enumerate(draft_ids):
        choice = gumbel_pick(p[i], noise[i])
        if choice != token:
            return i, choice
    return k, gumbel_pick(p[k], noise[k])


def verify_greedy(draft_ids: list[int], target_logits: np.ndarray) -> tuple[int, int]:
    choices = target_logits.argmax(axis=-1)  # [k + 1]
    for i, token in enumerate(draft_ids):
        if int(choices[i]) != token:
            return i, int(choices[i])
    return len(draft_ids), int(choices[len(draft_ids)])


def _residual(p_row: np.ndarray, draft_probs: np.ndarray | None, i: int, token: int) -> np.ndarray:
    """norm(max(0, p - q)): the distribution that makes rejection-then-resample exact."""
    if draft_probs is None:  # q is a point mass on `token`
        residual = p_row.copy()
        residual[token] = 0.0
    else:
        residual = np.maximum(p_row - draft_probs[i], 0.0)
    total = residual.sum()
    if total <= 0.0:  # p == q up to rounding: any sample from p is exact
        return p_row
    return residual / total
