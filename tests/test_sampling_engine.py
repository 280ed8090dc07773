"""Sampling through the engine with a reduced-vocabulary draft: the tokens come out distributed as the target's.

p = target, q = draft. The draft is the tiny 'near' model with its output layer cut to a subset of the
target's ids (an IR edit, plus the `draft_vocab_map.json` a real reduced draft carries), a subset that
leaves out some of the target's likeliest tokens. The engine samples the draft over its own rows and must
hand the verifier q scattered back to the target's ids; rejection sampling (no seed) is then exact only if
it does. The test runs many short generations and compares the histogram of the first emitted token with
the target's own p (from its logits), and the second token, after each of the likeliest first tokens,
with p given that token.

No top-k or top-p here: with q cut to a few tokens, a q put at the wrong ids lands mostly outside p's
support, where rejection sampling shrugs it off (reject, resample from p); at top_k=8 such a bug moved the
first token's histogram by less than its noise. Temperature 1.0 on the tiny model already puts most of
p's mass on a few tokens, so a few thousand generations resolve the histogram over the whole vocabulary.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from drafting.blocks import BlockTable
from drafting.draft_model import DraftModelProposer
from drafting.engine import Engine, EngineConfig
from drafting.paged_model import PagedBatch, PagedCausalLM, core
from drafting.request import GenerationRequest
from drafting.sampling import SamplingParams, probabilities
from training.vocab_map import VocabMap

PROMPT = ([11, 22, 33, 44, 55, 66] * 6)[:33]  # one KV block (32 tokens) and one more: see sample_first_two
PARAMS = SamplingParams(temperature=1.0)  # no seed: the rejection-sampling path
GENERATIONS = 6000
CONCURRENT = 16  # generations in flight at once: the engine batches them into one target call per step
FIRST_TOKENS = 3  # the second token is checked after each of the target's 3 likeliest first tokens


def reduced_vocabulary_draft(ir_dir: Path, keep: np.ndarray, target_vocab: int, out_dir: Path) -> Path:
    """A copy of the IR whose output layer keeps only rows `keep` (target ids, increasing), with its vocab map."""
    model = core().read_model(ir_dir / "openvino_model.xml")
    matmul = model.output("logits").get_node()
    while matmul.get_type_name() != "MatMul":
        matmul = matmul.input_value(0).get_node()
    assert matmul.get_attributes()["transpose_b"]  # the weight is [vocab, hidden]: keep its rows
    rows = ops.gather(matmul.input_value(1), ops.constant(keep.astype(np.int64)), ops.constant(np.int64(0)))
    matmul.input(1).replace_source_output(rows.output(0))
    model.validate_nodes_and_infer_types()
    out_dir.mkdir(parents=True)
    ov.save_model(model, out_dir / "openvino_model.xml", compress_to_fp16=False)
    shutil.copy(ir_dir / "config.json", out_dir / "config.json")
    VocabMap(keep, target_vocab).save(out_dir)  # draft_vocab_map.json, input "target": the draft reads target ids
    return out_dir


def next_token_p(target: PagedCausalLM, contexts: list[list[int]]) -> np.ndarray:
    """p of the token after each context [len(contexts), vocab], from one target call on fresh blocks."""
    tables = [BlockTable(target.pool) for _ in contexts]
    try:
        for table, context in zip(tables, contexts):
            table.reserve(len(context))
        logits = target.forward(PagedBatch(contexts, [0] * len(contexts), [t.blocks for t in tables],
                                           [1] * len(contexts)))
        return probabilities(logits.copy(), PARAMS)
    finally:
        for table in tables:
            table.release()


def tv_noise(expected: np.ndarray, samples: int) -> float:
    """E[TV] of a `samples`-draw histogram of `expected` (cells ~ N(p, p (1 - p) / n), E|N(0, s^2)| = s sqrt(2/pi))."""
    return 0.5 * float(np.sqrt(2.0 * expected * (1.0 - expected) / (np.pi * samples)).sum())


@pytest.fixture(scope="module")
def target(tiny_models):
    return PagedCausalLM(tiny_models["target"], num_blocks=64, precision="f32", name="target")


@pytest.fixture(scope="module")
def reduced_draft(tiny_models, target, tmp_path_factory):
    p0 = next_token_p(target, [PROMPT])[0]
    likeliest = np.argsort(-p0)[:8]
    # every fourth id, and the target's second and third likeliest first tokens, are outside the draft's vocabulary
    left_out = set(range(3, target.vocab_size, 4)) | {int(t) for t in likeliest[1:3]}
    keep = np.array([t for t in range(target.vocab_size) if t not in left_out])
    ir = reduced_vocabulary_draft(tiny_models["near"], keep, target.vocab_size,
                                  tmp_path_factory.mktemp("reduced") / "near-reduced-ir")
    return PagedCausalLM(ir, num_blocks=64, precision="f32", name="near-reduced")


@pytest.fixture
def seeded_entropy(monkeypatch):
    """Unseeded requests draw fresh entropy (np.random.default_rng(None)); number them instead, so the test
    is reproducible while every request still takes the unseeded (rejection-sampling) path."""
    original = np.random.default_rng
    counter = itertools.count()
    monkeypatch.setattr(np.random, "default_rng",
                        lambda seed=None: original([2024, next(counter)]) if seed is None else original(seed))


def sample_first_two(engine: Engine) -> tuple[np.ndarray, float]:
    """The first two tokens of GENERATIONS generations [GENERATIONS, 2], and the fraction of drafts accepted."""
    pairs = np.empty((GENERATIONS, 2), dtype=np.int64)
    # A fresh prompt's final chunk gives its first token with no draft; with the prompt's first block cached,
    # every generation starts decoding instead, so its first two tokens are drafted and verified.
    assert len(PROMPT) == engine.pool.block_size + 1
    engine.generate_all(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=1, sampling=PARAMS))
    drafted = accepted = 0
    for start in range(0, GENERATIONS, CONCURRENT):
        # 3 tokens at k = 2: one step verifies two drafts (its bonus is the third token); a rejection at the
        # first draft gives a second step, with one draft
        generations = [engine.start(GenerationRequest(prompt_ids=PROMPT, max_new_tokens=3, sampling=PARAMS))
                       for _ in range(min(CONCURRENT, GENERATIONS - start))]
        for n, generation in enumerate(generations, start):
            generation.result()
            assert len(generation.token_ids) == 3
            pairs[n] = generation.token_ids[:2]
            drafted += generation.stats.draft_tokens
            accepted += generation.stats.accepted_tokens
    assert drafted >= 2 * GENERATIONS
    return pairs, accepted / drafted


def first_two_statistics(target: PagedCausalLM, pairs: np.ndarray) -> dict[str, tuple[float, float]]:
    """(TV to the target's distribution, its expected noise) for the first token, and for (first, second).

    (first, second) is taken on a partition: one cell per second token y after each of the target's likeliest
    first tokens x, expected p0(x) p(y | prompt + x), and one cell for every other first token."""
    vocab = target.vocab_size
    p0 = next_token_p(target, [PROMPT])[0]
    first = np.bincount(pairs[:, 0], minlength=vocab) / len(pairs)
    likeliest = np.argsort(-p0)[:FIRST_TOKENS]
    second_p = next_token_p(target, [PROMPT + [int(x)] for x in likeliest])  # [FIRST_TOKENS, vocab]
    expected = np.append((p0[likeliest, None] * second_p).ravel(), 1.0 - p0[likeliest].sum())
    observed = np.append(np.concatenate([np.bincount(pairs[pairs[:, 0] == x, 1], minlength=vocab) for x in likeliest]),
                         np.isin(pairs[:, 0], likeliest, invert=True).sum()) / len(pairs)
    return {"first": (0.5 * float(np.abs(first - p0).sum()), tv_noise(p0, len(pairs))),
            "first and second": (0.5 * float(np.abs(observed - expected).sum()), tv_noise(expected, len(pairs)))}


def test_sampling_with_a_reduced_vocabulary_draft_follows_the_target(target, reduced_draft, seeded_entropy):
    proposer = DraftModelProposer(reduced_draft, target.vocab_size)
    assert proposer.draft_to_target is not None and proposer.unknown_row is None  # output cut, target ids in
    p0 = next_token_p(target, [PROMPT])[0]
    assert any(t not in set(proposer.draft_to_target.tolist()) for t in np.argsort(-p0)[:8])  # q cannot name all of p's top
    engine = Engine(target, proposer, EngineConfig(num_draft_tokens=2, adaptive=False, max_running=CONCURRENT))
    pairs, acceptance = sample_first_two(engine)
    assert 0.05 < acceptance < 0.95  # the draft is neither ignored nor the target
    bound = 0.05
    for name, (tv, noise) in first_two_statistics(target, pairs).items():
        assert noise < bound / 2, name
        assert tv < bound, (name, tv, noise)
