"""Export a draft HF folder to an OpenVINO IR folder the engine loads (int8 by default).

A full-vocabulary draft, or one with a reduced tied vocabulary (vocab_map input "draft"), is a plain
transformers folder: models.export.export_ir does it (and the map is copied). A draft with only a
reduced output layer does not load with `from_pretrained` (see training/vocab_map.py), so it is loaded
with training.draft_folder.load_draft and exported from the model object (optimum-intel's
export_from_model), then weight-compressed with nncf; the tokenizer is converted the same way and
draft_vocab_map.json/.npy are copied next to the IR. Written to a `.partial` sibling and renamed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from training import vocab_map as vm

log = logging.getLogger("training.export")


def export_draft(hf_dir: str | Path, out_dir: str | Path, weight_format: str = "int8") -> Path:
    from models.export import export_ir

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    vocab = vm.load(hf_dir)
    if vocab is None:
        return export_ir(hf_dir, out_dir, weight_format=weight_format)
    if vocab.input_reduced:  # a plain causal LM (tied N + 1 rows): the standard export, plus the map
        export_ir(hf_dir, out_dir, weight_format=weight_format)
        vocab.save(out_dir)
        return out_dir
    return _export_reduced(hf_dir, out_dir, weight_format)


def _export_reduced(hf_dir: Path, out_dir: Path, weight_format: str) -> Path:
    import openvino as ov
    from optimum.exporters.openvino.__main__ import maybe_convert_tokenizers
    from optimum.exporters.openvino.convert import export_from_model
    from transformers import AutoTokenizer

    from training.draft_folder import load_draft

    if weight_format not in ("int8", "fp16", "fp32"):
        raise ValueError(f"reduced-vocabulary drafts export as int8, fp16 or fp32, got {weight_format!r}")
    model, _ = load_draft(hf_dir)
    model.eval()
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    log.info("exporting reduced-vocabulary draft %s (%s weights)", hf_dir, weight_format)
    export_from_model(model, partial, task="text-generation-with-past", preprocessors=[tokenizer])
    maybe_convert_tokenizers("transformers", partial, model, [tokenizer], task="text-generation-with-past")
    xml = partial / "openvino_model.xml"
    core = ov.Core()
    ir = core.read_model(xml)
    if weight_format == "int8":
        import nncf

        ir = nncf.compress_weights(ir, mode=nncf.CompressWeightsMode.INT8_ASYM)
    compressed = partial / "openvino_model_c.xml"
    ov.save_model(ir, compressed, compress_to_fp16=weight_format == "fp16")
    del ir
    xml.unlink()
    (partial / "openvino_model.bin").unlink()
    compressed.rename(xml)
    compressed.with_suffix(".bin").rename(partial / "openvino_model.bin")
    for name in (vm.MAP_JSON, vm.MAP_NPY, "generation_config.json"):
        if (hf_dir / name).exists():
            shutil.copy2(hf_dir / name, partial / name)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir
