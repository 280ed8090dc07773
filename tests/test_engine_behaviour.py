"""Engine behaviour beyond greedy equality: seeded sampling, stops, cancel, streaming, bad input."""

from __future__ import annotations

import threading
import time

import pytest

from drafting.draft_model import DraftModelProposer
from drafting.draft_with_lookup import DraftWithLookupProposer
from drafting.engine import Engine, EngineConfig
from drafting.errors import ContextLengthError
from drafting.paged_model import PagedCausalLM
from drafting.request import GenerationRequest
from drafting.sampling import SamplingParams

PROMPT = [11, 22, 33, 44, 55, 66]


@pytest.fixture(scope="module")
def target(tiny_models):
    return PagedCausalLM(tiny_models["target"], num_blocks=64, precision="f32", name="target")


@pytest.fixture(scope="module")
def engine(target, tiny_models):
    return Engine(target, DraftModelProposer(draft_model(tiny_models), target.vocab_size),
                  EngineConfig(num_draft_tokens=4, adaptive=False))


_drafts: dict = {}


def draft_model(tiny_models):
    if "near" not in _drafts:
        _drafts["near"] = PagedCausalLM(tiny_models["near"], num_blocks=64, precision="f32", name="near")
    return _drafts["near"]


def eventually(condition, timeout=10.0):
    """Poll until condition() holds (the step loop acts on its own thread), failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)
    return True


def sampled(engine, seed, temperature=1.5, **kw):
    params = SamplingParams(temperature=temperature, top_k=50, top_p=0.95, seed=seed)
    return engine.generate_all(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=40, sampling=params, **kw)).token_ids


def test_seeded_sampling_is_reproducible(engine):
    assert sampled(engine, seed=3) == sampled(engine, seed=3)
    assert sampled(engine, seed=3) != sampled(engine, seed=4)


def test_temperature_zero_ignores_seed(engine):
    assert sampled(engine, seed=1, temperature=0.0) == sampled(engine, seed=2, temperature=0.0)


def test_sampling_runs_speculatively_and_plain(engine):
    speculative = engine.generate_all(GenerationRequest(
        prompt_ids=PROMPT, max_new_tokens=40, sampling=SamplingParams(temperature=1.0, seed=0)))
    assert speculative.stats.drafts > 0 and len(speculative.token_ids) == 40
    plain = engine.generate_all(GenerationRequest(
        prompt_ids=PROMPT, max_new_tokens=40, sampling=SamplingParams(temperature=1.0, seed=0), speculative=False))
    assert plain.stats.drafts == 0 and plain.stats.target_calls == 39  # one per token after the first, which prefill gives


def test_draft_with_lookup_samples_reproducibly(target, tiny_models):
    combined = Engine(target, DraftWithLookupProposer(DraftModelProposer(draft_model(tiny_models), target.vocab_size)),
                      EngineConfig(num_draft_tokens=3, adaptive=False))
    params = SamplingParams(temperature=0.8, top_k=50, seed=11)
    runs = [combined.generate_all(GenerationRequest(prompt_ids=PROMPT * 4, max_new_tokens=40, sampling=params))
            for _ in range(2)]
    assert runs[0].token_ids == runs[1].token_ids and len(runs[0].token_ids) == 40
    assert runs[0].stats.drafts > 0


@pytest.mark.parametrize("k", [1, 4])
def test_seeded_sampling_gives_the_plain_text_whatever_k_and_the_batch(engine, k):
    """A seed decides every token (per-position noise): speculation, its k and what else runs change nothing."""
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=123)
    request = dict(prompt_ids=PROMPT, max_new_tokens=40, sampling=params)
    plain = engine.generate_all(GenerationRequest(speculative=False, **request)).token_ids
    alone = engine.generate_all(GenerationRequest(num_draft_tokens=k, **request))
    assert alone.token_ids == plain and alone.stats.drafts > 0
    others = [engine.start(GenerationRequest(prompt_ids=PROMPT[::-1] + [i], max_new_tokens=200,
                                             sampling=SamplingParams(temperature=1.0, seed=i)))
              for i in range(3)]
    try:
        assert engine.generate_all(GenerationRequest(num_draft_tokens=k, **request)).token_ids == plain
    finally:
        for other in others:
            other.close()


def test_eos_stops_and_is_kept(engine):
    reference = engine.generate_all(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=30)).token_ids
    eos = reference[12]
    result = engine.generate_all(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=30, stop_token_ids=frozenset([eos])))
    assert result.finish_reason == "stop"
    assert result.token_ids == reference[:reference.index(eos) + 1]


def test_streaming_groups_join_to_the_full_output(engine):
    request = GenerationRequest(prompt_ids=PROMPT, max_new_tokens=33)
    groups = list(engine.start(request))
    assert [g.finish_reason for g in groups[:-1]] == [None] * (len(groups) - 1)
    assert groups[-1].finish_reason == "length"
    assert sum((g.token_ids for g in groups), []) == engine.generate_all(request).token_ids
    assert all(g.step is not None for g in groups[1:])


def test_cancel_stops_the_engine_and_frees_the_blocks(target):
    engine = Engine(target, config=EngineConfig(max_running=1))
    engine.forget_cached_prefixes()
    idle = engine.blocks_used
    cancel = threading.Event()
    generation = engine.start(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=500), cancel)
    produced = 0
    for group in generation:
        produced += len(group.token_ids)
        if produced >= 5:
            cancel.set()
    assert generation.finish_reason == "cancelled"
    assert produced < 10
    # the engine itself stopped: the sequence left and its blocks went back (no step ran it after)
    eventually(lambda: engine.active == 0 and engine.blocks_used == idle)
    steps = engine.steps
    time.sleep(0.05)
    assert engine.steps == steps
    assert len(engine.generate_all(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=2)).token_ids) == 2


def test_abandoned_generation_frees_its_blocks(target):
    engine = Engine(target, config=EngineConfig(max_running=1))
    engine.forget_cached_prefixes()
    generation = engine.start(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=400))
    next(iter(generation))
    generation.close()
    eventually(lambda: engine.active == 0 and engine.blocks_used == 0)
    engine.generate_all(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=3))


def test_a_request_larger_than_the_kv_budget_is_refused(tiny_models):
    small = PagedCausalLM(tiny_models["target"], num_blocks=4, precision="f32", name="small")
    with pytest.raises(ValueError, match=r"must fit the KV cache budget of 88 tokens \(raise --kv-cache-gb\), got 106"):
        Engine(small).start(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=100))


def test_prompt_longer_than_context_is_refused(engine, target):
    with pytest.raises(ContextLengthError, match=f"context length {target.max_context}"):
        engine.start(GenerationRequest(prompt_ids=[1] * target.max_context, max_new_tokens=1))


def test_bad_requests_name_the_field():
    with pytest.raises(ValueError, match="num_draft_tokens must be between 1 and 16, got 17"):
        GenerationRequest(prompt_ids=PROMPT, max_new_tokens=4, num_draft_tokens=17)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0, got -1"):
        GenerationRequest(prompt_ids=PROMPT, max_new_tokens=-1)
    with pytest.raises(ValueError, match="prompt_ids must hold"):
        GenerationRequest(prompt_ids=[], max_new_tokens=4)


def test_token_outside_the_vocabulary_is_refused(engine):
    with pytest.raises(ValueError, match=r"prompt_ids must be in \[0, 512\), got 9999"):
        engine.start(GenerationRequest(prompt_ids=[1, 9999], max_new_tokens=4))


def test_speculation_turns_off_above_the_concurrency_limit(target, tiny_models):
    engine = Engine(target, DraftModelProposer(draft_model(tiny_models), target.vocab_size),
                    EngineConfig(max_running=2, speculative_max_concurrency=1, adaptive=False))
    first = engine.start(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=600))  # runs through the second
    second = engine.generate_all(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=20))
    assert second.stats.drafts == 0
    first.close()
    eventually(lambda: engine.active == 0)
    assert engine.generate_all(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=20)).stats.drafts > 0


def test_logprobs_are_the_targets_whether_or_not_it_speculates(engine):
    import numpy as np

    def run(speculative):
        request = GenerationRequest(prompt_ids=PROMPT, max_new_tokens=25, logprobs=3, speculative=speculative)
        groups = list(engine.start(request))
        return [lp for g in groups for lp in g.logprobs]

    plain, speculative = run(False), run(True)
    assert [lp.token_id for lp in plain] == [lp.token_id for lp in speculative]
    np.testing.assert_allclose([lp.logprob for lp in plain], [lp.logprob for lp in speculative], atol=1e-4)
    for lp in plain:
        assert len(lp.top) == 3
        assert lp.top[0][0] == lp.token_id  # greedy: the emitted token is the most likely one
        assert lp.top[0][1] >= lp.top[1][1] >= lp.top[2][1]
    with pytest.raises(ValueError, match="logprobs must be between 0 and 20, got 21"):
        GenerationRequest(prompt_ids=PROMPT, max_new_tokens=4, logprobs=21)


def test_forgetting_cached_prefixes_makes_the_next_request_pay_its_prefill(engine):
    # benchmarks rely on it: with prefix reuse, a prompt run a second time would skip its prefill
    request = GenerationRequest(prompt_ids=list(range(5, 75)), max_new_tokens=6)  # two full blocks
    engine.forget_cached_prefixes()
    first = engine.generate_all(request)
    hits = engine.pool.hits
    again = engine.generate_all(request)
    assert engine.pool.hits == hits + 2 and engine.pool.cached >= 2
    engine.forget_cached_prefixes()
    assert engine.pool.cached == 0
    cold = engine.generate_all(request)
    assert engine.pool.hits == hits + 2
    assert first.token_ids == again.token_ids == cold.token_ids


def test_without_prefix_caching_a_repeated_prompt_pays_its_prefill(engine, target):
    # --no-prefix-caching, for load tests against servers without it: cached blocks exist but are never taken
    request = GenerationRequest(prompt_ids=list(range(7, 77)), max_new_tokens=6)  # two full blocks
    cached = engine.generate_all(request)
    uncached = Engine(target, None, EngineConfig(prefix_caching=False))  # the same pool, its blocks still cached
    hits = target.pool.hits
    assert target.pool.cached >= 2
    assert uncached.generate_all(request).token_ids == uncached.generate_all(request).token_ids == cached.token_ids
    assert target.pool.hits == hits and target.pool.used == 0


def test_the_call_that_reads_a_prompts_end_gives_its_first_token(target):
    # TTFT: no extra step between reading a prompt and its first token, however many chunks the prompt takes
    engine = Engine(target, None, EngineConfig(prefix_caching=False, max_step_tokens=32))
    for length in (6, 32, 70):
        steps = engine.steps
        result = engine.generate_all(GenerationRequest(prompt_ids=list(range(3, 3 + length)), max_new_tokens=1))
        assert len(result.token_ids) == 1 and engine.steps == steps + -(-length // 32), length


def test_prompt_logprobs_score_each_token_as_generation_did(engine):
    """Scoring prompt + generated text (chunked past 256 tokens) gives the logprobs the generation reported."""
    import numpy as np

    prompt = [(7 * i) % 300 + 1 for i in range(290)]  # longer than one scoring chunk
    groups = list(engine.start(GenerationRequest(prompt_ids=prompt, max_new_tokens=12, logprobs=2, speculative=False)))
    generated = [lp for g in groups for lp in g.logprobs]
    assert groups[0].prompt_logprobs is None  # not asked for

    scoring = list(engine.start(GenerationRequest(prompt_ids=prompt + [lp.token_id for lp in generated],
                                                  max_new_tokens=0, logprobs=2, prompt_logprobs=True)))
    assert len(scoring) == 1 and scoring[0].token_ids == [] and scoring[0].finish_reason == "length"
    scored = scoring[0].prompt_logprobs
    assert len(scored) == len(prompt) + len(generated) and scored[0] is None
    assert [lp.token_id for lp in scored[1:]] == (prompt + [lp.token_id for lp in generated])[1:]
    tail = scored[len(prompt):]
    np.testing.assert_allclose([lp.logprob for lp in tail], [lp.logprob for lp in generated], atol=1e-4)
    assert [lp.top for lp in tail][0][0][0] == generated[0].top[0][0] and all(len(lp.top) == 2 for lp in scored[1:])


def test_prompt_logprobs_need_logprobs():
    with pytest.raises(ValueError, match="prompt_logprobs needs logprobs"):
        GenerationRequest(prompt_ids=PROMPT, max_new_tokens=1, prompt_logprobs=True)


@pytest.mark.parametrize("vocab", [151936, 49152, 1000, 300, 40])
def test_token_logprobs_match_a_full_log_softmax_and_sort(vocab):
    """The narrowed top-k search (drafting/logprobs.py) finds what a full sort does: rows where the best ids crowd
    into one interleaved group, sit in the ids past the last whole slice, or tie."""
    import numpy as np

    from drafting.logprobs import token_logprobs

    rng = np.random.default_rng(vocab)
    rows = (rng.standard_normal((6, vocab)) * 2).astype(np.float32)
    width = max(1, vocab // 64)
    rows[1, [5 + width * j for j in range(8) if 5 + width * j < vocab]] += 40  # one group holds the best eight
    rows[2, -3:] += 40  # the best ids are the last ones
    rows[3, :] = 1.0  # every value ties
    rows[4, rng.choice(vocab, 5, replace=False)] = 30.0  # five tie at the top
    tokens = rng.integers(0, vocab, len(rows)).tolist()
    scored = token_logprobs(rows, tokens, 8)
    reference = rows.astype(np.float64) - np.log(np.exp(rows.astype(np.float64)).sum(axis=1, keepdims=True))
    for row, token, lp in zip(reference, tokens, scored):
        assert lp.logprob == pytest.approx(row[token], abs=1e-4)
        expected = np.sort(row)[::-1][:min(8, vocab)]
        np.testing.assert_allclose([value for _, value in lp.top], expected, atol=1e-4)
        assert all(row[i] == pytest.approx(v, abs=1e-4) for i, v in lp.top) and len({i for i, _ in lp.top}) == len(lp.top)
