"""Export a Hugging Face causal-LM folder to a stateful OpenVINO IR folder with optimum-intel.

Boundary: takes a local folder, writes a local folder; never touches the network or the catalog.

The IR folder holds openvino_model.{xml,bin} (inputs input_ids, attention_mask, position_ids,
beam_idx; KV cache as internal state), openvino_tokenizer.xml / openvino_detokenizer.xml (which
openvino-genai's LLMPipeline needs), and the HF config, generation config and tokenizer files.
Weight formats: int8 (default; asymmetric per-channel), int4 (NNCF defaults), fp16, fp32 (exact to
the HF folder; optimum's automatic int8 for models over 1B parameters is switched off).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from models.errors import ExportError

log = logging.getLogger(__name__)

WEIGHT_FORMATS = ("int8", "int4", "fp16", "fp32")
# files an exported folder must contain (tokenizer IRs only when convert_tokenizer=True)
IR_FILES = ("openvino_model.xml", "openvino_model.bin", "config.json")
TOKENIZER_IR_FILES = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")


def check_weight_format(weight_format: str) -> str:
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format must be one of {', '.join(WEIGHT_FORMATS)}, got {weight_format!r}")
    return weight_format


def _ov_config(weight_format: str):
    from optimum.intel import OVConfig

    # main_export ignores a quantization_config (optimum-cli applies it in a second pass), and with
    # no config it silently compresses models over 1B parameters to int8; so export fp32 (or fp16)
    # explicitly and compress int8/int4 weights ourselves with NNCF.
    return OVConfig(dtype="fp16" if weight_format == "fp16" else "fp32")


def _compress_weights(ir_dir: Path, weight_format: str) -> None:
    """Weight-only compression of openvino_model.xml in place: int8 asymmetric per channel, or int4
    asymmetric in groups of 128, smaller where 128 does not divide the channels (NNCF keeps embeddings
    and the output layer in int8)."""
    import nncf
    import openvino as ov

    xml = ir_dir / "openvino_model.xml"
    model = ov.Core().read_model(xml)
    if weight_format == "int8":
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    else:
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

        # channel counts that 128 does not divide (smollm2: 576) get the largest power-of-two group that does
        advanced = AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=128, ratio=1.0,
                                      advanced_parameters=advanced)
    compressed = ir_dir / "openvino_model.compressed.xml"
    ov.save_model(model, compressed, compress_to_fp16=False)
    del model
    compressed.rename(xml)
    compressed.with_suffix(".bin").rename(xml.with_suffix(".bin"))


def export_ir(hf_dir: str | Path, out_dir: str | Path, weight_format: str = "int8", convert_tokenizer: bool = True) -> Path:
    """Export `hf_dir` to `out_dir` (written to a temporary sibling, then renamed, so a crash leaves nothing half-done)."""
    check_weight_format(weight_format)
    from optimum.exporters.openvino import main_export

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not (hf_dir / "config.json").is_file():
        raise ExportError(f"cannot export {hf_dir}: no config.json (not a Hugging Face model folder)")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.monotonic()
    log.info("exporting %s to OpenVINO IR (%s weights) at %s", hf_dir, weight_format, out_dir)
    try:
        main_export(
            str(hf_dir), str(partial), task="text-generation-with-past", ov_config=_ov_config(weight_format),
            convert_tokenizer=convert_tokenizer, library_name="transformers",
        )
        if weight_format in ("int8", "int4"):
            log.info("compressing weights to %s with NNCF", weight_format)
            _compress_weights(partial, weight_format)
    except Exception as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise ExportError(f"optimum-intel could not export {hf_dir} ({weight_format}): {type(error).__name__}: {error}") from error
    has_tokenizer = any((hf_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    if convert_tokenizer and not has_tokenizer:
        log.warning("%s has no tokenizer files: the IR gets no openvino_tokenizer.xml (openvino-genai cannot load it)", hf_dir)
    expected = IR_FILES + (TOKENIZER_IR_FILES if convert_tokenizer and has_tokenizer else ())
    missing = [name for name in expected if not (partial / name).is_file()]
    if missing:
        shutil.rmtree(partial, ignore_errors=True)
        raise ExportError(f"export of {hf_dir} ({weight_format}) did not write {', '.join(missing)}")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    log.info("exported %s (%s) in %.0f s", hf_dir.name, weight_format, time.monotonic() - start)
    return out_dir
