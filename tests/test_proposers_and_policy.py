"""Prompt lookup search, the cost-driven draft length, and the statistics' definitions."""

from __future__ import annotations

import numpy as np

from drafting.adaptive import Acceptance, DecodingSequence, DraftLengthPolicy
from drafting.cost_model import StepCostModel
from drafting.ngram import find_continuation
from drafting.stats import GenerationStats, StepStats


def test_prompt_lookup_uses_the_longest_most_recent_match():
    context = np.array([1, 2, 3, 9, 9, 1, 2, 3, 7, 7, 2, 3])
    # trailing 3-gram (7, 2, 3)? no match; 2-gram (2, 3) last seen at index 6 -> continuation 7, 7, 2
    assert find_continuation(context, 3, max_ngram=3, min_ngram=1) == [7, 7, 2]


def test_prompt_lookup_without_match_proposes_nothing():
    assert find_continuation(np.array([1, 2, 3, 4]), 5, max_ngram=3, min_ngram=1) == []


def costs_of(one_token_s, per_token_s, draft_call_s=0.004):
    """A cost model measured on a machine where a call costs one_token_s + per_token_s per extra token."""
    costs = StepCostModel()
    for tokens in (1, 2, 4, 6, 9, 17, 33):
        costs.observe_target(tokens, one_token_s + per_token_s * (tokens - 1))
    for tokens in (1, 2, 4, 8, 16):
        costs.observe_draft([draft_call_s * (1 + 0.2 * (tokens - 1))], [tokens])
    return costs


def trained(rates, steps=200, k=8):
    """Acceptance counts of a sequence whose position-j tokens are accepted with probability rates[j]."""
    rng = np.random.default_rng(0)
    acceptance = Acceptance()
    for _ in range(steps):
        accepted = 0
        while accepted < k and rng.random() < rates[min(accepted, len(rates) - 1)]:
            accepted += 1
        acceptance.observe(k, accepted)
    return acceptance


def test_a_wide_call_costs_at_least_the_per_token_compute_of_the_narrow_ones():
    """A count beyond the fitted line, first seen in a fast moment and then called every step (so no pair of
    different counts corrects it), must not stay priced like a narrower call: 8 sequences at k = 4 feed 40."""
    def seconds(tokens):
        return 0.060 + 0.003 * tokens
    costs = StepCostModel()
    for _ in range(30):
        for tokens in (8, 16, 24, 32):
            costs.observe_target(tokens, seconds(tokens))
    costs.observe_target(40, seconds(32) * 0.95)  # a fast moment
    for _ in range(20):
        costs.observe_target(40, seconds(40))
    assert costs.target_seconds(40) / costs.target_seconds(32) > 0.97 * seconds(40) / seconds(32)


def test_cost_curve_interpolates_and_never_gets_cheaper_with_more_tokens():
    costs = StepCostModel()
    costs.observe_target(1, 0.100)
    assert abs(costs.target_seconds(5) - 0.100 * (1 + 0.1 * 4)) < 1e-9  # one point: the prior slope
    costs.observe_target(5, 0.180)
    assert abs(costs.target_seconds(3) - 0.140) < 1e-9
    assert abs(costs.target_seconds(9) - 0.260) < 1e-9  # extrapolated from the last two points
    costs.observe_target(7, 0.150)  # noise below the line: fitted through, the curve stays monotone
    assert costs.target_seconds(1) < costs.target_seconds(5) <= costs.target_seconds(7) <= costs.target_seconds(10)
    assert 0.150 < costs.target_seconds(7) < 0.190
    for _ in range(200):  # a count priced by many calls outweighs one priced once
        costs.observe_target(1, 0.100)
        costs.observe_target(2, 0.120)
    assert abs(costs.target_seconds(1) - 0.100) < 0.005 and abs(costs.target_seconds(2) - 0.120) < 0.006
    assert not costs.ready and costs.draft_seconds(3, 1) == 0.0  # no draft call measured yet
    assert StepCostModel(draft_model=False).ready is False
    costs.observe_draft([0.5, 0.01, 0.01], [600, 1, 1])  # the first call caught up on a 600-token prompt
    assert costs.ready and costs.draft.seen
    # a step's first call feeds ~2 tokens per sequence (catch-up), the others 1: far from the prompt's cost
    assert 3 * 0.01 < costs.draft_seconds(3, 1) < 0.05


def drifting_machine(shape, pattern, speed_at):
    """A cost model fed calls of counts `pattern` (in order) on a machine whose speed changes with time."""
    costs = StepCostModel()
    for step, tokens in enumerate(pattern):
        costs.observe_target(tokens, 0.1 * speed_at(step) * shape(tokens))
    return costs


