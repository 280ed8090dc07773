"""Greedy speculative decoding must reproduce plain greedy decoding token for token."""

from __future__ import annotations

import numpy as np
import pytest

from drafting.draft_model import DraftModelProposer
from drafting.draft_with_lookup import DraftWithLookupProposer
from drafting.engine import Engine, EngineConfig
from drafting.ngram import PromptLookupProposer
from drafting.ov_model import StatefulCausalLM
from drafting.request import GenerationRequest
from drafting.sampling import SamplingParams

PROMPTS = [[1, 2, 3, 4, 5], [17, 99, 3, 250, 7, 7, 8, 9, 10, 11, 300, 12], list(range(40, 80))]


@pytest.fixture(scope="module")
def models(tiny_models):
    return {name: StatefulCausalLM(path, precision="f32", name=name) for name, path in tiny_models.items()}


def plain(models, prompt, n):
    engine = Engine(models["target"])
    return engine.generate_all(GenerationRequest(prompt_ids=prompt, max_new_tokens=n))


@pytest.mark.parametrize("draft_name", ["near", "far", "target"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_draft_model_greedy_matches_plain(models, draft_name, k):
    proposer = DraftModelProposer(models[draft_name], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=k))
    for prompt in PROMPTS:
        expected = plain(models, prompt, 60)
        result = engine.generate_all(GenerationRequest(prompt_ids=prompt, max_new_tokens=60))
        assert result.token_ids == expected.token_ids
        assert result.finish_reason == "length"
        assert result.stats.drafts > 0


def test_target_as_its_own_draft_accepts_everything(models):
    proposer = DraftModelProposer(models["target"], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=4))
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[1], max_new_tokens=51))
    stats = result.stats
    assert stats.draft_tokens == stats.accepted_tokens > 0
    assert stats.alpha == 1.0
    assert stats.mean_accepted_length == 5.0
    assert stats.acceptance_per_position == [1.0] * 4


def test_near_draft_exercises_rollback(models):
    proposer = DraftModelProposer(models["near"], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=5))
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[2], max_new_tokens=200))
    assert result.token_ids == plain(models, PROMPTS[2], 200).token_ids
    stats = result.stats
    assert 0 < stats.accepted_tokens < stats.draft_tokens, "the near draft should be partly rejected"
    assert stats.generated_tokens == 200


def test_prompt_lookup_greedy_matches_plain(models):
    engine = Engine(models["target"], PromptLookupProposer(), EngineConfig(num_draft_tokens=4))
    for prompt in PROMPTS:
        looped = prompt * 3  # repetition gives prompt lookup something to find
        assert engine.generate_all(GenerationRequest(prompt_ids=looped, max_new_tokens=50)).token_ids == \
            plain(models, looped, 50).token_ids


@pytest.mark.parametrize("copy_tokens", [2, 8])
def test_draft_with_lookup_greedy_matches_plain(models, copy_tokens):
    proposer = DraftWithLookupProposer(DraftModelProposer(models["near"], models["target"].vocab_size), copy_tokens)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=2))
    longer_than_k = 0
    for prompt in PROMPTS:
        for context, length in ((prompt, 60), (prompt * 3, 60), (prompt * 3, 5)):  # repeats to copy; a short budget
            result = engine.generate_all(GenerationRequest(prompt_ids=context, max_new_tokens=length))
            assert result.token_ids == plain(models, context, length).token_ids
            longer_than_k += sum(result.stats.drafted_per_position[2:])
            assert len(result.stats.drafted_per_position) <= max(2, copy_tokens)
    assert (longer_than_k > 0) == (copy_tokens > 2), "copies go beyond the model's k when copy_tokens allows"


def test_draft_with_lookup_copies_a_long_match_without_the_model(models):
    session = DraftWithLookupProposer(DraftModelProposer(models["near"], models["target"].vocab_size)).new_session()
    context = [5, 6, 7, 8, 9, 10, 11, 12, 13, 5, 6, 7, 8]  # the last 4-gram occurred before, followed by 9..13
    assert session.propose(context, 2, SamplingParams(), None) == ([9, 10, 11, 12, 13, 5, 6, 7], None)
    assert session.propose(context, 2, SamplingParams(), None, limit=3) == ([9, 10, 11], None)
    assert session.model.cache.tokens == [], "a copied proposal must not run the draft model"
    ids, _ = session.propose(list(range(100, 120)), 3, SamplingParams(), None, limit=8)  # no repeats: the model drafts
    assert len(ids) == 3 and session.model.cache.tokens


def test_adaptive_matches_plain(models):
    proposer = DraftModelProposer(models["near"], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=4, adaptive=True))
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[0], max_new_tokens=120))
    assert result.token_ids == plain(models, PROMPTS[0], 120).token_ids


