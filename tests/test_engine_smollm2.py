"""The engine on a real model, smollm2-135m-instruct: exactness, self-drafting, text streaming with stops."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from drafting.detokenize import IncrementalDetokenizer
from drafting.loader import load_engine, load_proposer
from drafting.request import GenerationRequest

from conftest import generate_at_once

PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three most important things to know about the French Revolution are",
    "import numpy as np\n\ndef normalize(vectors):\n",
    "Q: What is the capital of Italy?\nA:",
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_fp32):
    return AutoTokenizer.from_pretrained(smollm2_fp32.tokenizer_dir)


@pytest.fixture(scope="module")
def engine(smollm2_fp32, smollm2_int8):
    # the int8 export of the same model is a real, imperfect draft for the fp32 target
    return load_engine(smollm2_fp32, smollm2_int8, precision="f32", num_draft_tokens=4, max_running=4)


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_greedy_with_draft_matches_plain(engine, tokenizer):
    for prompt in PROMPTS:
        ids = encode(tokenizer, prompt)
        plain = engine.generate_all(GenerationRequest(prompt_ids=ids, max_new_tokens=48, speculative=False))
        for k in (2, 5):
            speculative = engine.generate_all(GenerationRequest(prompt_ids=ids, max_new_tokens=48, num_draft_tokens=k))
            assert speculative.token_ids == plain.token_ids, (prompt, k)
            assert speculative.stats.accepted_tokens > 0


def test_prompt_lookup_matches_plain(smollm2_fp32, tokenizer):
    engine = load_engine(smollm2_fp32, prompt_lookup=True, precision="f32", max_running=1)
    for prompt in PROMPTS[:2]:
        ids = encode(tokenizer, prompt * 2)
        plain = engine.generate_all(GenerationRequest(prompt_ids=ids, max_new_tokens=40, speculative=False))
        assert engine.generate_all(GenerationRequest(prompt_ids=ids, max_new_tokens=40)).token_ids == plain.token_ids


def test_target_as_its_own_draft_accepts_everything(smollm2_fp32, tokenizer):
    engine = load_engine(smollm2_fp32, smollm2_fp32, precision="f32", num_draft_tokens=5, adaptive=False,
                         max_running=1)
    result = engine.generate_all(GenerationRequest(prompt_ids=encode(tokenizer, PROMPTS[0]), max_new_tokens=37))
    assert result.stats.alpha == 1.0
    assert result.stats.accepted_tokens == result.stats.draft_tokens
    assert result.stats.mean_accepted_length == 6.0


def test_eos_from_generation_config_ends_chat_turn(engine, tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    result = engine.generate_all(GenerationRequest(prompt_ids=list(ids), max_new_tokens=200,
                                                   stop_token_ids=engine.eos_token_ids))
    assert result.finish_reason == "stop"
    assert result.token_ids[-1] in engine.eos_token_ids


def test_stop_string_never_leaks(engine, tokenizer):
    ids = encode(tokenizer, PROMPTS[2])
    full = tokenizer.decode(engine.generate_all(GenerationRequest(prompt_ids=ids, max_new_tokens=48)).token_ids)
    stop = full[20:24]
    text = IncrementalDetokenizer(tokenizer, [stop])
    streamed = ""
    for group in engine.start(GenerationRequest(prompt_ids=ids, max_new_tokens=48)):
        streamed += text.push(group.token_ids)
        if text.stopped:
            break
    streamed += text.flush()
    assert stop not in streamed
    assert streamed == full[:full.index(stop)]


def test_detokenizer_without_stops_reproduces_decode(engine, tokenizer):
    ids = encode(tokenizer, "Les élèves français écrivent « naïveté » — ")
    result = engine.generate_all(GenerationRequest(prompt_ids=ids, max_new_tokens=30))
    text = IncrementalDetokenizer(tokenizer)
    streamed = "".join(text.push([t]) for t in result.token_ids) + text.flush()
    assert streamed == tokenizer.decode(result.token_ids, skip_special_tokens=True)


def test_incompatible_draft_is_refused_before_compiling(smollm2_fp32, tmp_path):
    """A draft whose tokenizer swaps the ids of two tokens: load_proposer names the first of them."""
    import json
    import shutil

    from models.errors import VocabMismatchError
    from models.resolve import resolve_model

    draft_dir = tmp_path / "edited-draft"
    shutil.copytree(smollm2_fp32.ir_dir, draft_dir, ignore=shutil.ignore_patterns("openvino_model.bin"))
    (draft_dir / "openvino_model.bin").symlink_to(smollm2_fp32.ir_dir / "openvino_model.bin")
    tokenizer_json = json.loads((draft_dir / "tokenizer.json").read_text())
    vocab = tokenizer_json["model"]["vocab"]
    by_id = {token_id: token for token, token_id in vocab.items()}
    vocab[by_id[1000]], vocab[by_id[1001]] = 1001, 1000
    (draft_dir / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    with pytest.raises(VocabMismatchError, match="token id 1000"):
        load_proposer(resolve_model(str(draft_dir)), smollm2_fp32)


def test_four_requests_at_once_each_equal_their_output_alone(engine, tokenizer):
    """Four prompts batched into every target and draft call, finishing at different steps."""
    requests = [GenerationRequest(prompt_ids=encode(tokenizer, p), max_new_tokens=24 + 8 * i)
                for i, p in enumerate(PROMPTS)]
    alone = [engine.generate_all(r).token_ids for r in requests]
    assert generate_at_once(engine, requests) == alone