def test_a_slow_spell_does_not_reprice_the_counts_it_did_not_measure():
    """What a verify costs relative to a 1-token call is the machine's; how fast the machine is this minute is
    not: a count last measured before another process took the cores must not look cheap after, and one
    measured during the spell must not look expensive once it ends."""
    def shape(tokens):
        return 1 + 0.25 * (tokens - 1)  # a 4-token call 1.75x
    warm_up = [1, 2, 3, 4, 1, 3, 2, 4] * 4
    # then only 1-token calls while the machine runs 3x slower, then a 4-token call after it recovers
    pattern = warm_up + [1] * 40 + [4]
    costs = drifting_machine(shape, pattern, lambda step: 3.0 if len(warm_up) <= step < len(warm_up) + 40 else 1.0)
    ratio = costs.target_seconds(4) / costs.target_seconds(1)
    assert abs(ratio - 1.75) < 0.15, ratio
    # the other way round: only 4-token calls through a slow spell, then 1-token calls again
    pattern = warm_up + [4] * 40 + [1]
    costs = drifting_machine(shape, pattern, lambda step: 3.0 if len(warm_up) <= step < len(warm_up) + 40 else 1.0)
    assert abs(costs.target_seconds(4) / costs.target_seconds(1) - 1.75) < 0.15
    # and a single call caught in a 3x burst moves the ratio by little
    costs = drifting_machine(shape, warm_up + [1, 4, 1], lambda step: 3.0 if step == len(warm_up) + 1 else 1.0)
    assert abs(costs.target_seconds(4) / costs.target_seconds(1) - 1.75) < 0.25


def test_flat_verify_and_a_good_draft_draft_long_a_compute_bound_verify_and_a_weak_draft_not_at_all():
    good, weak = trained([0.9]), trained([0.2])
    flat = DraftLengthPolicy(costs_of(0.080, 0.0005), probe_every=10 ** 6)  # AVX-512: 4 tokens cost ~1 token
    flat.engine_acceptance = trained([0.9], steps=1000)  # what the server saw of this draft so far
    assert flat.choose([DecodingSequence(good, room=16)], other_tokens=0) == [8]
    steep = DraftLengthPolicy(costs_of(0.118, 0.030), probe_every=10 ** 6)  # AVX2: a 4-token verify 1.75x
    steep.engine_acceptance = trained([0.2], steps=1000)
    assert steep.choose([DecodingSequence(weak, room=16)], other_tokens=0) == [0]
    middle = steep.choose([DecodingSequence(good, room=16)], other_tokens=0)[0]
    assert 1 <= middle < 8, "a compute-bound verify shortens even a good draft"


def test_a_larger_batch_drafts_less_where_tokens_cost_compute():
    policy = DraftLengthPolicy(costs_of(0.100, 0.025), probe_every=10 ** 6)
    acceptance = trained([0.8])
    alone = policy.choose([DecodingSequence(acceptance, 16)], 0)[0]
    batched = policy.choose([DecodingSequence(acceptance, 16) for _ in range(8)], 0)
    assert alone > 0 and max(batched) < alone
    assert policy.choose([DecodingSequence(acceptance, 2)], 0)[0] <= 2  # never past the room it has


def test_a_weak_sequence_is_trimmed_in_a_strong_batch():
    policy = DraftLengthPolicy(costs_of(0.100, 0.010), probe_every=10 ** 6)
    ks = policy.choose([DecodingSequence(trained([0.95]), 16), DecodingSequence(trained([0.1]), 16)], 0)
    assert ks[0] > 0 and ks[1] < ks[0]


def test_acceptance_is_kept_per_position():
    acceptance = trained([0.6, 0.9], steps=2000)  # the first token is harder than the ones after it
    assert abs(acceptance.rate(0) - 0.6) < 0.08 and abs(acceptance.rate(3) - 0.9) < 0.05
    expected = acceptance.expected_tokens(3)
    r = [acceptance.rate(i) for i in range(3)]
    assert abs(expected[3] - (1 + r[0] + r[0] * r[1] + r[0] * r[1] * r[2])) < 1e-9
    # a new sequence starts from the engine-wide rates (a prior worth a few observations)
    fresh = Acceptance()
    assert abs(fresh.rate(0, prior=acceptance) - acceptance.rate(0)) < 1e-9


def test_before_any_measurement_two_tokens_measure_the_costs_and_probes_keep_measuring():
    policy = DraftLengthPolicy(StepCostModel(), probe_every=4)
    assert policy.choose([DecodingSequence(Acceptance(), 16)], 0) == [2]
    policy = DraftLengthPolicy(costs_of(0.118, 0.030), probe_every=4)
    policy.engine_acceptance = trained([0.05], steps=1000)
    weak = DecodingSequence(trained([0.05]), 16)
    ks = [policy.choose([weak], 0)[0] for _ in range(16)]
    assert ks.count(1) == 2 and ks.count(0) == 14, "drafting off, but every 8th step tries one token"
    # drafting on: the probes alternate one token more than chosen with one fewer or a plain step
    policy = DraftLengthPolicy(costs_of(0.118, 0.030), probe_every=4)
    policy.engine_acceptance = trained([0.9], steps=1000)
    strong = DecodingSequence(trained([0.9]), 16)
    ks = [policy.choose([strong], 0)[0] for _ in range(16)]
    chosen = max(set(ks), key=ks.count)
    assert chosen >= 2 and ks.count(chosen + 1) == 2 and ks.count(chosen - 1) == 1 and ks.count(0) == 1, ks