def test_adaptive_with_lookup_matches_plain_and_learns_only_from_the_models_steps(models, monkeypatch):
    from drafting import adaptive
    from drafting.draft_with_lookup import DraftWithLookupSession

    observed, copies = [], []
    learn, propose = adaptive.AdaptiveDraftLength.observe, DraftWithLookupSession.propose

    def recording_observe(self, num_drafted, *args):
        observed.append(num_drafted)
        return learn(self, num_drafted, *args)

    def recording_propose(self, *args, **kwargs):
        ids = propose(self, *args, **kwargs)
        copies.append(self.last_was_copy)
        return ids
    monkeypatch.setattr(adaptive.AdaptiveDraftLength, "observe", recording_observe)
    monkeypatch.setattr(DraftWithLookupSession, "propose", recording_propose)
    proposer = DraftWithLookupProposer(DraftModelProposer(models["near"], models["target"].vocab_size))
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=3, adaptive=True))
    looped = PROMPTS[1] * 3
    result = engine.generate_all(GenerationRequest(prompt_ids=looped, max_new_tokens=80))
    assert result.token_ids == plain(models, looped, 80).token_ids
    assert any(copies) and not all(copies), "the context should give both copies and model drafts"
    assert len(observed) == copies.count(False), "copy steps must not reach the adaptive policy"


def test_lookup_still_copies_when_adaptive_turns_the_model_off(models, monkeypatch):
    from drafting import adaptive

    monkeypatch.setattr(adaptive.AdaptiveDraftLength, "next_k", lambda self: 0)
    proposer = DraftWithLookupProposer(DraftModelProposer(models["near"], models["target"].vocab_size))
    engine = Engine(models["target"], proposer, EngineConfig(adaptive=True, max_sessions=1))
    looped = PROMPTS[2] * 2
    result = engine.generate_all(GenerationRequest(prompt_ids=looped, max_new_tokens=40))
    assert result.token_ids == plain(models, looped, 40).token_ids
    assert result.stats.drafts > 0 and result.stats.accepted_tokens > 0, "copies should still be proposed"
    slot = engine._slots.get()
    assert slot.proposer_session.model.cache.tokens == [], "at k = 0 the draft model must not run"


def test_prefix_reuse_across_requests_is_exact(models):
    engine = Engine(models["target"], config=EngineConfig(max_sessions=1))
    first = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[2], max_new_tokens=20))
    extended = PROMPTS[2] + first.token_ids[:10] + [5, 6]
    again = engine.generate_all(GenerationRequest(prompt_ids=extended, max_new_tokens=20))
    fresh = Engine(models["target"]).generate_all(GenerationRequest(prompt_ids=extended, max_new_tokens=20))
    assert again.token_ids == fresh.token_ids


def test_compaction_keeps_output_exact(models, monkeypatch):
    from drafting.kv_session import KVSession

    monkeypatch.setattr(KVSession, "compact_min_waste", 4)
    proposer = DraftModelProposer(models["far"], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=6, max_sessions=1))
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[1], max_new_tokens=80))
    assert result.token_ids == plain(models, PROMPTS[1], 80).token_ids
    slot = engine._slots.get()
    assert slot.target.compactions > 0


class StopAfter:
    """A DraftStop that lets the draft go on for `n` tokens, recording the probabilities it hears."""

    def __init__(self, n: int):
        self.n, self.heard = n, []

    def keep_drafting(self, probability: float) -> bool:
        self.heard.append(probability)
        return len(self.heard) < self.n


@pytest.mark.parametrize("stop_after", [1, 3, 6])
def test_draft_stop_shortens_drafts_and_output_stays_exact(models, stop_after, monkeypatch):
    from drafting import adaptive

    proposer = DraftModelProposer(models["near"], models["target"].vocab_size)
    greedy = GenerationRequest(prompt_ids=[1], max_new_tokens=1).sampling
    stop = StopAfter(stop_after)
    drafted = proposer.new_session().propose(PROMPTS[1], 6, greedy, None, stop)[0]
    assert len(drafted) == stop_after and len(stop.heard) == stop_after
    assert all(0.0 < p <= 1.0 for p in stop.heard)  # the draft's own probability of each pick
    # the engine hands the policy's stop to the draft each step; the output stays the target's
    monkeypatch.setattr(adaptive.FixedDraftLength, "draft_stop", lambda self: StopAfter(stop_after))
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=6))
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[2], max_new_tokens=80))
    assert result.token_ids == plain(models, PROMPTS[2], 80).token_ids
    assert result.stats.draft_tokens <= stop_after * result.stats.drafts
    if stop_after == 1:
        assert result.stats.draft_tokens == result.stats.drafts
