"""The verifier: constructed cases, and distribution tests that can tell the positions apart.

p = target, q = draft. The distribution tests use a tiny "model" whose next-token distribution depends on
the position only: row t of a table, whatever came before, with its own random p and q at every position.
The tokens a correct speculative loop emits are then independent draws, the first two distributed as
p[0] x p[1] (the product), and a verifier that reads the wrong row of p, q or the noise anywhere gives a
different joint distribution. The loop is the engine's: draft k tokens from q at the positions that come
next, verify them against p's rows of those positions, emit the accepted tokens and the target's token,
and step again until two tokens are out (a rejection at the first position takes a second step, from
position 1).

Sample counts are chosen so the total-variation noise of each histogram, E[TV] ~ sum over cells of
sqrt(p (1 - p) / (2 pi n)) (see `tv_noise`), is at most half the bound; every generator is seeded.
"""

from __future__ import annotations

import numpy as np
import pytest

from drafting.rejection import verify, verify_coupled
from drafting.sampling import SamplingParams, probabilities, sample
from drafting.seeded_noise import SeededNoise, gumbel_pick

VOCAB = 10
K = 3  # draft length in the distribution tests
ROWS = K + 2  # positions a two-token run can reach: a step starts at position 0 or 1 and reads k + 1 rows
PROMPT_LEN = 5  # where the emitted tokens start in the sequence: seeded noise rows are numbered from here
SAMPLED = SamplingParams(temperature=1.0)
FILTERED = SamplingParams(temperature=0.7, top_k=6, top_p=0.9)


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


# --- distribution tests: a position-dependent target and draft -----------------------------------------


def position_tables(seed: int, params: SamplingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p logits [ROWS, vocab], p [ROWS, vocab], q [ROWS, vocab]): row t is position t's distribution."""
    rng = np.random.default_rng(seed)
    p_logits = rng.normal(size=(ROWS, VOCAB)) * 1.5
    # a draft near the target but off at every position: min(p, q) sums to 0.6-0.8 per row (its acceptance)
    q_logits = p_logits + rng.normal(size=(ROWS, VOCAB))
    return p_logits, probabilities(p_logits, params), probabilities(q_logits, params)


