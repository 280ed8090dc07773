"""Greedy speculative decoding must reproduce plain greedy decoding token for token, alone or batched."""

from __future__ import annotations

import pytest

from drafting.draft_model import DraftModelProposer
from drafting.draft_with_lookup import DraftWithLookupProposer
from drafting.engine import Engine, EngineConfig
from drafting.ngram import PromptLookupProposer
from drafting.paged_model import PagedCausalLM
from drafting.proposer import DraftSlot
from drafting.request import GenerationRequest
from drafting.sampling import SamplingParams

from conftest import generate_at_once

PROMPTS = [[1, 2, 3, 4, 5], [17, 99, 3, 250, 7, 7, 8, 9, 10, 11, 300, 12], list(range(40, 80))]


@pytest.fixture(scope="module")
def models(tiny_models):
    return {name: PagedCausalLM(path, num_blocks=64, precision="f32", name=name) for name, path in tiny_models.items()}


def plain(models, prompt, n):
    engine = Engine(models["target"])
    return engine.generate_all(GenerationRequest(prompt_ids=prompt, max_new_tokens=n))


@pytest.mark.parametrize("draft_name", ["near", "far", "target"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_draft_model_greedy_matches_plain(models, draft_name, k):
    proposer = DraftModelProposer(models[draft_name], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=k, adaptive=False))
    for prompt in PROMPTS:
        expected = plain(models, prompt, 60)
        result = engine.generate_all(GenerationRequest(prompt_ids=prompt, max_new_tokens=60))
        assert result.token_ids == expected.token_ids
        assert result.finish_reason == "length"
        assert result.stats.drafts > 0


def test_target_as_its_own_draft_accepts_everything(models):
    proposer = DraftModelProposer(models["target"], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=4, adaptive=False))
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[1], max_new_tokens=51))
    stats = result.stats
    assert stats.draft_tokens == stats.accepted_tokens > 0
    assert stats.alpha == 1.0
    assert stats.mean_accepted_length == 5.0
    assert stats.acceptance_per_position == [1.0] * 4


def test_near_draft_exercises_rollback(models):
    proposer = DraftModelProposer(models["near"], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=5, adaptive=False))
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[2], max_new_tokens=200))
    assert result.token_ids == plain(models, PROMPTS[2], 200).token_ids
    stats = result.stats
    assert 0 < stats.accepted_tokens < stats.draft_tokens, "the near draft should be partly rejected"
    assert stats.generated_tokens == 200


def test_prompt_lookup_greedy_matches_plain(models):
    engine = Engine(models["target"], PromptLookupProposer(), EngineConfig(num_draft_tokens=4, adaptive=False))
    for prompt in PROMPTS:
        looped = prompt * 3  # repetition gives prompt lookup something to find
        assert engine.generate_all(GenerationRequest(prompt_ids=looped, max_new_tokens=50)).token_ids == \
            plain(models, looped, 50).token_ids


@pytest.mark.parametrize("copy_tokens", [2, 8])
def test_draft_with_lookup_greedy_matches_plain(models, copy_tokens):
    proposer = DraftWithLookupProposer(DraftModelProposer(models["near"], models["target"].vocab_size), copy_tokens)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=2, adaptive=False))
    longer_than_k = 0
    for prompt in PROMPTS:
        for context, length in ((prompt, 60), (prompt * 3, 60), (prompt * 3, 5)):  # repeats to copy; a short budget
            result = engine.generate_all(GenerationRequest(prompt_ids=context, max_new_tokens=length))
            assert result.token_ids == plain(models, context, length).token_ids
            longer_than_k += sum(result.stats.drafted_per_position[2:])
            assert len(result.stats.drafted_per_position) <= max(2, copy_tokens)
    assert (longer_than_k > 0) == (copy_tokens > 2), "copies go beyond the model's k when copy_tokens allows"


def slot(context, k, limit=None, seq_id=1, **kw):
    return DraftSlot(seq_id, context, k, k if limit is None else limit, SamplingParams(), None, **kw)


def test_draft_with_lookup_copies_a_long_match_without_the_model(models):
    draft = DraftModelProposer(models["near"], models["target"].vocab_size)
    proposer = DraftWithLookupProposer(draft)
    context = [5, 6, 7, 8, 9, 10, 11, 12, 13, 5, 6, 7, 8]  # the last 4-gram occurred before, followed by 9..13
    first, short = proposer.propose([slot(context, 2, 8), slot(context, 2, 3, seq_id=2)])
    assert first.ids == [9, 10, 11, 12, 13, 5, 6, 7] and first.copied and first.q is None
    assert short.ids == [9, 10, 11]
    assert draft.calls == 0, "a copied proposal must not run the draft model"
    modelled, = proposer.propose([slot(list(range(100, 120)), 3, 8)])  # no repeats: the model drafts
    assert len(modelled.ids) == 3 and not modelled.copied and draft.calls == 3


