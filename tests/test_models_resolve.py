"""resolve_model: catalog names, Hugging Face folders (tiny random Llama with the smollm2 tokenizer),
IR folders used as is, GGUF files, bad specs; and the fp32 IR is exact to its Hugging Face model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from models import resolve as resolve_module
from models.errors import CorruptGGUFError, InvalidModelSpecError, ModelNotPreparedError, UnknownModelError
from models.resolve import hf_dir_for, resolve_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory, smollm2_int8) -> Path:
    """A tiny random Llama with smollm2's vocabulary and (repaired) tokenizer files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama") / "tiny-llama"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).eval().save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(smollm2_int8.ir_dir / name, out / name)
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FASTDRAFT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def ov_logits(ir_dir: Path, ids: list[int]) -> np.ndarray:  # [len(ids), vocab]
    import openvino as ov

    model = ov.Core().compile_model(ir_dir / "openvino_model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = model.create_infer_request()
    request.reset_state()
    n = len(ids)
    outputs = request.infer({"input_ids": np.array([ids], dtype=np.int64),
                             "attention_mask": np.ones((1, n), dtype=np.int64),
                             "position_ids": np.arange(n, dtype=np.int64)[None],
                             "beam_idx": np.zeros(1, dtype=np.int32)})
    return outputs["logits"][0]


def hf_logits(hf_dir: Path, ids: list[int]) -> np.ndarray:  # [len(ids), vocab]
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def test_hf_folder_is_exported_once_and_cached(tiny_hf, home, monkeypatch):
    with pytest.raises(ModelNotPreparedError, match="fastdraft models pull"):
        resolve_model(str(tiny_hf), weight_format="fp32", pull=False)
    model = resolve_model(str(tiny_hf), weight_format="fp32")
    assert model.name.startswith("hf-tiny-llama-")
    assert model.ir_dir == home / "models" / model.name / "ir-fp32"
    for name in ("openvino_model.xml", "openvino_tokenizer.xml", "openvino_detokenizer.xml", "config.json", "tokenizer.json"):
        assert (model.ir_dir / name).is_file(), name
    assert model.weight_format == "fp32" and len(model.revision) == 12 and model.tokenizer_dir == model.ir_dir
    assert not list(model.ir_dir.parent.glob("*.partial"))

    def no_export(*args, **kwargs):
        raise AssertionError("a finished step was redone")

    monkeypatch.setattr(resolve_module, "export_ir", no_export)
    assert resolve_model(str(tiny_hf), weight_format="fp32", pull=False) == model

    ids = [1, 520, 33, 4000, 17, 9]
    np.testing.assert_allclose(ov_logits(model.ir_dir, ids), hf_logits(tiny_hf, ids), atol=1e-4, rtol=0)

    # an IR folder is used as is, and named after its cache folder
    assert resolve_model(str(model.ir_dir), weight_format="int8", pull=False) == model


def test_changed_hf_folder_gets_a_new_cache_key(tiny_hf, home, tmp_path):
    copy = tmp_path / "tiny-llama"
    shutil.copytree(tiny_hf, copy)
    key = resolve_module._hf_dir_key(copy)
    stat = (copy / "config.json").stat()
    os.utime(copy / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert resolve_module._hf_dir_key(copy) != key


def test_bad_specs(home, tmp_path):
    with pytest.raises(UnknownModelError, match="smollm2-135m-instruct"):
        resolve_model("no-such-model")
    with pytest.raises(InvalidModelSpecError, match="no such file or folder"):
        resolve_model(str(tmp_path / "missing-folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModelSpecError, match="neither"):
        resolve_model(str(tmp_path / "empty"))
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(CorruptGGUFError, match="broken.gguf"):
        resolve_model(str(tmp_path / "broken.gguf"))
    with pytest.raises(ValueError, match="weight_format must be one of"):
        resolve_model("smollm2-135m-instruct", weight_format="int3")


@pytest.mark.slow
def test_catalog_model_formats(smollm2_fp32, smollm2_int8):
    assert smollm2_fp32.name == smollm2_int8.name == "smollm2-135m-instruct"
    assert (smollm2_fp32.weight_format, smollm2_int8.weight_format) == ("fp32", "int8")
    assert smollm2_fp32.ir_dir.parent == smollm2_int8.ir_dir.parent
    assert smollm2_fp32.revision != smollm2_int8.revision
    assert resolve_model("smollm2-135m-instruct", weight_format="int8", pull=False) == smollm2_int8
    size = lambda m: (m.ir_dir / "openvino_model.bin").stat().st_size  # noqa: E731
    assert size(smollm2_int8) < 0.4 * size(smollm2_fp32)


@pytest.mark.slow
def test_smollm2_fp32_ir_is_exact_to_hf(smollm2_fp32):
    hf_dir = hf_dir_for("smollm2-135m-instruct")
    ids = [504, 3458, 314, 253, 1345, 28, 540, 30]
    np.testing.assert_allclose(ov_logits(smollm2_fp32.ir_dir, ids), hf_logits(hf_dir, ids), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_catalog_gguf_file_resolves_to_catalog_name(smollm2_int8):
    gguf = smollm2_int8.ir_dir.parent / "gguf" / "smollm2-135m-instruct.gguf"
    assert resolve_model(str(gguf), weight_format="int8", pull=False) == smollm2_int8