def tv(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


def tv_noise(expected: np.ndarray, samples: int) -> float:
    """E[TV] of a `samples`-draw histogram of `expected`: each cell's frequency is ~ N(p, p (1 - p) / n), and
    E|N(0, s^2)| = s sqrt(2 / pi). Its spread is far smaller (~0.3 / sqrt(n)), so a bound of twice this holds."""
    return 0.5 * float(np.sqrt(2.0 * expected * (1.0 - expected) / (np.pi * samples)).sum())


def joint_histogram(pairs: np.ndarray) -> np.ndarray:
    """[vocab, vocab] frequencies of (first, second) emitted token."""
    counts = np.bincount(pairs[:, 0] * VOCAB + pairs[:, 1], minlength=VOCAB * VOCAB)
    return counts.reshape(VOCAB, VOCAB) / len(pairs)


def rejection_sampled_pairs(p_logits: np.ndarray, q: np.ndarray, params: SamplingParams, samples: int, seed: int,
                            point_mass: bool) -> tuple[np.ndarray, set[int]]:
    """The first two tokens of `samples` speculative runs, and the accepted counts seen."""
    rng = np.random.default_rng(seed)
    pairs = np.empty((samples, 2), dtype=np.int64)
    accepted_seen: set[int] = set()
    for n in range(samples):
        emitted: list[int] = []
        while len(emitted) < 2:
            t = len(emitted)  # position of the next token
            draft = [sample(q[t + i], rng) for i in range(K)]
            draft_probs = None if point_mass else q[t:t + K]  # [k, vocab]
            accepted, token = verify(draft, draft_probs, p_logits[t:t + K + 1], params, rng)
            accepted_seen.add(accepted)
            emitted += draft[:accepted] + [token]
        pairs[n] = emitted[:2]
    return pairs, accepted_seen


@pytest.mark.parametrize("params, point_mass, samples", [
    (SAMPLED, False, 30_000),  # E[TV] 0.0105
    (SAMPLED, True, 30_000),  # the draft's ids treated as a deterministic proposer's (q a point mass)
    (FILTERED, False, 10_000),  # E[TV] 0.0045: top-k and top-p leave a few tokens per position
])
def test_rejection_sampling_emits_the_targets_joint_distribution(params, point_mass, samples):
    p_logits, p, q = position_tables(1234, params)
    pairs, accepted_seen = rejection_sampled_pairs(p_logits, q, params, samples, seed=7, point_mass=point_mass)
    assert accepted_seen == set(range(K + 1))  # rejections at every position, and full acceptance
    observed, expected = joint_histogram(pairs), np.outer(p[0], p[1])
    bound = 0.025
    assert tv_noise(expected, samples) < bound / 2
    assert tv(observed, expected) < bound, (observed, expected)
    # what a verifier reading the wrong rows would tend to: all far outside the bound
    assert tv(observed, np.outer(p[0], p[0])) > 0.1  # p's first row at every position
    assert tv(observed, np.outer(q[0], q[1])) > 0.1  # the draft's own distribution


@pytest.mark.parametrize("params", [SAMPLED, FILTERED])
def test_bonus_token_comes_from_the_targets_row_after_the_draft(params):
    # q = p on the k drafted rows: min(1, p/q) = 1, so every draft is accepted and each step ends with a bonus
    p_logits, p, _ = position_tables(99, params)
    assert min(tv(p[K], p[i]) for i in range(K)) > 0.2  # row k differs from every row before it
    rng = np.random.default_rng(3)
    samples = 20_000
    counts = np.zeros(VOCAB)
    for _ in range(samples):
        draft = [sample(p[i], rng) for i in range(K)]
        accepted, token = verify(draft, p[:K], p_logits[:K + 1], params, rng)
        assert accepted == K
        counts[token] += 1
    bound = 0.015
    assert tv_noise(p[K], samples) < bound / 2  # 0.0069 unfiltered
    assert tv(counts / samples, p[K]) < bound, (counts / samples, p[K])


@pytest.mark.parametrize("params, seeds", [(SAMPLED, 10_000), (FILTERED, 5_000)])  # E[TV] 0.018, 0.0064
def test_coupled_verification_emits_plain_coupled_sampling(params, seeds):
    # Seeded sampling: whatever the draft proposes, each emitted token is the target's own pick
    # argmax(log p_t + noise(t)) at its position, exactly, for every seed; over seeds, those picks are draws
    # from p (the Gumbel-max trick) with independent positions, so the first two follow p[0] x p[1].
    p_logits, p, q = position_tables(1234, params)
    pairs = np.empty((seeds, 2), dtype=np.int64)
    accepted_seen: set[int] = set()
    for seed in range(seeds):
        noise = SeededNoise(seed, VOCAB)
        plain = [gumbel_pick(p[t], noise(PROMPT_LEN + t)) for t in range(ROWS)]
        emitted: list[int] = []
        while len(emitted) < 2:
            t = len(emitted)
            position = PROMPT_LEN + t
            # the engine's draft model picks with the same noise: argmax(log q + noise) at each position
            draft = [gumbel_pick(q[t + i], noise(position + i)) for i in range(K)]
            accepted, token = verify_coupled(draft, p_logits[t:t + K + 1], params,
                                             [noise(position + i) for i in range(K + 1)])
            accepted_seen.add(accepted)
            emitted += draft[:accepted] + [token]
        assert emitted == plain[:len(emitted)], (seed, emitted, plain)
        pairs[seed] = emitted[:2]
    assert accepted_seen == set(range(K + 1))
    observed, expected = joint_histogram(pairs), np.outer(p[0], p[1])
    bound = 0.04
    assert tv_noise(expected, seeds) < bound / 2
    assert tv(observed, expected) < bound, (observed, expected)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    probs = probabilities(logits, SamplingParams(temperature=1.0, top_p=0.7))
    np.testing.assert_allclose(probs, [0.625, 0.375, 0.0, 0.0])


def test_sampling_params_name_the_limit():
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingParams(temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="temperature must be between"):
        SamplingParams(temperature=-1.0)
