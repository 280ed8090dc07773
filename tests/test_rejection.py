"""The verifier: constructed cases, and the distribution test (output ~ target p, not draft q)."""

from __future__ import annotations

import numpy as np
import pytest

from drafting.rejection import verify
from drafting.sampling import SamplingParams, probabilities, sample

VOCAB = 10


def one_hot_logits(ids: list[int], vocab: int = VOCAB) -> np.ndarray:
    logits = np.full((len(ids), vocab), -5.0, dtype=np.float32)
    logits[np.arange(len(ids)), ids] = 5.0
    return logits


def test_greedy_full_match_gets_bonus():
    assert verify([3, 4, 5], None, one_hot_logits([3, 4, 5, 6]), SamplingParams(), None) == (3, 6)


def test_greedy_early_mismatch():
    assert verify([3, 9, 5], None, one_hot_logits([3, 4, 5, 6]), SamplingParams(), None) == (1, 4)


def test_greedy_empty_draft_is_plain_decoding():
    assert verify([], None, one_hot_logits([7]), SamplingParams(), None) == (0, 7)


def test_sampling_rejects_token_the_target_excludes():
    params = SamplingParams(temperature=1.0, top_k=1)
    rng = np.random.default_rng(0)
    for _ in range(50):
        accepted, token = verify([2], None, one_hot_logits([3, 3]), params, rng)
        assert (accepted, token) == (0, 3)


def _histogram(p_logits, q_logits, params, k, samples, seed, point_mass=False):
    rng = np.random.default_rng(seed)
    q = probabilities(q_logits, params)
    target_logits = np.stack([p_logits] * (k + 1))
    counts = np.zeros(VOCAB)
    for _ in range(samples):
        draft = [sample(q, rng) for _ in range(k)]
        draft_probs = None if point_mass else np.stack([q] * k)
        accepted, token = verify(draft, draft_probs, target_logits, params, rng)
        first = draft[0] if accepted > 0 else token
        counts[first] += 1
    return counts / samples


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_k=6, top_p=0.9)])
@pytest.mark.parametrize("point_mass", [False, True])
def test_rejection_sampling_reproduces_target_distribution(params, point_mass):
    rng = np.random.default_rng(1234)
    p_logits = rng.normal(size=VOCAB) * 1.5
    q_logits = rng.normal(size=VOCAB) * 1.5  # a deliberately bad draft
    expected_p = probabilities(p_logits, params)
    q = probabilities(q_logits, params)
    observed = _histogram(p_logits, q_logits, params, k=2, samples=100_000, seed=7, point_mass=point_mass)
    tv_to_target = 0.5 * np.abs(observed - expected_p).sum()
    tv_to_draft = 0.5 * np.abs(observed - q).sum()
    assert tv_to_target < 0.01, (observed, expected_p)
    assert tv_to_draft > 0.1


def test_bonus_token_follows_target_when_draft_equals_target():
    params = SamplingParams(temperature=1.0)
    rng = np.random.default_rng(5)
    p_logits = rng.normal(size=VOCAB)
    p = probabilities(p_logits, params)
    counts = np.zeros(VOCAB)
    for _ in range(50_000):
        draft = [sample(p, rng)]
        accepted, token = verify(draft, p[None, :], np.stack([p_logits, p_logits]), params, rng)
        assert accepted == 1
        counts[token] += 1
    assert 0.5 * np.abs(counts / counts.sum() - p).sum() < 0.01


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    probs = probabilities(logits, SamplingParams(temperature=1.0, top_p=0.7))
    np.testing.assert_allclose(probs, [0.625, 0.375, 0.0, 0.0])


def test_sampling_params_name_the_limit():
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingParams(temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="temperature must be between"):
        SamplingParams(temperature=-1.0)
