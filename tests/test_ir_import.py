"""A served draft's IR read back into a trainable HF folder (training/ir_import.py): the shipped int8 draft and a
float IR both come back with the logits the IR computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.draft_folder import load_draft
from training.ir_import import IRImportError, import_ir, logit_gap, read_weights

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "drafts" / "fastdraft-qwen2.5-coder-1.5b"


def test_the_shipped_int8_draft_imports_with_the_irs_logits(tmp_path):
    out = import_ir(SHIPPED, tmp_path / "hf")
    model, vocab = load_draft(out)  # what training.align loads
    assert vocab is not None and vocab.input_reduced
    assert logit_gap(model, SHIPPED / "openvino_model.xml") < 1e-3
    assert (out / "tokenizer.json").exists() and (out / "draft_vocab_map.json").exists()


def test_a_float_ir_imports_too(tiny_models, tmp_path):
    ir = Path(tiny_models["near"])
    out = import_ir(ir, tmp_path / "hf")
    model, _ = load_draft(out)
    assert logit_gap(model, ir / "openvino_model.xml") < 1e-3


def test_a_tensor_matched_to_the_wrong_parameter_is_refused(tmp_path, monkeypatch):
    import training.ir_import as ir_import

    def swapped(xml):
        weights = read_weights(xml)
        norm = "model.layers.0.input_layernorm.weight"
        weights[norm] = weights[norm][::-1].copy()
        return weights

    monkeypatch.setattr(ir_import, "read_weights", swapped)
    with pytest.raises(IRImportError, match="logits differ from the IR's"):
        import_ir(SHIPPED, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_a_folder_that_is_not_an_ir_is_refused(tmp_path):
    with pytest.raises(IRImportError, match="needs openvino_model.xml and config.json"):
        import_ir(tmp_path, tmp_path / "hf")