def test_a_sequence_that_stopped_drafting_drifts_back_to_the_engine_wide_rate():
    """Off, a sequence observes nothing: its few early rejections fade, or it would stay off for good."""
    policy = DraftLengthPolicy(costs_of(0.118, 0.030), probe_every=10 ** 6)
    policy.engine_acceptance = trained([0.5], steps=1000)
    unlucky = Acceptance()
    for _ in range(30):
        unlucky.observe(2, 0)
    sequence = DecodingSequence(unlucky, 16)
    ks = [policy.choose([sequence], 0)[0] for _ in range(60)]
    assert ks[0] == 0 and ks[-1] > 0, ks


def test_the_policy_is_within_a_few_percent_of_the_best_fixed_k_on_a_noisy_simulated_machine():
    """drafting.policy_simulation: the policy sees call times through bursts and slow spells; its choices are
    scored on the noiseless cost. Without the drift-proof cost curve it lost 5-20% here (0.80 of plain with a
    useless draft; 0.88 of plain with a weak draft on a compute-bound verify)."""
    from drafting.policy_simulation import DRAFTS, MACHINES, compare

    for machine in (MACHINES[1], MACHINES[2]):
        for draft in DRAFTS:
            result = compare(machine, draft, fixed=(0, 1, 2, 3), seeds=1, steps=1500)
            best = max(v for name, v in result.items() if name != "adaptive")
            assert result["adaptive"] >= 0.93 * best, (machine.name, draft.name, result)
            assert result["adaptive"] >= 0.97 * result["k=0"], (machine.name, draft.name, result)
    # four sequences per call, where plain lies many tokens below any choice that drafts
    for draft in DRAFTS[:2]:
        result = compare(MACHINES[1], draft, fixed=(0, 1, 2), seeds=1, steps=1000, batch=4)
        best = max(v for name, v in result.items() if name != "adaptive")
        assert result["adaptive"] >= 0.93 * best, (draft.name, result)


def test_alpha_counts_only_positions_that_were_tested():
    stats = GenerationStats()
    stats.record(StepStats(num_drafted=4, num_accepted=1, num_emitted=2, draft_time_s=0, target_time_s=0))
    stats.record(StepStats(num_drafted=4, num_accepted=4, num_emitted=5, draft_time_s=0, target_time_s=0))
    # position 0: 2 tested, 2 accepted; 1: 2 tested, 1 accepted; 2 and 3: 1 tested, 1 accepted
    assert stats.acceptance_per_position == [1.0, 0.5, 1.0, 1.0]
    assert stats.alpha == 5 / 6
    assert stats.draft_acceptance_ratio == 5 / 8  # what accepted/drafted counters report: not alpha
    assert stats.mean_accepted_length == 1 + 5 / 2
    assert stats.bonus_tokens == 1


def test_alpha_is_exact_when_k_varies_between_steps():
    stats = GenerationStats()
    stats.record(StepStats(num_drafted=1, num_accepted=1, num_emitted=2, draft_time_s=0, target_time_s=0))
    stats.record(StepStats(num_drafted=2, num_accepted=0, num_emitted=1, draft_time_s=0, target_time_s=0))
    assert stats.reached_per_position == [2, 0]
    assert stats.alpha == 0.5


def test_copies_are_cut_where_their_verify_rows_do_not_pay():
    def policy_with(costs, copy_rates):
        policy = DraftLengthPolicy(costs, probe_every=10 ** 6)
        policy.engine_acceptance = trained([0.3], steps=1000)
        policy.copy_acceptance = trained(copy_rates, steps=1000)
        policy.choose([DecodingSequence(trained([0.3]), 16)], 0)  # sets the step's rate
        return policy
    flat = policy_with(costs_of(0.080, 0.0005), [0.5])
    assert flat.copy_room(8, fed_tokens=1) == 8, "where a verify row costs ~nothing, a long copy is free"
    steep = policy_with(costs_of(0.118, 0.030), [0.5])
    assert steep.copy_room(8, fed_tokens=1) < 3, "a compute-bound verify pays only for likely copied tokens"
    sure = policy_with(costs_of(0.118, 0.030), [0.97])
    assert sure.copy_room(8, fed_tokens=1) > steep.copy_room(8, fed_tokens=1)
