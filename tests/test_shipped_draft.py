"""The draft we ship (models/drafts/fastdraft-qwen2.5-coder-1.5b) works in the engine as committed.

CI has no 1.5B target, so the targets here are a tiny random Qwen2 over the same 151,936-token tokenizer
(enough to prove the committed folder resolves by catalog name, passes the vocabulary check, maps target ids
into its 30,721-row vocabulary and back, proposes, and never changes the target's greedy output) and the real
Qwen2.5-Coder-0.5B-Instruct, which the test command pulls: the 1.5B's tokenizer and architecture, so the
default target's family runs in CI. Acceptance against the real 1.5B is measured by `fastdraft bench` (see
the folder's README.md).
"""

from __future__ import annotations

import json
import shutil

import pytest

SHIPPED = "fastdraft-qwen2.5-coder-1.5b"


@pytest.fixture(scope="module")
def qwen_vocab_target(tmp_path_factory):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from models.export import export_ir
    from models.resolve import resolve_model

    shipped = resolve_model(SHIPPED)
    root = tmp_path_factory.mktemp("qwen-vocab-target")
    hf = root / "hf"
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=151645, bos_token_id=None)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)  # peaked logits: no argmax near-ties
    model.save_pretrained(hf)
    GenerationConfig(eos_token_id=151645, do_sample=False).save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy2(shipped.ir_dir / name, hf / name)
    return export_ir(hf, root / "ir", weight_format="fp32", convert_tokenizer=False)


def test_shipped_draft_is_exact_and_proposes(qwen_vocab_target):
    from transformers import AutoTokenizer

    from drafting.loader import load_engine
    from drafting.request import GenerationRequest
    from models.resolve import resolve_model

    target, draft = resolve_model(str(qwen_vocab_target)), resolve_model(SHIPPED)
    vocab_map = json.loads((draft.ir_dir / "draft_vocab_map.json").read_text())
    assert vocab_map["input"] == "draft" and vocab_map["draft_vocab_size"] == 30720
    engine = load_engine(target, draft, num_draft_tokens=4, precision="f32")
    assert engine.proposer.unknown_row == 30720
    tokenizer = AutoTokenizer.from_pretrained(draft.tokenizer_dir)
    for text in ("def fibonacci(n):\n    ", "Summarize: the 中文 river runs 🙂 to the sea."):  # rare tokens too
        ids = tokenizer.encode(text, add_special_tokens=False)
        common = dict(prompt_ids=ids, max_new_tokens=24, stop_token_ids=engine.eos_token_ids)
        plain = engine.generate_all(GenerationRequest(speculative=False, **common))
        spec = engine.generate_all(GenerationRequest(speculative=True, **common))
        assert spec.token_ids == plain.token_ids
        assert spec.stats.draft_tokens > 0


def test_shipped_draft_on_the_real_qwen_0_5b_target_is_exact_and_accepted():
    from transformers import AutoTokenizer

    from drafting.loader import load_engine
    from drafting.request import GenerationRequest
    from models.resolve import ModelNotPreparedError, resolve_model

    try:
        target = resolve_model("qwen2.5-coder-0.5b-instruct", weight_format="int8", pull=False)
    except ModelNotPreparedError:
        pytest.skip("qwen2.5-coder-0.5b-instruct is not pulled (scripts/test.sh pulls it)")
    engine = load_engine(target, resolve_model(SHIPPED), num_draft_tokens=3, adaptive=False, precision="f32",
                         max_running=2, kv_cache_bytes=256 << 20)
    tokenizer = AutoTokenizer.from_pretrained(target.tokenizer_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write a Python function that returns the "
                                             "n-th Fibonacci number."}], add_generation_prompt=True, tokenize=False)
    common = dict(prompt_ids=tokenizer.encode(prompt, add_special_tokens=False), max_new_tokens=32,
                  stop_token_ids=engine.eos_token_ids)
    plain = engine.generate_all(GenerationRequest(speculative=False, **common))
    spec = engine.generate_all(GenerationRequest(speculative=True, **common))
    assert spec.token_ids == plain.token_ids, (tokenizer.decode(plain.token_ids), tokenizer.decode(spec.token_ids))
    assert "def " in tokenizer.decode(plain.token_ids)  # the real model answers the question
    # a draft aligned to the 1.5B imitates its 0.5B sibling too: well above chance on a code answer
    assert spec.stats.accepted_tokens >= 0.3 * spec.stats.draft_tokens > 0, spec.stats
