"""Repaired tokenizers: round-trip text, no automatic BOS, ChatML stops at <|im_end|>, and the
OpenVINO tokenizer/detokenizer IRs agree with the Hugging Face tokenizer. smollm2 and qwen2.5-coder-0.5b always
(the test script pulls them); the 1.5B only when already pulled into FASTDRAFT_HOME."""

from __future__ import annotations

import json

import pytest

from models.errors import ModelNotPreparedError
from models.resolve import resolve_model

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "  leading spaces, tabs\tand trailing newline\n\n",
    "Unicode: héllo wörld, 世界, emoji 🙂",
    "<|im_start|>user\nhi<|im_end|>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
]
CHAT = [{"role": "user", "content": "Write hello world in Python."}]


def _qwen(name: str):
    try:
        return resolve_model(name, weight_format="int8", pull=False)
    except ModelNotPreparedError:
        pytest.skip(f"{name} is not pulled into FASTDRAFT_HOME (run `fastdraft models pull {name}`)")


def _check_tokenizer(model, eos: str, eos_id: int, pad: str, pad_id: int, vocab_size: int):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model.tokenizer_dir))
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == (eos, eos_id)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == (pad, pad_id)
    assert len(tokenizer) <= vocab_size  # no token id the model's embedding cannot look up
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert tokenizer("hello")["input_ids"][0] != tokenizer.bos_token_id  # no automatic BOS
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWrite hello world in Python.<|im_end|>\n" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    generation = json.loads((model.ir_dir / "generation_config.json").read_text())
    eos_ids = generation["eos_token_id"] if isinstance(generation["eos_token_id"], list) else [generation["eos_token_id"]]
    assert eos_id in eos_ids
    return tokenizer


def _check_openvino_tokenizer(model, tokenizer):
    import numpy as np
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  registers the tokenizer ops

    core = ov.Core()
    encode = core.compile_model(model.ir_dir / "openvino_tokenizer.xml", "CPU")
    decode = core.compile_model(model.ir_dir / "openvino_detokenizer.xml", "CPU")
    for text in TEXTS:
        ov_ids = encode([text])["input_ids"][0].tolist()
        assert ov_ids == tokenizer(text)["input_ids"], text
        decoded = decode(np.array([ov_ids], dtype=np.int64))["string_output"][0]
        assert decoded == tokenizer.decode(ov_ids, skip_special_tokens=True), text


@pytest.mark.slow
def test_smollm2_tokenizer(smollm2_int8):
    tokenizer = _check_tokenizer(smollm2_int8, "<|im_end|>", 2, "<|im_end|>", 2, 49152)
    assert tokenizer.bos_token_id == 1
    _check_openvino_tokenizer(smollm2_int8, tokenizer)


@pytest.mark.slow
def test_repair_fixes_the_gguf_derived_smollm2_tokenizer(smollm2_int8, tmp_path):
    """From the raw GGUF tokenizer (BOS=EOS=<|im_start|>, BOS prepended, 5 ids past the vocabulary,
    llama decoder chain) to a tokenizer equal to the pulled one."""
    from transformers import AutoTokenizer

    from models.tokenizer_repair import check_tokenizer, repair_tokenizer

    gguf = smollm2_int8.ir_dir.parent / "gguf" / "smollm2-135m-instruct.gguf"
    raw = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    raw.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 49152, "max_position_embeddings": 8192}))
    assert raw("hi")["input_ids"][0] == raw.bos_token_id == raw.eos_token_id == 1 and len(raw) > 49152
    repair_tokenizer(tmp_path, "smollm2")
    check_tokenizer(tmp_path, "smollm2")
    repair_tokenizer(tmp_path, "smollm2")  # idempotent
    repaired, pulled = AutoTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(smollm2_int8.tokenizer_dir)
    assert repaired.get_vocab() == pulled.get_vocab()
    assert json.loads((tmp_path / "tokenizer.json").read_text())["decoder"]["type"] == "ByteLevel"
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == 2


@pytest.mark.slow
def test_smollm2_genai_pipeline_generates(smollm2_int8):
    import openvino_genai as og

    pipe = og.LLMPipeline(str(smollm2_int8.ir_dir), "CPU")
    config = og.GenerationConfig()
    config.max_new_tokens = 8
    text = str(pipe.generate("def fibonacci(n):", config))
    assert text.strip()


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_qwen_tokenizer(name):
    model = _qwen(name)
    tokenizer = _check_tokenizer(model, "<|im_end|>", 151645, "<|endoftext|>", 151643, 151936)
    fim = "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>"
    assert tokenizer(fim)["input_ids"][0] == 151659 and 151661 in tokenizer(fim)["input_ids"]  # one id each
    _check_openvino_tokenizer(model, tokenizer)


def test_qwen_models_are_compatible():
    from models.compat import check_compatible

    check_compatible(_qwen("qwen2.5-coder-1.5b-instruct").tokenizer_dir, _qwen("qwen2.5-coder-0.5b-instruct").tokenizer_dir)


def test_a_tokenizer_without_a_chat_template_is_reported_not_a_crash(smollm2_int8, tmp_path, caplog):
    """A base model's GGUF (no chat template) outside the catalog converts with a warning; a catalog model
    whose repair preset expects a template is refused with the folder named."""
    import shutil

    from models.errors import ConversionError
    from models.tokenizer_repair import check_tokenizer

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(smollm2_int8.tokenizer_dir / name, tmp_path / name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING", logger="models.tokenizer_repair"):
        check_tokenizer(tmp_path, None, strict=False)
    assert "no chat template" in caplog.text
    with pytest.raises(ConversionError, match=f"{tmp_path}.*no chat template"):
        check_tokenizer(tmp_path, "smollm2")
