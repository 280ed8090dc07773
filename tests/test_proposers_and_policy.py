"""Prompt lookup search, adaptive draft length, and the statistics' definitions."""

from __future__ import annotations

import numpy as np

from drafting.adaptive import AdaptiveDraftLength, FixedDraftLength
from drafting.ngram import find_continuation
from drafting.stats import GenerationStats, StepStats


def test_prompt_lookup_uses_the_longest_most_recent_match():
    context = np.array([1, 2, 3, 9, 9, 1, 2, 3, 7, 7, 2, 3])
    # trailing 3-gram (7, 2, 3)? no match; 2-gram (2, 3) last seen at index 6 -> continuation 7, 7, 2
    assert find_continuation(context, 3, max_ngram=3, min_ngram=1) == [7, 7, 2]


def test_prompt_lookup_without_match_proposes_nothing():
    assert find_continuation(np.array([1, 2, 3, 4]), 5, max_ngram=3, min_ngram=1) == []


def test_adaptive_lengthens_when_the_draft_is_right_and_stops_when_it_is_wrong():
    policy = AdaptiveDraftLength(initial_k=4, max_k=8)
    for _ in range(20):
        k = policy.next_k()
        policy.observe(k, k, draft_time_s=0.01 * k, target_time_s=0.1)
    assert policy.next_k() == 8
    for _ in range(30):
        k = max(policy.next_k(), 1)
        policy.observe(k, 0, draft_time_s=0.03 * k, target_time_s=0.1)
    assert policy.k == 0  # drafting switched off: no k beats a plain step
    probes = [policy.next_k() for _ in range(policy.probe_every)]
    assert probes.count(1) == 1  # but it keeps probing now and then


def test_break_even_is_where_one_more_draft_token_stops_paying():
    assert FixedDraftLength(5).draft_stop() is None  # a fixed k drafts k tokens
    policy = AdaptiveDraftLength(initial_k=4, decay=0.0)  # decay 0: the last observation only
    assert policy.break_even() == 0.0  # nothing measured yet: draft the whole k
    policy.observe(2, 1, draft_time_s=0.006, target_time_s=0.090)  # 3 ms a draft token, 90 ms at k=2
    policy.observe(4, 3, draft_time_s=0.012, target_time_s=0.098)  # 98 ms at k=4: 4 ms per verified token
    # (3 ms draft + 4 ms verify) / ((12 + 98) ms / 4 emitted tokens)
    assert abs(policy.break_even() - 0.007 / (0.110 / 4)) < 1e-9


def test_the_drafts_catch_up_call_is_not_counted_as_a_draft_tokens_cost():
    policy = AdaptiveDraftLength(initial_k=5)
    # first step: the draft's first call prefilled the prompt (1 s), then 4 one-token calls of 30 ms
    policy.observe(5, 0, draft_time_s=1.0 + 4 * 0.03, target_time_s=0.1, catch_up_s=1.0)
    assert abs(policy._draft_token_time - 0.03) < 1e-9
    assert policy.next_k() > 0  # an unlucky, expensive first step does not switch drafting off


def test_draft_probabilities_are_calibrated_against_what_the_target_accepts():
    policy = AdaptiveDraftLength(initial_k=4)
    assert abs(policy.acceptance_given(0.42) - 0.45) < 1e-9  # prior: face value, by tenths
    for _ in range(30):  # a draft unsure of itself (p = 0.42) that the target always agrees with
        stop = policy.draft_stop()
        for _ in range(4):
            stop.keep_drafting(0.42)
        policy.observe(4, 4, draft_time_s=0.004, target_time_s=0.1)
    assert policy.acceptance_given(0.42) > 0.95
    assert policy.acceptance_given(0.95) == 0.95  # buckets it never saw keep the prior
    stop = policy.draft_stop()
    assert [stop.keep_drafting(0.42) for _ in range(4)] == [True] * 4  # calibrated: worth going on
    for _ in range(60):  # tokens it gives p = 0.25 are always rejected
        policy.draft_stop().keep_drafting(0.25)
        policy.observe(1, 0, draft_time_s=0.001, target_time_s=0.1)
    assert policy.acceptance_given(0.25) < 0.005 < policy.break_even()  # 1 ms draft, ~101 ms a token
    assert policy.draft_stop().keep_drafting(0.25) is False  # ... so the draft stops right there
    assert policy.draft_stop().keep_drafting(0.42) is True


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
