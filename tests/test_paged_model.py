"""The paged IR agrees with PyTorch; rollback by a shorter length, batching and logits rows are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from drafting.paged_model import PagedBatch, PagedCausalLM


@pytest.fixture(scope="module")
def target(tiny_models):
    return PagedCausalLM(tiny_models["target"], num_blocks=16, precision="f32")


def call(model, tokens, past, blocks, rows):
    return model.forward(PagedBatch([tokens], [past], [blocks], [rows])).copy()


def test_logits_match_pytorch(target, tiny_models):
    hf = AutoModelForCausalLM.from_pretrained(tiny_models["target"].parent / "target-hf").eval()
    ids = [3, 14, 15, 92, 65, 35, 89, 79]
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(call(target, ids, 0, [0], len(ids)), expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(call(target, ids, 0, [1], 2), expected[-2:], atol=1e-4, rtol=1e-4)  # last rows only
    # one token at a time over the cache gives each position's logits too
    for i, token in enumerate(ids):
        np.testing.assert_allclose(call(target, [token], i, [2], 1)[0], expected[i], atol=1e-4, rtol=1e-4)


def test_rollback_by_a_shorter_length_equals_a_clean_cache(target):
    size = target.block_size
    prefix = list(range(1, size + 3))  # crosses a block boundary
    call(target, prefix, 0, [3, 4], 1)
    expected = call(target, [5, 6], len(prefix), [3, 4], 2)
    call(target, prefix, 0, [5, 6], 1)
    call(target, [200, 201, 202], len(prefix), [5, 6], 3)  # a rejected draft, written after the prefix
    np.testing.assert_allclose(call(target, [5, 6], len(prefix), [5, 6], 2), expected, atol=1e-5)
    # roll back into the first block: the rejected tokens there are overwritten as well
    short = prefix[:size - 2]
    clean = call(target, short + [7, 8, 9], 0, [7, 8], 1)
    np.testing.assert_allclose(call(target, [7, 8, 9], len(short), [5, 6], 1), clean, atol=1e-5)


def test_sequences_in_one_call_equal_each_alone(target):
    a, b = [1, 2, 3, 4, 5], list(range(30, 75))
    together = target.forward(PagedBatch([a, b], [0, 0], [[9], [10, 11]], [2, 1])).copy()
    np.testing.assert_allclose(together[:2], call(target, a, 0, [12], 2), atol=1e-5)
    np.testing.assert_allclose(together[2:], call(target, b, 0, [13, 14], 1), atol=1e-5)
    # decode steps of several cached sequences at once, one with drafts
    step = target.forward(PagedBatch([[6], [75, 76, 77]], [5, 45], [[9], [10, 11]], [1, 3])).copy()
    np.testing.assert_allclose(step[:1], call(target, [6], 5, [12], 1), atol=1e-5)
    np.testing.assert_allclose(step[1:], call(target, [75, 76, 77], 45, [13, 14], 3), atol=1e-5)


def test_a_middle_prompt_chunk_needs_no_logits(target):
    assert target.forward(PagedBatch([[1, 2, 3]], [0], [[15]], [0])).shape == (0, target.vocab_size)