def test_batched_drafts_equal_drafts_made_alone(models):
    """One draft call per position for several sequences gives what each would get alone."""
    contexts = [PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    alone = [DraftModelProposer(models["near"], models["target"].vocab_size).propose([slot(c, 4)])[0].ids
             for c in contexts]
    draft = DraftModelProposer(models["near"], models["target"].vocab_size)
    together = draft.propose([slot(c, 4, seq_id=i) for i, c in enumerate(contexts)])
    assert [d.ids for d in together] == alone and draft.calls == 4
    # the next step feeds only what is new: the accepted prefix stays cached
    again = draft.propose([slot(contexts[0] + alone[0][:2], 3, seq_id=0)])
    assert again[0].ids == DraftModelProposer(models["near"], models["target"].vocab_size).propose(
        [slot(contexts[0] + alone[0][:2], 3)])[0].ids


def test_adaptive_matches_plain(models):
    proposer = DraftModelProposer(models["near"], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(adaptive=True))
    for prompt in PROMPTS:
        result = engine.generate_all(GenerationRequest(prompt_ids=prompt, max_new_tokens=120))
        assert result.token_ids == plain(models, prompt, 120).token_ids


def test_adaptive_with_lookup_matches_plain_and_learns_only_from_the_models_steps(models, monkeypatch):
    from drafting import adaptive

    observed, copies = [], []
    learn = adaptive.DraftLengthPolicy.observe

    def recording_observe(self, acceptance, num_drafted, num_accepted):
        observed.append(num_drafted)
        return learn(self, acceptance, num_drafted, num_accepted)

    monkeypatch.setattr(adaptive.DraftLengthPolicy, "observe", recording_observe)
    proposer = DraftWithLookupProposer(DraftModelProposer(models["near"], models["target"].vocab_size))
    propose = proposer.propose

    def recording_propose(slots):
        drafts = propose(slots)
        copies.extend(d.copied for d in drafts if d.ids)
        return drafts
    proposer.propose = recording_propose
    engine = Engine(models["target"], proposer, EngineConfig(adaptive=True))
    looped = PROMPTS[1] * 3
    result = engine.generate_all(GenerationRequest(prompt_ids=looped, max_new_tokens=80))
    assert result.token_ids == plain(models, looped, 80).token_ids
    assert any(copies) and not all(copies), "the context should give both copies and model drafts"
    assert len(observed) == copies.count(False), "copy steps must not reach the draft-length policy"


def test_lookup_still_copies_when_the_policy_turns_the_model_off(models, monkeypatch):
    from drafting import adaptive

    monkeypatch.setattr(adaptive.DraftLengthPolicy, "choose", lambda self, sequences, other: [0] * len(sequences))
    draft = DraftModelProposer(models["near"], models["target"].vocab_size)
    engine = Engine(models["target"], DraftWithLookupProposer(draft), EngineConfig(adaptive=True))
    looped = PROMPTS[2] * 2
    result = engine.generate_all(GenerationRequest(prompt_ids=looped, max_new_tokens=40))
    assert result.token_ids == plain(models, looped, 40).token_ids
    assert result.stats.drafts > 0 and result.stats.accepted_tokens > 0, "copies should still be proposed"
    assert draft.calls == 0, "at k = 0 the draft model must not run"


def test_prefix_reuse_across_requests_is_exact(models):
    engine = Engine(models["target"])
    engine.forget_cached_prefixes()
    long_prompt = list(range(40, 120))  # two full blocks of 32 to reuse
    first = engine.generate_all(GenerationRequest(prompt_ids=long_prompt, max_new_tokens=20))
    hits = engine.pool.hits
    extended = long_prompt + first.token_ids[:10] + [5, 6]
    again = engine.generate_all(GenerationRequest(prompt_ids=extended, max_new_tokens=20))
    assert engine.pool.hits >= hits + 2, "the prompt's full blocks should come from the cache"
    engine.forget_cached_prefixes()
    fresh = engine.generate_all(GenerationRequest(prompt_ids=extended, max_new_tokens=20))
    assert again.token_ids == fresh.token_ids


def test_rollback_across_block_boundaries_keeps_output_exact(models):
    """The far draft is rejected almost always, at every offset in a block: 300 tokens cross ~10 blocks."""
    proposer = DraftModelProposer(models["far"], models["target"].vocab_size)
    engine = Engine(models["target"], proposer, EngineConfig(num_draft_tokens=6, adaptive=False))
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPTS[1], max_new_tokens=300))
    assert result.token_ids == plain(models, PROMPTS[1], 300).token_ids
    assert result.stats.draft_tokens > result.stats.accepted_tokens
    assert engine.blocks_used == 0


@pytest.mark.parametrize("draft_name", ["near", None])
def test_batched_greedy_equals_each_request_alone(models, draft_name):
    proposer = DraftModelProposer(models[draft_name], models["target"].vocab_size) if draft_name else None
    engine = Engine(models["target"], proposer, EngineConfig(max_running=8))
    prompts = [PROMPTS[i % 3][i:] + [i + 1] for i in range(6)]
    lengths = [30 + 17 * i for i in range(6)]  # they finish at different steps: the batch changes as they run
    outputs = generate_at_once(engine, [GenerationRequest(prompt_ids=p, max_new_tokens=n) for p, n in zip(prompts, lengths)])
    for i, (prompt, n) in enumerate(zip(prompts, lengths)):
        assert outputs[i] == plain(models, prompt, n).token_ids, i


def test_a_preempted_sequence_resumes_with_the_same_output(tiny_models, models):
    """A pool too small for three sequences at once: the youngest gives its blocks back and recomputes."""
    small = PagedCausalLM(tiny_models["target"], num_blocks=7, precision="f32", name="small")  # 224 tokens
    engine = Engine(small, DraftModelProposer(models["near"], models["target"].vocab_size),
                    EngineConfig(num_draft_tokens=3, adaptive=False))
    prompts = [list(range(10 + i, 40 + i)) for i in range(3)]
    outputs = generate_at_once(engine, [GenerationRequest(prompt_ids=p, max_new_tokens=60) for p in prompts])
    assert engine.preemptions > 0
    for i, prompt in enumerate(prompts):
        assert outputs[i] == plain(models, prompt, 60).token_ids, i
    assert engine.blocks_used == 0
