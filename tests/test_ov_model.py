"""The compiled IR agrees with PyTorch, and masked rollback equals never having fed the tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from drafting.ov_model import StatefulCausalLM


@pytest.fixture(scope="module")
def target(tiny_models):
    return StatefulCausalLM(tiny_models["target"], precision="f32")


def test_logits_match_pytorch(target, tiny_models):
    hf = AutoModelForCausalLM.from_pretrained(tiny_models["target"].parent / "target-hf").eval()
    ids = [3, 14, 15, 92, 65, 35, 89, 79]
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].numpy()
    session = target.new_session()
    got = session.forward(ids, num_logits=len(ids)).copy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # num_logits slices the last rows only
    other = target.new_session()
    np.testing.assert_allclose(other.forward(ids, num_logits=2), expected[-2:], atol=1e-4, rtol=1e-4)


def test_masked_rollback_equals_a_clean_cache(target):
    clean, rolled = target.new_session(), target.new_session()
    clean.forward([1, 2, 3, 4], 1)
    expected = clean.forward([5, 6], 2).copy()
    rolled.forward([1, 2, 3, 4], 1)
    rolled.forward([200, 201, 202], 3)  # rejected draft
    rolled.truncate(4)
    assert rolled.masked_slots == 3
    np.testing.assert_allclose(rolled.forward([5, 6], 2), expected, atol=1e-5)
    rolled.compact()
    assert rolled.masked_slots == 0
    clean.forward([7], 1)
    rolled.forward([7], 1)
    np.testing.assert_allclose(rolled.forward([8], 1), clean.forward([8], 1).copy(), atol=1e-5)


def test_sync_reuses_the_common_prefix(target):
    session = target.new_session()
    session.forward([1, 2, 3, 4, 5], 1)
    assert session.sync([1, 2, 3, 9, 9]) == 3
    assert session.tokens == [1, 2, 3]
    assert session.sync([1, 2, 3]) == 2  # the last token is always fed again to get its logits
